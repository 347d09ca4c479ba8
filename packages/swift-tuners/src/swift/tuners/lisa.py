"""LISA (layer-wise importance sampling): every few steps a few random decoder layers train, the rest stay frozen.

Embeddings and the output head always train, as in the paper. Implemented as a transformers TrainerCallback.
"""

from __future__ import annotations

import random
from typing import Any

from swift.tuners.freeze import decoder_layers


def make_lisa_callback(model: Any, activated_layers: int, step_interval: int, seed: int = 42):
    from transformers import TrainerCallback

    layers, _ = decoder_layers(model)
    rng = random.Random(seed)

    class LisaCallback(TrainerCallback):
        def __init__(self) -> None:
            self.active: list[int] = []

        def switch(self) -> None:
            self.active = sorted(rng.sample(range(len(layers)), min(activated_layers, len(layers))))
            for index, layer in enumerate(layers):
                layer.requires_grad_(index in self.active)

        def on_train_begin(self, args, state, control, **kwargs):
            self.switch()

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step and state.global_step % step_interval == 0:
                self.switch()

    callback = LisaCallback()
    callback.switch()
    return callback

"""LISA (layer-wise importance sampling, Pan et al. 2024): every --lisa_step_interval steps a new random set of
--lisa_activated_layers decoder layers trains and the others are frozen; embeddings, norms and the head always train.

The optimizer is built while every parameter is trainable (`builtin.apply_lisa`), so it holds every layer; a frozen
layer gets no gradient, and AdamW leaves a parameter without a gradient untouched (no update, no weight decay).
"""

from __future__ import annotations

import random
from typing import Any

from transformers import TrainerCallback

from swift.tuners.freeze import decoder_layers


class LisaCallback(TrainerCallback):
    def __init__(self, model: Any, activated_layers: int, step_interval: int, seed: int = 42) -> None:
        self.layers, _ = decoder_layers(model)
        self.activated_layers, self.step_interval = activated_layers, step_interval
        self.rng = random.Random(seed)
        self.active: list[int] = []
        self.history: list[list[int]] = []  # every draw, in order

    def switch(self) -> None:
        self.active = sorted(self.rng.sample(range(len(self.layers)), min(self.activated_layers, len(self.layers))))
        self.history.append(self.active)
        for index, layer in enumerate(self.layers):
            layer.requires_grad_(index in self.active)

    def on_train_begin(self, args, state, control, **kwargs):
        self.switch()  # after the optimizer exists (it holds every layer)

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step and state.global_step % self.step_interval == 0:
            self.switch()

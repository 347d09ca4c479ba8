"""GRPO rollouts, plugged into trl's `GRPOTrainer` as its `rollout_func(prompts, trainer)`: our template renders the
(already repeated) prompts into ids, an engine completes each once, trl scores and trains.

- `PtRollout` (default): swift-infer's PyTorch engine on the policy being trained, in process (no weight copy: the
  same module, switched to inference for the rollout).
- `VllmColocateRollout` (`--use_vllm true --vllm_mode colocate`): vLLM in this process. After each optimizer step
  the policy's weights go into vLLM's model before the next rollout: merged LoRA weights (only the layers LoRA
  touches), the whole model for full training, or the adapter itself with `--vllm_enable_lora true`.
- `VllmServerRollout` (`--vllm_mode server`): a `swift rollout` server started separately (the way clusters run
  it), over HTTP: this process needs neither vLLM nor a GPU for rollouts. Weights go there the same way.
Without swift-infer installed, GRPO falls back to trl's own `model.generate` path.

Prompts with images, videos or audio (`rollout(rows, trainer)`, rows with their media columns): each is encoded by
the template with its media, and `PtRollout` prefills it with the processor outputs (`GenerationRequest.media`);
the result carries them as `media` (one `{"input_ids", **processor outputs}` per prompt) for the trainer's log-prob
forwards. A sampled media placeholder token (`<|image_pad|>`...) ends the completion and is dropped: it would have no
features in those forwards. The vLLM rollouts send token ids only and refuse media.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from swift.core import SwiftError

logger = logging.getLogger(__name__)


def pt_engine_available() -> bool:
    try:
        from swift.infer.engine import PtGenerator  # noqa: F401
    except ImportError:
        return False
    return True


class Rollout:
    """What every rollout shares: prompt ids from our template, sampling settings, a seed per call and prompt.
    `media_tokens`: the model's media placeholder ids, which end a completion (and are cut from it)."""

    takes_media = False  # whether `complete` can prefill prompts with their media

    def __init__(self, template: Any, *, max_tokens: int, temperature: float, top_p: float = 1.0, top_k: int = 0,
                 repetition_penalty: float = 1.0, seed: int = 42, media_tokens: tuple[int, ...] = (),
                 stop: tuple[str, ...] = (), scheduler: Any = None) -> None:
        self.template, self.seed = template, seed
        self.scheduler = scheduler  # --multi_turn_scheduler (multi_turn.MultiTurnScheduler), or None
        self.params = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                           repetition_penalty=repetition_penalty, stop=tuple(stop))
        self.media_tokens = frozenset(media_tokens)
        self.stops = tuple(sorted(set(template.stop_token_ids) | self.media_tokens))
        self._counter = itertools.count()

    def __call__(self, prompts: list, trainer: Any) -> dict[str, Any]:
        """trl's `rollout_func`: prompts as message lists."""
        return self.rollout([{"messages": prompt} for prompt in prompts], trainer)

    def rollout(self, rows: list[dict], trainer: Any, data: list[dict] | None = None) -> dict[str, Any]:
        """Complete each `{"messages", "tools"?, "images"?...}` row once: trl's rollout output, plus `media` (each
        prompt's ids and processor outputs) where a prompt has media. With a multi-turn scheduler, roll each out
        turn by turn instead (`data`: the rows' other columns, which the scheduler sees)."""
        if self.scheduler is not None:
            return self.multi_turn(rows, trainer, data or [{} for _ in rows])
        encoded: dict[str, dict] = {}  # trl repeats each prompt num_generations times: encode it once
        prompts = [encoded.setdefault(json.dumps(row, sort_keys=True, default=str), self._encode(row)) for row in rows]
        media = [prompt.get("media") for prompt in prompts]
        if any(media) and not self.takes_media:
            from swift.core import ConfigError

            raise ConfigError(f"--use_vllm true: a GRPO prompt has images, videos or audio, which the vLLM rollout "
                              f"({type(self).__name__}) does not send; drop --use_vllm to roll out on the PyTorch "
                              "engine")
        prompt_ids = [prompt["input_ids"] for prompt in prompts]
        call = next(self._counter)
        completions = self.complete(prompt_ids, trainer, seed=self.seed + 7919 * call, call=call, media=media)
        if self.media_tokens:
            completions = [self._cut_media_tokens(ids) for ids in completions]
        out: dict[str, Any] = {"prompt_ids": prompt_ids, "completion_ids": completions, "logprobs": None}
        if any(media):
            out["media"] = [{"input_ids": prompt["input_ids"], **prompt["inputs"]} for prompt in prompts]
        return out

    def multi_turn(self, rows: list[dict], trainer: Any, data: list[dict]) -> dict[str, Any]:
        """trl's rollout output of whole trajectories (`multi_turn.py`): completion = every turn after the first
        prompt, `env_mask` 1 on the model's tokens, `messages` the conversations (for the reward functions)."""
        from swift.core import ConfigError
        from swift.train.rlhf import multi_turn

        if any(key in row for row in rows for key in ("images", "videos", "audios")):
            raise ConfigError("--multi_turn_scheduler: prompts with images, videos or audio are not rolled out over "
                              "several turns yet; use single-turn GRPO for them")
        call, turn = next(self._counter), itertools.count()
        tokenizer = self.template.tokenizer

        def complete(prompt_ids: list[list[int]]) -> list[list[int]]:
            t = next(turn)
            return self.complete(prompt_ids, trainer, seed=self.seed + 7919 * call + 104729 * t, call=call * 1000 + t)

        trajectories = multi_turn.run_trajectories(
            [{**row, **extra} for row, extra in zip(rows, data, strict=True)], self.scheduler, self.template.encode,
            complete, lambda ids: tokenizer.decode(ids, skip_special_tokens=True), self.params["max_tokens"],
            frozenset(self.stops))
        out: dict[str, Any] = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "env_mask": [],
                               "messages": []}
        for row, trajectory in zip(rows, trajectories, strict=True):
            prompt = list(self.template.encode(row)["input_ids"])
            whole = self.template.encode({**row, "messages": trajectory["messages"]})
            if list(whole["input_ids"][:len(prompt)]) != prompt:  # the first prompt must prefix the trajectory
                labels = list(whole["labels"])
                prompt = list(whole["input_ids"][:next(i for i, label in enumerate(labels) if label != -100)])
            ids, mask = multi_turn.trajectory_ids(whole, len(prompt))
            out["prompt_ids"].append(prompt)
            out["completion_ids"].append(ids)
            out["env_mask"].append(mask)
            out["messages"].append(trajectory["messages"])
        return out

    def _encode(self, row: dict) -> dict[str, Any]:
        """Prompt ids, the processor outputs besides them (`inputs`) and `media`: those for the engine, or None for a
        text prompt (per-token type ids alone are no media), as swift-infer's chat layer does."""
        encoded = self.template.encode(row)
        inputs = {k: v for k, v in encoded.items() if k not in ("input_ids", "labels") and v is not None}
        has_media = any(not key.endswith("token_type_ids") for key in inputs)
        return {"input_ids": list(encoded["input_ids"]), "inputs": inputs, "media": inputs if has_media else None}

    def _cut_media_tokens(self, ids: list[int]) -> list[int]:
        cut = next((i for i, token in enumerate(ids) if token in self.media_tokens), None)
        return ids if cut is None else ids[:cut]

    def complete(self, prompt_ids: list[list[int]], trainer: Any, *, seed: int, call: int,
                 media: list[dict | None] | None = None) -> list[list[int]]:
        raise NotImplementedError

    def requests(self, prompt_ids: list[list[int]], *, seed: int, call: int, adapter: str | None = None,
                 media: list[dict | None] | None = None) -> list:
        from swift.infer.engine import GenerationRequest, SamplingParams

        media = media or [None] * len(prompt_ids)
        return [GenerationRequest(f"rollout-{call}-{i}", ids,
                                  SamplingParams(**self.params, stop_token_ids=self.stops, seed=seed + i),
                                  adapter=adapter, media=prompt_media)
                for i, (ids, prompt_media) in enumerate(zip(prompt_ids, media, strict=True))]


class PtRollout(Rollout):
    """Rollouts on the policy itself through swift-infer's `PtGenerator` (continuous batching; a prompt with media
    prefills alone)."""

    takes_media = True

    def __init__(self, template: Any, *, max_batch_size: int = 64, **kwargs: Any) -> None:
        super().__init__(template, **kwargs)
        self.max_batch_size = max_batch_size

    def complete(self, prompt_ids: list[list[int]], trainer: Any, *, seed: int, call: int,
                 media: list[dict | None] | None = None) -> list[list[int]]:
        from trl.models.utils import unwrap_model_for_generation

        from swift.infer.engine import PtGenerator

        requests = self.requests(prompt_ids, seed=seed, call=call, media=media)
        with unwrap_model_for_generation(
                trainer.model_wrapped, trainer.accelerator,
                gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs) as model:
            was_training = model.training
            model.eval()
            use_cache = model.config.use_cache
            model.config.use_cache = True
            # a PeftModel would be served as a multi-adapter model, where a request naming no adapter decodes with
            # the adapters off: the base model, whose layers hold the active adapter, is the policy
            policy = model.get_base_model() if hasattr(model, "get_base_model") else model
            generator = PtGenerator(policy, self.template.tokenizer, max_batch_size=self.max_batch_size)
            try:
                return asyncio.run(collect_all(generator, requests))
            finally:
                generator.close()
                model.config.use_cache = use_cache
                model.train(was_training)


async def collect_all(generator: Any, requests: list) -> list[list[int]]:
    async def collect(request: Any) -> list[int]:
        ids: list[int] = []
        async for output in generator.generate(request):
            ids.extend(output.token_ids)
        return ids

    return list(await asyncio.gather(*(collect(r) for r in requests)))


# ----- the policy's weights, as the rollout engine wants them -----

def policy_weights(model: Any, dtype: Any = None) -> dict[str, Any]:
    """The policy's weights under the HF checkpoint's names, for a rollout engine's `load_weights`.

    With a PEFT LoRA: the merged weights of every module beside one LoRA wraps (the whole `self_attn` for a
    `q_proj` target), since serving engines fuse siblings (q/k/v, gate/up) into one tensor and reload it whole,
    plus modules_to_save; nothing else changes. Else every parameter.
    """
    import torch

    def cast(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        return (t.to(dtype) if dtype is not None else t).contiguous().cpu()

    if not hasattr(model, "merge_adapter"):
        return {name: cast(p) for name, p in model.named_parameters()}
    named = dict(model.named_parameters())
    parents = {_hf_name(name.split(".base_layer.")[0]).rpartition(".")[0] + "." for name in named
               if ".base_layer." in name}
    saved = {_hf_name(name.replace(".modules_to_save.default.", ".")) for name in named
             if ".modules_to_save.default." in name}
    out: dict[str, Any] = {}
    model.merge_adapter()
    try:
        for name, p in model.named_parameters():
            if "lora_" in name or ".original_module." in name:
                continue
            hf = _hf_name(name.replace(".base_layer.", ".").replace(".modules_to_save.default.", "."))
            if hf in saved or any(hf.startswith(parent) for parent in parents):
                out[hf] = cast(p)
    finally:
        model.unmerge_adapter()
    return out


def _hf_name(name: str) -> str:
    return name.removeprefix("base_model.model.")


def save_adapter(model: Any, directory: Path) -> Path:
    """The policy's LoRA adapter as a PEFT checkpoint directory (what vLLM's LoRA loads)."""
    model.save_pretrained(directory)
    return directory


def unwrapped(trainer: Any) -> Any:
    return trainer.accelerator.unwrap_model(trainer.model_wrapped)


def torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "half": torch.float16,
            "float32": torch.float32, "float": torch.float32}.get(str(name).removeprefix("torch."))


class SyncedRollout(Rollout):
    """A rollout engine holding its own copy of the policy: before a rollout, if an optimizer step ran since the
    last one, the policy's weights (or its adapter) go to the engine."""

    def __init__(self, template: Any, *, use_lora: bool, **kwargs: Any) -> None:
        super().__init__(template, **kwargs)
        self.use_lora = use_lora
        self.adapter: str | None = None
        self._synced_step: int | None = None

    def complete(self, prompt_ids: list[list[int]], trainer: Any, *, seed: int, call: int,
                 media: list[dict | None] | None = None) -> list[list[int]]:
        if self._synced_step != trainer.state.global_step:
            start = time.perf_counter()
            model = unwrapped(trainer)
            if self.use_lora:
                with tempfile.TemporaryDirectory(prefix="swift-adapter-") as tmp:
                    self.send_adapter(save_adapter(model, Path(tmp)))
                self.adapter = "policy"
            else:
                self.send_weights(model)
            self._synced_step = trainer.state.global_step
            logger.debug("weights synced to the rollout engine in %.2f s", time.perf_counter() - start)
        return self.generate(prompt_ids, seed=seed, call=call)

    def send_weights(self, model: Any) -> None:
        raise NotImplementedError

    def send_adapter(self, directory: Path) -> None:
        raise NotImplementedError

    def generate(self, prompt_ids: list[list[int]], *, seed: int, call: int) -> list[list[int]]:
        raise NotImplementedError


class VllmColocateRollout(SyncedRollout):
    """vLLM's engine in this process (`VllmEngine`, in-process backend), its weights kept equal to the policy's."""

    def __init__(self, template: Any, model_dir: str, *, engine_kwargs: dict[str, Any], use_lora: bool,
                 lora_rank: int | None = None, sleep_level: int = 0, offload_model: bool = False,
                 offload_optimizer: bool = False, **kwargs: Any) -> None:
        import torch

        from swift.infer.engine import VllmEngine

        super().__init__(template, use_lora=use_lora, **kwargs)
        engine_kwargs = dict(engine_kwargs)
        if use_lora:
            engine_kwargs |= {"enable_lora": True, "max_loras": 1, "max_lora_rank": lora_rank or 16}
        on_gpu = torch.cuda.is_available()
        given = [f for f, on in (("--sleep_level", sleep_level), ("--offload_model", offload_model),
                                 ("--offload_optimizer", offload_optimizer)) if on]
        if given and not on_gpu:
            logger.warning("%s: these free GPU memory while the policy trains or vLLM rolls out; on this CPU-only "
                           "machine vLLM has no sleep mode and the policy already lives in RAM, so they do nothing "
                           "here", ", ".join(given))
        self.sleep_level = sleep_level if on_gpu else 0
        self.offload = (offload_model and on_gpu, offload_optimizer and on_gpu)
        if self.sleep_level:
            engine_kwargs["enable_sleep_mode"] = True
        self.engine = VllmEngine(model_dir, template=template, engine_kwargs=engine_kwargs, use_async_engine=False)
        self.dtype = torch_dtype(self.engine.backend.engine.model_config.dtype)
        self._asleep = False

    def complete(self, prompt_ids: list[list[int]], trainer: Any, *, seed: int, call: int,
                 media: list[dict | None] | None = None) -> list[list[int]]:
        """Wake vLLM (sleep level 2 discarded its weights: sync them again), roll out with the policy's weights and
        optimizer state moved to CPU RAM (--offload_model / --offload_optimizer), then put vLLM back to sleep."""
        if self._asleep:
            self.engine.wake_up()
            self._asleep = False
            if self.sleep_level == 2:
                self._synced_step = None
        model = unwrapped(trainer) if self.offload[0] else None
        optimizer = trainer.optimizer if self.offload[1] else None
        with offloaded(model, optimizer):
            out = super().complete(prompt_ids, trainer, seed=seed, call=call, media=media)
            if self.sleep_level:
                self.engine.sleep(self.sleep_level)
                self._asleep = True
        return out

    def send_weights(self, model: Any) -> None:
        self.engine.load_weights(policy_weights(model, self.dtype).items())

    def send_adapter(self, directory: Path) -> None:
        self.engine.set_adapter("policy", directory)  # vLLM reads the files now; the directory may go

    def generate(self, prompt_ids: list[list[int]], *, seed: int, call: int) -> list[list[int]]:
        requests = self.requests(prompt_ids, seed=seed, call=call, adapter=self.adapter)
        return asyncio.run(collect_all(self.engine.generator, requests))

    def close(self) -> None:
        self.engine.close()


@contextlib.contextmanager
def offloaded(model: Any = None, optimizer: Any = None):
    """`model`'s parameters and buffers and `optimizer`'s state tensors in CPU RAM for the block, back on their
    devices after (the same tensor objects: the optimizer keeps its references)."""
    import torch

    moved: list[tuple[Any, torch.device]] = []
    if model is not None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        for tensor in itertools.chain(model.parameters(), model.buffers(), grads):
            if tensor.device.type != "cpu":
                moved.append((tensor, tensor.device))
    if optimizer is not None:
        for state in getattr(optimizer, "optimizer", optimizer).state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.device.type != "cpu":
                    moved.append((value, value.device))
    for tensor, _ in moved:
        tensor.data = tensor.data.to("cpu", non_blocking=True)
    if moved and torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        yield
    finally:
        for tensor, device in moved:
            tensor.data = tensor.data.to(device, non_blocking=True)


class RolloutServerError(SwiftError):
    """The `swift rollout` server is gone or refused a request."""


class VllmServerRollout(SyncedRollout):
    """A `swift rollout` server over HTTP (routes: swift/infer/server/routes/rollout.py)."""

    def __init__(self, template: Any, base_url: str, *, timeout: float, use_lora: bool, api_key: str | None = None,
                 **kwargs: Any) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.info = self._wait_for_server(timeout)
        if use_lora and not self.info.get("lora"):
            raise RolloutServerError(f"--vllm_enable_lora true: the swift rollout server at {self.base_url} was "
                                     "started without it (restart it with --vllm_enable_lora true, or drop the flag "
                                     "here to send merged weights)")
        super().__init__(template, use_lora=use_lora, **kwargs)
        self.dtype = torch_dtype(self.info.get("dtype", ""))
        logger.info("GRPO rollouts on the swift rollout server at %s (%s)", self.base_url, self.info.get("model"))

    def _wait_for_server(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._call("GET", "/rollout/info", timeout=10)
            except RolloutServerError:
                if time.monotonic() > deadline:
                    raise RolloutServerError(f"no swift rollout server answered at {self.base_url} within "
                                             f"{timeout:g} s (--vllm_server_timeout); start one with `swift rollout "
                                             "--model ...` and pass its --vllm_server_host/--vllm_server_port"
                                             ) from None
                time.sleep(1)

    def _call(self, method: str, path: str, body: bytes | None = None, *, headers: dict[str, str] | None = None,
              timeout: float = 3600) -> dict:
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=dict(headers or {}))
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:500]
            raise RolloutServerError(f"the swift rollout server at {self.base_url} refused {path}: HTTP {e.code} "
                                     f"{detail}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RolloutServerError(f"the swift rollout server at {self.base_url} is not answering ({path}: "
                                     f"{reason}); was it stopped?") from None

    def send_weights(self, model: Any) -> None:
        from safetensors.torch import save

        self._call("POST", "/rollout/update_weights", save(policy_weights(model, self.dtype)),
                   headers={"Content-Type": "application/octet-stream"})

    def send_adapter(self, directory: Path) -> None:
        config = (directory / "adapter_config.json").read_text(encoding="utf-8")
        self._call("POST", "/rollout/update_adapter", (directory / "adapter_model.safetensors").read_bytes(),
                   headers={"Content-Type": "application/octet-stream",
                            "X-Adapter-Config": json.dumps(json.loads(config))})

    def generate(self, prompt_ids: list[list[int]], *, seed: int, call: int) -> list[list[int]]:
        body = {"prompt_ids": prompt_ids, **self.params, "stop": list(self.params["stop"]),
                "stop_token_ids": list(self.stops), "seed": seed}
        out = self._call("POST", "/rollout/generate", json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
        return out["completion_ids"]


def server_url(host: str | None, port: int, base_url: str | None) -> str:
    if base_url:
        return base_url if "://" in base_url else f"http://{base_url}"
    return f"http://{host or '127.0.0.1'}:{port}"

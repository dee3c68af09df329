"""Query embeddings through ONNX Runtime on the CPU.

A search embeds one short query, where PyTorch spends most of its time starting small kernels; with the transformer
exported to ONNX a query takes about a third less (docs/BENCHMARKS.md). Documents keep going through PyTorch, where
batches are large and bf16 wins.

The model's transformer is exported once from its float32 weights (``torch.onnx.export``) into the model cache,
named by the weights' fingerprint; the modules after it (pooling, normalisation) run as they are, on its output.
Only models whose later modules have no weights, and whose pooling keeps the prompt tokens, take this path; every
load checks the exported model against PyTorch on probe texts, and on any failure the embedder stays on PyTorch.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kb_service.embeddings.base import normalise_rows

log = logging.getLogger(__name__)

PROBES = ("How do vaccines train the immune system?", "大熊猫主要吃什么？", "x")
MIN_COSINE = 0.999  # probe vectors against the float32 PyTorch model (measured: 0.99999+)


class UnsupportedModel(Exception):
    """The model cannot take the ONNX path (its reason is the message)."""


class OnnxQueryEncoder:
    """Encodes texts like ``model.encode(texts, normalize_embeddings=True)``, with the first module in ONNX Runtime.

    ``model`` must still hold its float32 weights when this is built (the export and the check read them)."""

    def __init__(self, model: Any, fingerprint: str, *, cache: Path, threads: int) -> None:
        import onnxruntime as ort
        import torch

        first, self._rest = model[0], list(model)[1:]
        backbone = _backbone(first)
        if any(p.numel() for module in self._rest for p in module.parameters()):
            raise UnsupportedModel("modules after the transformer have weights")
        if any(getattr(module, "include_prompt", True) is False for module in self._rest):
            raise UnsupportedModel("its pooling leaves the prompt tokens out")
        self._preprocess = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers 6 / 3-5
        probe = self._tensors(self._preprocess(list(PROBES)))
        self.path = cache / f"{fingerprint}-{'-'.join(probe)}.onnx"
        if not self.path.exists():
            _export(backbone, probe, self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning threads would take the cores from PyTorch's document batches between queries.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        with torch.inference_mode():
            expected = model.encode(
                list(PROBES), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        # Together (padded) and one by one (unpadded): the export traced one batch shape.
        got = np.vstack([self.encode(list(PROBES)), *(self.encode([probe]) for probe in PROBES)])
        cosine = float(np.min(np.sum(got * np.vstack([expected, expected]), axis=1)))
        if cosine < MIN_COSINE:
            raise UnsupportedModel(f"its ONNX vectors differ from PyTorch's (cosine {cosine:.4f})")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one row per text (prompts already prepended by the caller)."""
        import torch

        features = self._preprocess(list(texts))
        inputs = self._tensors(features)
        (tokens,) = self._session.run(None, {name: inputs[name].numpy() for name in self._inputs})
        features["token_embeddings"] = torch.from_numpy(tokens)
        with torch.inference_mode():
            for module in self._rest:
                features = module(features)
        return normalise_rows(features["sentence_embedding"].float().numpy())

    @staticmethod
    def _tensors(features: dict[str, Any]) -> dict[str, Any]:
        """The model inputs among the tokenizer's features (sentence-transformers 6 adds e.g. a 'modality' tag)."""
        import torch

        return {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}


def _backbone(first: Any) -> Any:
    """The Hugging Face model inside a sentence-transformers Transformer module whose text output is the last hidden
    state."""
    if type(first).__name__ != "Transformer":
        raise UnsupportedModel(f"its first module is a {type(first).__name__}, not a Transformer")
    text = (getattr(first, "modality_config", None) or {}).get("text", {})
    if text and (text.get("method"), text.get("method_output_name")) != ("forward", "last_hidden_state"):
        raise UnsupportedModel(f"its text output is {text!r}")
    backbone = getattr(first, "auto_model", None) or getattr(first, "model", None)
    if backbone is None:
        raise UnsupportedModel("its Transformer module holds no model")
    return backbone


def _export(backbone: Any, example: dict[str, Any], path: Path) -> None:
    import torch

    names = list(example)

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = self.backbone(**dict(zip(names, tensors, strict=True))).last_hidden_state
            return hidden

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    log.info("exporting the query encoder to %s", path)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent branches, checked by the probes
        torch.onnx.export(
            LastHiddenState().eval(),
            tuple(example[name] for name in names),
            str(tmp),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "tokens"}},
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(path)  # whole files only: another process may be exporting the same model

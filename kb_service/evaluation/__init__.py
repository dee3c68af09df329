"""The evaluation harness: labelled datasets in, retrieval quality and latency per configuration out."""

from kb_service.evaluation.harness import (
    EvalDataset,
    EvalReport,
    default_configs,
    evaluate,
    load_beir,
    load_dataset,
    load_squad,
)
from kb_service.evaluation.runner import EvalRun, run_eval

__all__ = [
    "EvalDataset",
    "EvalReport",
    "EvalRun",
    "default_configs",
    "evaluate",
    "load_beir",
    "load_dataset",
    "load_squad",
    "run_eval",
]

"""Limits and defaults that settings, API schemas and option objects share: each is written once, here."""

from __future__ import annotations

MAX_TOP_K = 200  # results of one search
MAX_HOPS = 4  # rounds of one multi-hop search
MAX_EXPAND = 5  # neighbouring chunks on either side of a hit
MAX_KNOWLEDGE_BASES = 32  # knowledge bases one search or question spans
MAX_CANDIDATES = MAX_TOP_K * 5  # candidates of one stage (gate documents, chunks per stage, rerank pool)

MAX_TOKENS = 32_768  # one answer's length cap
DEFAULT_MAX_TOKENS = 256
MAX_TEMPERATURE = 2.0
MAX_TOP_P = 1.0
MAX_SAMPLING_TOP_K = 1000
MAX_REPETITION_PENALTY = 10.0
MAX_STOP_SEQUENCES = 8
MAX_PENALTY = 2.0  # presence_penalty / frequency_penalty, OpenAI's range -2..2
MAX_TOP_LOGPROBS = 20
MAX_CHOICES = 8  # n: completions of one chat request
MAX_TOOLS = 128

MAX_PAGE_NUMBER = 100_000  # a page asked to be rendered
MIN_PAGE_WIDTH = 16  # pixels of a rendered page
MAX_PAGE_WIDTH = 4000
DEFAULT_PAGE_WIDTH = 1000

"""LLMSummarizer: document summaries written by the LLM for the document-level retrieval stage, with bounded
cost (a per-document input cap, a summary length cap, requests in flight bounded by the ingest pipeline) and the
extractive summary whenever the model fails or says nothing."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kb_service.core.errors import LLMUnavailable
from kb_service.core.records import Chunk, ParsedDocument
from kb_service.generation.llm import LLM, GenerationParams
from kb_service.generation.prompt import detect_language
from kb_service.ingest.summarize import Summarizer

log = logging.getLogger(__name__)

INSTRUCTION = {
    "en": "Summarise the document below in at most {words} words: its subject, main points and key names and "
    "figures. Plain text in the document's language, no preamble.",
    "zh": "用不超过{words}个字概括下面的文档：主题、要点、关键名称和数字。直接输出摘要，不要开场白。",
}


class LLMSummarizer:
    """Summaries by ``llm``; ``concurrency`` tells the ingest pipeline how many documents to prepare at once."""

    calls_model = True

    def __init__(
        self, llm: LLM, *, fallback: Summarizer, input_tokens: int, summary_tokens: int, concurrency: int = 4
    ) -> None:
        self.llm = llm
        self.fallback = fallback
        self.input_tokens = input_tokens
        self.summary_tokens = summary_tokens
        self.concurrency = concurrency

    def summarize(self, doc: ParsedDocument, chunks: Sequence[Chunk]) -> str:
        if len(chunks) <= 1:
            return self.fallback.summarize(doc, chunks)  # a one-chunk document is its own best summary
        lang = detect_language(doc.text[:2000])
        words = max(20, self.summary_tokens * 3 // 4)
        messages = [
            {"role": "system", "content": INSTRUCTION[lang].format(words=words)},
            {"role": "user", "content": f"{doc.title}\n\n{self._head(chunks)}"},
        ]
        try:
            completion = self.llm.complete(messages, GenerationParams(max_tokens=self.summary_tokens))  # type: ignore[arg-type]
        except LLMUnavailable as exc:
            log.warning("LLM summary of %s failed, using the extractive one: %s", doc.source, exc)
            return self.fallback.summarize(doc, chunks)
        summary = completion.text.strip()
        if not summary:
            return self.fallback.summarize(doc, chunks)
        return f"{doc.title}\n{summary}"

    def _head(self, chunks: Sequence[Chunk]) -> str:
        """Leading chunks within the per-document input cap (the rest of a long document is not sent)."""
        parts, used = [], 0
        for chunk in chunks:
            cost = self.llm.count_tokens(chunk.text)
            if used + cost > self.input_tokens:
                break
            parts.append(chunk.text)
            used += cost
        return "\n\n".join(parts) or chunks[0].text[: self.input_tokens]

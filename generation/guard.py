"""The degeneration guard: small models fall into loops that are rarely verbatim ("p. 34 … p. 35 …", a line
asked again and again, one sentence four times). The guard watches the sentences (and lines) of an answer as they
complete, and the text still being written, and says stop at the first of:
- a sentence or line that repeats an earlier one (compared without case, spaces, punctuation and markers);
- the same sentence with only its numbers changed, a third time;
- any run of ``NGRAM`` words (Chinese: characters), numbers masked, a third time in the answer.
The answer is then cut at the last good sentence."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator

from kb_service.generation.claims import Span, open_marker_at_end, sentences, strip_markers
from kb_service.generation.llm import Completion, Delta, drive
from kb_service.generation.prompt import Language, detect_language

NGRAM = 8
NGRAM_REPEATS = 3
NUMBERS_ONLY_REPEATS = 3
MAX_PENDING_CHARS = 1500  # text without any sentence end this long is passed on as a sentence of its own
MIN_KEY_CHARS = 4  # shorter sentences ("-", "1.") are too short to call a repeat
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")


def _key(text: str) -> str:
    return re.sub(r"[\W_]+", "", strip_markers(text).lower())


def _tokens(text: str) -> list[str]:
    return [re.sub(r"\d+", "#", t) for t in _TOKEN.findall(strip_markers(text).lower())]


class RepetitionGuard:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.masked: Counter[str] = Counter()
        self.grams: Counter[tuple[str, ...]] = Counter()
        self.tail: list[str] = []  # the last NGRAM - 1 tokens accepted
        self.reason = ""

    def accept(self, sentence: str) -> bool:
        """Record a completed sentence; False (and ``reason`` set) when it is a repeat that ends the answer."""
        grams = self._new_grams(_tokens(sentence))
        if self._loops(grams):
            return False
        self.grams.update(grams)
        self.tail = (self.tail + _tokens(sentence))[-(NGRAM - 1) :]
        key = _key(sentence)
        if len(key) < MIN_KEY_CHARS:
            return True
        if key in self.seen:
            self.reason = f"a sentence was repeated: {sentence.strip()[:80]!r}"
            return False
        masked = re.sub(r"\d+", "#", key)
        if self.masked[masked] + 1 >= NUMBERS_ONLY_REPEATS:
            self.reason = f"a sentence was repeated with other numbers: {sentence.strip()[:80]!r}"
            return False
        self.seen.add(key)
        self.masked[masked] += 1
        return True

    def looping(self, pending: str) -> bool:
        """Whether text not yet closed by a sentence end already loops (a list without full stops, a phrase
        repeated within one endless sentence)."""
        return self._loops(self._new_grams(_tokens(pending)))

    def _new_grams(self, tokens: list[str]) -> Counter[tuple[str, ...]]:
        """The n-grams that ``tokens`` adds to the answer, those that run on from the sentences before included."""
        joined = self.tail + tokens
        return Counter(tuple(joined[i : i + NGRAM]) for i in range(max(0, len(joined) - NGRAM + 1)))

    def _loops(self, grams: Counter[tuple[str, ...]]) -> bool:
        looping = next((g for g, n in grams.items() if self.grams[g] + n >= NGRAM_REPEATS), None)
        if looping is not None:
            self.reason = f"a phrase was repeated {NGRAM_REPEATS} times: {' '.join(looping)[:80]!r}"
        return looping is not None


class TextStream:
    """Streamed text in, complete sentences (or claims: ``split``) out, each once the next one has begun; the
    guard ends the stream at the first repeat (``stopped`` says why)."""

    def __init__(self, lang: Language, split: Callable[[str, Language], list[Span]], *, guard: bool = True) -> None:
        self.lang = lang
        self.split = split
        self.guard = RepetitionGuard() if guard else None
        self.pending = ""
        self.stopped = ""

    def feed(self, piece: str) -> list[str]:
        if self.stopped:
            return []
        self.pending += piece
        if open_marker_at_end(self.pending):
            return []
        spans = self.split(self.pending, self.lang)
        complete = spans[:-1]
        if spans and len(spans[-1].text) > MAX_PENDING_CHARS:
            complete = spans
        if not complete:
            if self.guard is not None and self.guard.looping(self.pending):
                self.stopped, self.pending = self.guard.reason, ""
            return []
        self.pending = self.pending[complete[-1].end :]
        return self._accept([s.text for s in complete])

    def close(self) -> list[str]:
        if self.stopped:
            return []
        rest, self.pending = self.pending, ""
        return self._accept([s.text for s in self.split(rest, self.lang)])

    def _accept(self, texts: list[str]) -> list[str]:
        out = []
        for text in texts:
            if not text.strip():
                continue
            if self.guard is not None and not self.guard.accept(text):
                self.stopped = self.guard.reason
                break
            out.append(text)
        return out


def guarded(deltas: Iterator[Delta], language_of: str) -> Iterator[Delta]:
    """A plain chat stream through the guard: text passed on sentence by sentence; at a repeat the model is
    stopped and the completion cut at the last good sentence (``finish_reason`` ``repetition``). The completion's
    text is always what was streamed."""
    stream = TextStream(detect_language(language_of), sentences)
    shown: list[str] = []

    def feed(piece: str) -> list[str]:
        texts = stream.feed(piece)
        shown.extend(texts)
        return texts

    completion = yield from drive(deltas, feed, lambda: bool(stream.stopped))
    for text in stream.close():
        shown.append(text)
        yield Delta(content=text)
    final = completion or Completion(text="")
    final.text = "".join(shown)
    if stream.stopped:
        final.finish_reason = "repetition"
    yield Delta(completion=final)

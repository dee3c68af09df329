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

from generation.claims import strip_markers

NGRAM = 8
NGRAM_REPEATS = 3
NUMBERS_ONLY_REPEATS = 3
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

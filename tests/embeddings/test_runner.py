"""The model thread: one thread for every torch call, concurrent query embeddings coalesced into one pass."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from kb_service.embeddings.runner import MODEL_THREAD, ModelThread


def _hold(runner: ModelThread) -> threading.Event:
    """Occupy ``runner`` until the returned event is set, so that later jobs queue up behind it."""
    started, release = threading.Event(), threading.Event()
    threading.Thread(target=runner.call, args=(lambda: (started.set(), release.wait(10)),), daemon=True).start()
    assert started.wait(10)
    return release


def test_waiting_calls_with_one_key_run_as_one_call() -> None:
    runner = ModelThread(max_coalesced=5)
    calls: list[list[str]] = []
    order: list[str] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.array([[len(t), threading.get_ident()] for t in texts], dtype=np.float32)

    release = _hold(runner)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(runner.encode, "q", encode, ["x" * n, "y" * n]) for n in range(1, 4)]
        plain = pool.submit(runner.call, lambda: order.append("plain"))
        futures.append(pool.submit(runner.encode, "other", encode, ["zz"]))
        while runner._jobs.qsize() < 5:  # every job is waiting behind the held one
            threading.Event().wait(0.01)
        release.set()
        results = [f.result(10) for f in futures]
        plain.result(10)
    # Two of the three "q" calls fit max_coalesced=5 texts together; the third runs alone, and so does "other".
    assert sorted(len(c) for c in calls) == [1, 2, 4]
    for n, rows in zip(range(1, 4), results[:3], strict=True):
        assert rows[:, 0].tolist() == [n, n]
    assert results[3][:, 0].tolist() == [2]
    assert len({int(r[0, 1]) for r in results}) == 1  # all on the one model thread
    assert order == ["plain"]


def test_errors_reach_every_caller_of_the_group_and_the_thread_survives() -> None:
    runner = ModelThread()

    def fail(texts: list[str]) -> np.ndarray:
        raise ValueError(f"bad batch of {len(texts)}")

    release = _hold(runner)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(runner.encode, "k", fail, ["a"]) for _ in range(2)]
        while runner._jobs.qsize() < 2:
            threading.Event().wait(0.01)
        release.set()
        for f in futures:
            with pytest.raises(ValueError, match="bad batch of 2"):
                f.result(10)
    assert runner.call(lambda: 41 + 1) == 42


def test_concurrent_query_embeddings_match_one_by_one(embedder) -> None:  # type: ignore[no-untyped-def]
    queries = [f"what does protein {i} do in the cell cycle?" for i in range(24)]
    alone = np.stack([embedder.embed_queries([q])[0] for q in queries])
    with ThreadPoolExecutor(12) as pool:
        together = np.stack([v[0] for v in pool.map(lambda q: embedder.embed_queries([q]), queries)])
    np.testing.assert_allclose(together, alone, atol=2e-2)  # bf16: padding to a longer query moves the last bits
    assert (np.sum(together * alone, axis=1) > 0.999).all()
    documents = embedder.embed_documents(queries[::-1])  # one batch at a time, returned in input order
    assert (np.sum(documents * alone[::-1], axis=1) > 0.999).all()
    assert MODEL_THREAD._thread is not None and MODEL_THREAD._thread.name == "model"

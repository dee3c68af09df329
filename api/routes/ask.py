"""POST /v1/knowledge-bases/{kb}/ask: a grounded, cited answer; ``stream: true`` sends Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from kb_service.api.deps import AnswererDep, CatalogDep, SettingsDep
from kb_service.api.errors import error_body
from kb_service.api.schemas import SAMPLING, AnswerPublic, AskRequest
from kb_service.api.streaming import EventStream, closing
from kb_service.core.config import Settings
from kb_service.core.errors import KBError
from kb_service.generation.answer import Answer, Answerer
from kb_service.generation.factory import ask_options
from kb_service.generation.llm import Delta, Message, cancellation
from kb_service.retrieval.pipeline import SearchFn

router = APIRouter(prefix="/v1/knowledge-bases", tags=["ask"])


@router.post(
    "/{kb}/ask",
    response_model=AnswerPublic,
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream is true."}},
)
async def ask(kb: str, body: AskRequest, catalog: CatalogDep, answerer: AnswererDep, settings: SettingsDep) -> Any:
    """Answer from the knowledge base with numbered citations. Streaming sends ``delta`` events with text, then
    one ``answer`` event with the whole answer, citations and usage (or an ``error`` event)."""

    def searcher() -> SearchFn:
        return answerer.retriever.on(*catalog.open(kb))

    return await respond(body, searcher, answerer, settings)


async def respond(body: AskRequest, searcher: Callable[[], SearchFn], answerer: Answerer, settings: Settings) -> Any:
    """The answer to ``body`` retrieved with ``searcher()``'s search (opened in a worker thread: it may read the
    store), whole or as Server-Sent Events."""

    def start() -> Iterator[Delta | Answer]:
        options = ask_options(
            settings,
            search=body.search_options(settings),
            compress=body.compress,
            synthesis=body.synthesis,
            sources=body.sources,
            rewrite=body.rewrite,
            answer_mode=body.answer_mode,
            **body.model_dump(include=SAMPLING | {"stop"}),
        )
        events = answerer.stream(
            searcher(),
            body.question,
            history=[Message(role=m.role, content=m.content) for m in body.history],
            options=options,
        )
        # Retrieval and validation run before the first event: their errors become a 4xx, not a broken stream.
        first = next(events)
        return _chain(first, events)

    cancel = cancellation()  # before the model starts: it reads it then
    events = await run_in_threadpool(start)
    if not body.stream:
        answer = await run_in_threadpool(last_event, events)
        return AnswerPublic.of(answer)
    return EventStream(sse(events), cancel)


Event = TypeVar("Event")


def _chain(first: Event, rest: Iterator[Event]) -> Iterator[Event]:
    yield first
    yield from rest


def last_event(events: Iterator[Any]) -> Any:
    """Run a stream of deltas to its end and return its last event (the finished Answer or Completion)."""
    final = None
    for final in events:  # noqa: B007 - the loop variable is the result
        pass
    assert final is not None and not isinstance(final, Delta)  # every stream ends with its result
    return final


def sse(events: Iterator[Delta | Answer]) -> Iterator[str]:
    try:
        for event in events:
            if isinstance(event, Answer):
                yield _event("answer", AnswerPublic.of(event).model_dump())
            elif event.content or event.reasoning:
                yield _event("delta", {"content": event.content, "reasoning": event.reasoning})
    except KBError as exc:  # the model failed mid-answer: say so in the stream, the status is already sent
        yield _event("error", error_body(type(exc).__name__, str(exc)))
    finally:
        closing(events)  # ended early (the client went away): stop the model


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

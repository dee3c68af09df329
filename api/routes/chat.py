"""OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models``.

The ``model`` field picks what answers:
- ``kb:<name>`` — the knowledge base ``<name>`` answers the last user message with retrieval and citations
  (earlier messages are the conversation history); citations ride in ``message.citations`` and in the last
  stream chunk; ``kb:a,b`` answers from several knowledge bases (routed and merged), ``kb:*`` from every one the
  API key may use;
- the service's LLM id (see ``GET /v1/models``) — plain chat with that model, no retrieval.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from kb_service.api import queries
from kb_service.api.auth import Principal, PrincipalDep
from kb_service.api.deps import AnswererDep, CatalogDep, FederationDep, SettingsDep
from kb_service.api.errors import error_body
from kb_service.api.openai_schemas import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatResponseMessage,
    ChoiceLogprobs,
    ModelCard,
    ModelList,
    TokenLogprobOut,
    ToolCallOut,
)
from kb_service.api.routes.ask import _chain, last_event
from kb_service.api.schemas import SAMPLING, AnswerPublic, UsagePublic
from kb_service.api.streaming import EventStream, closing
from kb_service.catalog import Catalog
from kb_service.core.errors import InvalidInput, KBError, KnowledgeBaseNotFound
from kb_service.generation.answer import Answer, Answerer
from kb_service.generation.factory import ask_options, generation_params, not_none
from kb_service.generation.guard import guarded
from kb_service.generation.llm import LLM, Completion, Delta, GenerationParams, Message, Usage, cancellation
from kb_service.retrieval.federated import Federation
from kb_service.retrieval.pipeline import SearchFn, SearchOptions

router = APIRouter(prefix="/v1", tags=["openai"])
KB_PREFIX = "kb:"


@router.get("/models")
async def list_models(catalog: CatalogDep, request: Request, principal: PrincipalDep) -> ModelList:
    """Knowledge bases (those the caller's key may use) as ``kb:<name>`` models, the service's own LLM, and the
    embedding models a request may name (``/v1/embeddings``, a new knowledge base's ``embedding_model``)."""
    kbs = await run_in_threadpool(catalog.list)
    cards = [
        ModelCard(id=KB_PREFIX + kb.name, created=int(kb.created_at), kind="knowledge_base")
        for kb in kbs
        if principal.allows(kb.name)
    ]
    llm: LLM | None = request.app.state.llm
    if llm is not None:
        cards.append(ModelCard(id=llm.name, created=0, kind="llm"))
    cards += [ModelCard(id=name, created=0, kind="embedding") for name in catalog.embedders.offered]
    return ModelList(data=cards)


@router.post("/chat/completions", response_model=ChatCompletion)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    catalog: CatalogDep,
    answerer: AnswererDep,
    federation: FederationDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> Any:
    messages = body.plain_messages()
    created, cid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
    cancel = cancellation()  # before the model starts: it reads it then
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    sampling = body.model_dump(include=SAMPLING) | {"max_tokens": body.max_completion_tokens or body.max_tokens}

    if body.model.startswith(KB_PREFIX):
        named = body.model[len(KB_PREFIX) :]
        if named != "*" and "," not in named:
            principal.check(named)
        if beyond := body.beyond_text():
            raise InvalidInput(
                f"{', '.join(beyond)}: not taken by {body.model!r}, which answers with cited text from the knowledge "
                "base; for these, chat with the service's LLM id (GET /v1/models)"
            )
        if not messages or messages[-1]["role"] != "user":
            raise InvalidInput("the last message must be the user's question")
        question, history = messages[-1]["content"], messages[:-1]

        def start() -> Iterator[Delta | Answer]:
            options = ask_options(
                settings, search=SearchOptions.from_settings(settings), stop=stop, synthesis=body.synthesis, **sampling
            )
            search = _searcher(named, catalog, federation, answerer, principal)
            events = answerer.stream(search, question, history=history, options=options)
            return _chain(next(events), events)

        first: Iterator[Any] = await run_in_threadpool(start)
        starts: list[Callable[[], Iterator[Any]]] = []
    else:
        llm: LLM | None = request.app.state.llm
        if llm is None or body.model != llm.name:
            raise InvalidInput(
                f"unknown model {body.model!r}: use 'kb:<knowledge base>' or "
                + (f"the service's LLM {llm.name!r}" if llm else "configure an LLM (KB_LLM_BACKEND)")
            )
        if body.synthesis is not None:
            raise InvalidInput("synthesis: only a 'kb:<knowledge base>' model answers from sources")
        params = replace(generation_params(settings, not_none({**sampling, "stop": stop})), **body.extras()).validate()
        if not messages:
            raise InvalidInput("messages must not be empty")
        await run_in_threadpool(_check_context, llm, messages, params)
        # n choices one after another (one model answers one request at a time), each with its own seed if seeded
        starts = [partial(_plain_chat, llm, messages, _nth(params, i)) for i in range(body.n)]
        first = await run_in_threadpool(starts.pop(0))  # a model that is down or refuses fails here, with a status

    if not body.stream:
        finals = [await run_in_threadpool(last_event, first)]
        for start_next in starts:
            finals.append(await run_in_threadpool(_run, start_next))
        return _completion(cid, created, body.model, finals)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return EventStream(_stream(cid, created, body.model, first, starts, include_usage=include_usage), cancel)


def _searcher(
    named: str, catalog: Catalog, federation: Federation, answerer: Answerer, principal: Principal
) -> SearchFn:
    """What ``kb:<named>`` retrieves with: one knowledge base, or several (``kb:a,b``; ``kb:*``: every one the key
    may use), routed and merged. ``named`` is one knowledge base whenever one has that very name."""
    if named == "*" or "," in named:
        try:
            one = catalog.open(named)
        except KnowledgeBaseNotFound:
            names = None if named == "*" else [n.strip() for n in named.split(",") if n.strip()]
            return federation.on(queries.open_targets(catalog, names, principal))
        principal.check(named)
        return answerer.retriever.on(*one)
    return answerer.retriever.on(*catalog.open(named))


def _run(start: Callable[[], Iterator[Any]]) -> Any:
    return last_event(start())


def _nth(params: GenerationParams, i: int) -> GenerationParams:
    return params if i == 0 or params.seed is None else replace(params, seed=params.seed + i)


MESSAGE_OVERHEAD_TOKENS = 8  # what a chat template adds around each message, about


def _check_context(llm: LLM, messages: list[Message], params: GenerationParams) -> None:
    """Refuse messages that, with the answer's ``max_tokens``, do not fit the model's context window (the model
    would spend minutes on a prompt it cannot attend to, holding every other request)."""
    texts = [m["content"] + json.dumps(m.get("tool_calls") or "") for m in messages]
    prompt = sum(llm.count_tokens(text) + MESSAGE_OVERHEAD_TOKENS for text in texts)
    prompt += sum(llm.count_tokens(json.dumps(tool)) for tool in params.tools)
    if prompt + params.max_tokens > llm.context_window:
        raise InvalidInput(
            f"the messages take about {prompt} tokens and max_tokens is {params.max_tokens}: together more than "
            f"the context window of {llm.name!r} ({llm.context_window} tokens); shorten the messages or lower "
            "max_tokens"
        )


def _plain_chat(llm: LLM, messages: list[Message], params: GenerationParams) -> Iterator[Delta | Completion]:
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    deltas = llm.stream(messages, params)
    if not (params.tools or params.response_format or params.logprobs):
        # prose is guarded against loops; JSON, calls and text whose token logprobs are wanted pass as written
        deltas = guarded(deltas, question)
    first = next(deltas)  # a server that is down fails here, before any byte is sent

    def chain() -> Iterator[Delta | Completion]:
        for delta in _chain(first, deltas):
            yield delta.completion if delta.completion is not None else delta

    return chain()


def _completion(cid: str, created: int, model: str, finals: list[Answer | Completion]) -> ChatCompletion:
    choices = [ChatChoice(index=i, **_choice(final)) for i, final in enumerate(finals)]
    return ChatCompletion(id=cid, created=created, model=model, choices=choices, usage=_usage(finals))


def _choice(final: Answer | Completion) -> dict[str, Any]:
    if isinstance(final, Answer):
        public = AnswerPublic.of(final)
        message = ChatResponseMessage(
            content=public.answer,
            citations=public.citations,
            sources=public.sources,
            unsupported_claims=public.unsupported_claims,
            mode=public.mode,
            reasoning_content=final.reasoning,
        )
        return {"message": message, "finish_reason": final.finish_reason}
    calls = [ToolCallOut.model_validate(call.openai()) for call in final.tool_calls]
    message = ChatResponseMessage(
        content=final.text if final.text or not calls else None,
        tool_calls=calls or None,
        reasoning_content=final.reasoning,
    )
    logprobs = None
    if final.logprobs is not None:
        logprobs = ChoiceLogprobs(content=[TokenLogprobOut.of(t) for t in final.logprobs])
    return {"message": message, "finish_reason": final.finish_reason, "logprobs": logprobs}


def _usage(finals: list[Any]) -> UsagePublic:
    """OpenAI's count for n choices: the prompt once, every choice's completion."""
    return UsagePublic.of(Usage(finals[0].usage.prompt_tokens, sum(final.usage.completion_tokens for final in finals)))


def _stream(
    cid: str,
    created: int,
    model: str,
    first: Iterator[Any],
    starts: list[Callable[[], Iterator[Any]]],
    *,
    include_usage: bool,
) -> Iterator[str]:
    def chunk(index: int, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
        choices = [] if delta is None else [{"index": index, "delta": delta, "finish_reason": finish}]
        if delta is not None and "logprobs" in extra:
            choices[0]["logprobs"] = extra.pop("logprobs")
        payload = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    finals: list[Any] = []
    events = first
    try:
        for index in range(1 + len(starts)):
            if index:
                events = starts[index - 1]()
            yield chunk(index, {"role": "assistant", "content": ""})
            try:
                yield from _chunks(partial(chunk, index), events, finals)
            finally:
                closing(events)  # ended early (the client went away): stop the model
        if include_usage and finals:
            yield chunk(0, None, usage=_usage(finals).model_dump())
    except KBError as exc:  # LLMUnavailable included: the status is already sent
        yield f"data: {json.dumps(error_body(type(exc).__name__, str(exc)), ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


def _chunks(chunk: Callable[..., str], events: Iterator[Any], finals: list[Any]) -> Iterator[str]:
    streamed_logprobs = False
    for event in events:
        if isinstance(event, Delta):
            piece: dict[str, Any] = {}
            if event.content:
                piece["content"] = event.content
            if event.reasoning:
                piece["reasoning_content"] = event.reasoning
            if event.tool_calls:
                piece["tool_calls"] = [call.openai() for call in event.tool_calls]
            extra: dict[str, Any] = {}
            if event.logprobs:
                streamed_logprobs = True
                extra["logprobs"] = {"content": [t.openai() for t in event.logprobs]}
            if piece or extra:
                yield chunk(piece, **extra)
            continue
        extra = {}
        if isinstance(event, Answer):
            public = AnswerPublic.of(event)
            extra["citations"] = [c.model_dump() for c in public.citations]
            extra["sources"] = [s.model_dump() for s in public.sources]
            extra["unsupported_claims"] = [u.model_dump() for u in public.unsupported_claims]
            extra["mode"] = public.mode
        elif event.logprobs and not streamed_logprobs:  # a backend that gives them only with the whole answer
            extra["logprobs"] = {"content": [t.openai() for t in event.logprobs]}
        finals.append(event)
        yield chunk({}, event.finish_reason, **extra)

"""OpenAI's Responses API: ``POST /v1/responses``. With a ``file_search`` tool, the vector store (a knowledge base)
answers with our retrieval and verified citations: a ``file_search_call`` output item, then an assistant message whose
``output_text`` carries a ``file_citation`` annotation wherever the answer cites a file. Without tools, the
service's LLM answers plainly. ``stream`` sends OpenAI's event sequence; ``previous_response_id`` continues a
stored response's conversation."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from kb_service.api.auth import Principal, PrincipalDep
from kb_service.api.deps import AnswererDep, CatalogDep, FileSearchDep, ResponseLogDep, SettingsDep
from kb_service.api.responses_schemas import FileSearchTool, ResponseRequest
from kb_service.api.routes.ask import _chain, last_event
from kb_service.api.routes.chat import _check_context, _plain_chat
from kb_service.api.streaming import EventStream, closing
from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.core.errors import InvalidInput, KBError
from kb_service.filesearch import filters
from kb_service.filesearch.responses import StoredResponse
from kb_service.filesearch.service import FileSearch, attributes_of
from kb_service.generation.answer import Answer, Answerer
from kb_service.generation.claims import MARKER
from kb_service.generation.factory import ask_options, generation_params, not_none
from kb_service.generation.llm import LLM, Completion, Delta, Message, Usage, cancellation
from kb_service.retrieval.pipeline import SearchOptions

router = APIRouter(prefix="/v1/responses", tags=["openai"])
RESULTS = "file_search_call.results"


def _owner(principal: Principal) -> str | None:
    """Whose responses a caller may read: a scoped key only its own; others every one."""
    return principal.name if principal.kbs is not None else None


@router.post("")
async def create_response(
    body: ResponseRequest,
    request: Request,
    catalog: CatalogDep,
    answerer: AnswererDep,
    files: FileSearchDep,
    log: ResponseLogDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> Any:
    tool = body.file_search()
    earlier: list[Message] = []
    if body.previous_response_id:
        earlier = (await run_in_threadpool(log.get, body.previous_response_id, owner=_owner(principal))).conversation
    conversation = earlier + body.messages()
    if not conversation or conversation[-1]["role"] != "user":
        raise InvalidInput("the last input message must be the user's")
    system: list[Message] = [{"role": "system", "content": body.instructions}] if body.instructions else []
    sampling = {"temperature": body.temperature, "top_p": body.top_p, "max_tokens": body.max_output_tokens}
    llm: LLM | None = request.app.state.llm
    if llm is not None and body.model != llm.name:
        raise InvalidInput(f"unknown model {body.model!r}: this service answers with {llm.name!r}")
    cancel = cancellation()  # before the model starts: it reads it then
    turn = Turn(body, files, tool)
    events: Iterator[Delta | Answer | Completion]
    if tool is not None:
        principal.check(tool.vector_store_ids[0])
        where = filters.parse(tool.filters)
        events = await run_in_threadpool(
            turn.search_and_answer, catalog, answerer, settings, where, system + conversation, sampling
        )
    else:
        if llm is None:
            raise InvalidInput("no LLM is configured (KB_LLM_BACKEND): without one, only file_search answers")
        params = generation_params(settings, not_none(sampling)).validate()
        await run_in_threadpool(_check_context, llm, system + conversation, params)
        events = await run_in_threadpool(_plain_chat, llm, system + conversation, params)

    def finish(final: Answer | Completion) -> dict[str, Any]:
        response = turn.response(final)
        if body.store:
            answered: Message = {"role": "assistant", "content": turn.plain}
            log.add(StoredResponse(turn.id, principal.name, response, [*conversation, answered]))
        return response

    if not body.stream:
        return await run_in_threadpool(lambda: finish(last_event(events)))
    return EventStream(turn.stream(events, finish), cancel)


@router.get("/{response_id}")
async def retrieve_response(response_id: str, log: ResponseLogDep, principal: PrincipalDep) -> dict[str, Any]:
    return (await run_in_threadpool(log.get, response_id, owner=_owner(principal))).body


@router.delete("/{response_id}")
async def delete_response(response_id: str, log: ResponseLogDep, principal: PrincipalDep) -> dict[str, Any]:
    await run_in_threadpool(log.delete, response_id, owner=_owner(principal))
    return {"id": response_id, "object": "response", "deleted": True}


def annotated(text: str) -> tuple[str, list[tuple[int, int]]]:
    """``text`` without its citation markers, and each cited source number with the index where its marker was."""
    plain: list[str] = []
    cited: list[tuple[int, int]] = []
    at, length = 0, 0
    for m in MARKER.finditer(text):
        plain.append(text[at : m.start()])
        length += m.start() - at
        numbers = [int(n) for n in filter(None, (p.strip() for p in _split(m.group(1))))]
        cited += [(length, n) for n in numbers]
        at = m.end()
    plain.append(text[at:])
    return "".join(plain), cited


def _split(group: str) -> list[str]:
    for sep in ",，、;":
        group = group.replace(sep, " ")
    return group.split()


class Turn:
    """One response being made: its ids, and its output items built from the answer."""

    def __init__(self, body: ResponseRequest, files: FileSearch, tool: FileSearchTool | None) -> None:
        self.body, self.files, self.tool = body, files, tool
        self.id = f"resp_{secrets.token_hex(24)}"
        self.search_id = f"fs_{secrets.token_hex(24)}"
        self.message_id = f"msg_{secrets.token_hex(24)}"
        self.created = int(time.time())
        self.plain = ""
        self.names: dict[str, tuple[str, str]] = {}
        self.attributes: dict[str, dict[str, Any]] = {}
        self.sequence = 0

    def search_and_answer(
        self,
        catalog: Catalog,
        answerer: Answerer,
        settings: Settings,
        where: filters.Node | None,
        conversation: list[Message],
        sampling: dict[str, Any],
    ) -> Iterator[Delta | Answer]:
        assert self.tool is not None
        tool = self.tool
        kb, embedder = catalog.open(tool.vector_store_ids[0])
        self.kb = kb
        rerank = False if tool.ranking_options is not None and tool.ranking_options.ranker == "none" else None
        search = SearchOptions.from_settings(settings, filters=self.files.scope(kb, where), rerank=rerank)
        options = ask_options(settings, search=search, sources=tool.max_num_results, **sampling)
        question, history = conversation[-1]["content"], conversation[:-1]
        events = answerer.stream(answerer.retriever.on(kb, embedder), question, history=history, options=options)
        return _chain(next(events), events)  # retrieval's errors become a 4xx, not a broken stream

    # the finished response

    def response(self, final: Answer | Completion, *, status: str | None = None) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if isinstance(final, Answer):
            doc_ids = [s.doc_id for s in final.sources]
            self.names = self.files.file_names(self.kb, doc_ids)
            docs = self.files.catalog.store.get_documents(self.kb, doc_ids)
            self.attributes = {d: attributes_of(doc.metadata) for d, doc in docs.items()}
            output.append(self.search_item(final))
        output.append(self.message_item(final))
        incomplete = final.finish_reason == "length"
        return self.envelope(
            status=status or ("incomplete" if incomplete else "completed"),
            output=output,
            usage=final.usage,
            incomplete={"reason": "max_output_tokens"} if incomplete else None,
        )

    def envelope(
        self, *, status: str, output: list[dict[str, Any]], usage: Usage | None, incomplete: Any = None
    ) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": body.model,
            "output": output,
            "instructions": body.instructions,
            "tools": body.tools,
            "tool_choice": body.tool_choice,
            "parallel_tool_calls": True,
            "previous_response_id": body.previous_response_id,
            "store": body.store,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "max_output_tokens": body.max_output_tokens,
            "metadata": body.metadata or {},
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "error": None,
            "incomplete_details": incomplete,
            "usage": None if usage is None else _usage(usage),
        }

    def search_item(self, answer: Answer | None, *, status: str = "completed") -> dict[str, Any]:
        results = None
        if answer is not None and RESULTS in self.body.include:
            results = [
                {
                    "file_id": self.names[s.doc_id][0],
                    "filename": self.names[s.doc_id][1],
                    "score": s.score,
                    "text": s.text,
                    "attributes": self.attributes.get(s.doc_id, {}),
                }
                for s in answer.sources
            ]
        queries = [answer.query or answer.question] if answer is not None else [self._question()]
        return {
            "id": self.search_id,
            "type": "file_search_call",
            "status": status,
            "queries": queries,
            "results": results,
        }

    def message_item(self, final: Answer | Completion | None, *, status: str = "completed") -> dict[str, Any]:
        content = [] if final is None else [self.text_part(final)]
        return {"id": self.message_id, "type": "message", "role": "assistant", "status": status, "content": content}

    def text_part(self, final: Answer | Completion) -> dict[str, Any]:
        self.plain, annotations = self.annotations(final)
        return {"type": "output_text", "text": self.plain, "annotations": annotations, "logprobs": []}

    def annotations(self, final: Answer | Completion) -> tuple[str, list[dict[str, Any]]]:
        if not isinstance(final, Answer):
            return final.text, []
        plain, cited = annotated(final.text)
        by_number = {s.number: s for s in final.sources}
        out = []
        for index, number in cited:
            source = by_number.get(number)
            if source is not None:
                file_id, filename = self.names[source.doc_id]
                out.append({"type": "file_citation", "index": index, "file_id": file_id, "filename": filename})
        return plain, out

    def _question(self) -> str:
        messages = self.body.messages()
        return messages[-1]["content"] if messages else ""

    # streaming

    def stream(self, events: Iterator[Any], finish: Any) -> Iterator[str]:
        msg = {"item_id": self.message_id, "content_index": 0}
        yield self._event("response.created", response=self.envelope(status="in_progress", output=[], usage=None))
        yield self._event("response.in_progress", response=self.envelope(status="in_progress", output=[], usage=None))
        index = 0
        if self.tool is not None:
            at = {"output_index": 0, "item_id": self.search_id}
            yield self._event(
                "response.output_item.added", output_index=0, item=self.search_item(None, status="in_progress")
            )
            yield self._event("response.file_search_call.in_progress", **at)
            yield self._event("response.file_search_call.searching", **at)
            yield self._event("response.file_search_call.completed", **at)
            yield self._event("response.output_item.done", output_index=0, item=self.search_item(None))
            index = 1
        yield self._event(
            "response.output_item.added", output_index=index, item=self.message_item(None, status="in_progress")
        )
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield self._event("response.content_part.added", output_index=index, part=empty, **msg)
        try:
            final = None
            for event in events:
                if isinstance(event, Delta):
                    if event.content:
                        piece, _ = annotated(event.content)
                        yield self._event(
                            "response.output_text.delta", output_index=index, delta=piece, logprobs=[], **msg
                        )
                    continue
                final = event
            assert final is not None
            response = finish(final)
            part = response["output"][-1]["content"][0]
            for n, annotation in enumerate(part["annotations"]):
                yield self._event(
                    "response.output_text.annotation.added",
                    output_index=index,
                    annotation_index=n,
                    annotation=annotation,
                    **msg,
                )
            yield self._event("response.output_text.done", output_index=index, text=part["text"], logprobs=[], **msg)
            yield self._event("response.content_part.done", output_index=index, part=part, **msg)
            yield self._event("response.output_item.done", output_index=index, item=response["output"][-1])
            kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
            yield self._event(kind, response=response)
        except KBError as exc:  # the model failed mid-answer: the status is already sent
            yield self._event("error", code=type(exc).__name__, message=str(exc), param=None)
            failed = self.envelope(status="failed", output=[], usage=None)
            failed["error"] = {"code": "server_error", "message": str(exc)}
            yield self._event("response.failed", response=failed)
        finally:
            closing(events)  # ended early (the client went away): stop the model

    def _event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }

"""The request of OpenAI's Responses API (``POST /v1/responses``), as its SDK sends it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kb_service.api.filesearch_schemas import RankingOptions
from kb_service.core import limits
from kb_service.core.errors import InvalidInput
from kb_service.generation.llm import Message

MAX_INPUT_ITEMS = 200
MAX_INPUT_CHARS = 100_000


class FileSearchTool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["file_search"]
    vector_store_ids: list[str] = Field(min_length=1, max_length=1)
    max_num_results: int | None = Field(default=None, ge=1, le=50)
    filters: dict[str, Any] | None = None
    ranking_options: RankingOptions | None = None


class InputPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class InputItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # id, status of an output item passed back
    type: str = "message"
    role: Literal["user", "system", "developer", "assistant"] | None = None
    content: str | list[InputPart] | None = None


class ResponseRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=300)
    input: str | list[InputItem]
    instructions: str | None = Field(default=None, max_length=100_000)
    tools: list[dict[str, Any]] = Field(default_factory=list, max_length=8)
    tool_choice: Any = "auto"
    include: list[str] = Field(default_factory=list, max_length=16)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = Field(default=None, max_length=200)
    max_output_tokens: int | None = Field(default=None, ge=1, le=limits.MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=limits.MAX_TEMPERATURE)
    top_p: float | None = Field(default=None, gt=0.0, le=limits.MAX_TOP_P)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)

    def file_search(self) -> FileSearchTool | None:
        """The file_search tool, if given; other tools are refused (there is nothing here to run them)."""
        found = None
        for i, tool in enumerate(self.tools):
            if tool.get("type") != "file_search":
                raise InvalidInput(f"tools[{i}]: type {tool.get('type')!r} is not supported; only 'file_search' is")
            if found is not None:
                raise InvalidInput("give at most one file_search tool")
            found = FileSearchTool.model_validate(tool)
        return found

    def messages(self) -> list[Message]:
        """The input as text messages ('developer' is 'system'); output items passed back (a file_search_call)
        are skipped, other item types and non-text parts refused."""
        if isinstance(self.input, str):
            if not self.input.strip() or len(self.input) > MAX_INPUT_CHARS:
                raise InvalidInput(f"input must be 1 to {MAX_INPUT_CHARS} characters")
            return [{"role": "user", "content": self.input}]
        if not 1 <= len(self.input) <= MAX_INPUT_ITEMS:
            raise InvalidInput(f"input takes 1 to {MAX_INPUT_ITEMS} items, got {len(self.input)}")
        out: list[Message] = []
        for i, item in enumerate(self.input):
            if item.type == "file_search_call":
                continue
            if item.type != "message" or item.role is None:
                raise InvalidInput(f"input[{i}]: item type {item.type!r} is not supported; send messages")
            if isinstance(item.content, list):
                if any(p.type not in ("input_text", "output_text", "text") for p in item.content):
                    raise InvalidInput(f"input[{i}]: only text content parts are supported")
                text = "".join(p.text or "" for p in item.content)
            else:
                text = item.content or ""
            out.append({"role": "system" if item.role == "developer" else item.role, "content": text})
        return out

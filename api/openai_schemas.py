"""Bodies of the OpenAI-compatible endpoints: what OpenAI's SDK sends and expects, plus our citation fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kb_service.api.schemas import CitationPublic, SamplingFields, SourcePublic, UnsupportedClaimPublic, UsagePublic
from kb_service.core import limits
from kb_service.core.errors import InvalidInput
from kb_service.generation.llm import Message, ResponseFormat, TokenLogprob
from kb_service.generation.structured import check_schema
from kb_service.generation.synthesis import Synthesis

FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for function and schema names


def _json_schema(value: dict[str, Any] | None, where: str) -> dict[str, Any] | None:
    """A field validator's check: ``value`` is a JSON Schema (ValueError, so pydantic reports it as a 422)."""
    if value is not None:
        try:
            check_schema(value, where)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from exc
    return value


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class FunctionCallIn(BaseModel):
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str = Field(default="{}", max_length=100_000, description="JSON text, as the model wrote it.")


class ToolCallIn(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatRequestMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, refusal, audio …: accepted and ignored
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=limits.MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, max_length=200, description="The call a tool message answers.")


class FunctionSpec(BaseModel):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = Field(default=None, max_length=10_000)
    parameters: dict[str, Any] | None = Field(default=None, description="The arguments' JSON Schema.")
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _json_schema(value, "the function's parameters")


class ToolSpec(BaseModel):
    type: Literal["function"] = Field(description="Only function tools; file_search is the Responses API's.")
    function: FunctionSpec


class NamedFunction(BaseModel):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = Field(default=None, max_length=10_000)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "object") != "object":
            raise ValueError(f"the schema must describe an object (type 'object', as OpenAI's), not {value['type']!r}")
        return _json_schema(value, "the schema")


class ResponseFormatIn(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormatIn:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs json_schema: {name, schema}")
        return self

    def internal(self) -> ResponseFormat | None:
        if self.type == "text":
            return None
        if self.type == "json_object" or self.json_schema is None:
            return ResponseFormat("json_object")
        spec = self.json_schema
        return ResponseFormat("json_schema", spec.schema_, spec.name, bool(spec.strict))


class ChatCompletionRequest(SamplingFields):
    model_config = ConfigDict(extra="allow")  # clients send many optional fields (user, logprobs …); ignored
    model: str = Field(min_length=1, max_length=300, description="'kb:<knowledge base>' or the service's LLM id.")
    messages: list[ChatRequestMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1, le=limits.MAX_TOKENS)
    n: int = Field(default=1, ge=1, le=limits.MAX_CHOICES, description="Choices to generate (the LLM id only).")
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=limits.MAX_TOP_LOGPROBS)
    response_format: ResponseFormatIn | None = None
    tools: list[ToolSpec] | None = Field(default=None, max_length=limits.MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    synthesis: Synthesis | None = Field(
        default=None, description="A kb: model's answer: compact, refine or map_reduce (default KB_ANSWER_SYNTHESIS)."
    )

    @model_validator(mode="after")
    def _tools_consistent(self) -> ChatCompletionRequest:
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError(f"tools: function names must be distinct, got {names}")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not among the tools")
        if self.tool_choice == "required" and not names:
            raise ValueError("tool_choice 'required' needs tools")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def extras(self) -> dict[str, Any]:
        """What this request asks of the model beyond sampling (GenerationParams fields): structured output,
        function calling, log probabilities."""
        choice = self.tool_choice
        return {
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs,
            "response_format": self.response_format.internal() if self.response_format else None,
            "tools": tuple(t.model_dump(exclude_none=True) for t in self.tools or []),
            "tool_choice": choice.model_dump() if isinstance(choice, NamedToolChoice) else choice,
        }

    def beyond_text(self) -> list[str]:
        """The fields set that only plain chat with the LLM takes (a ``kb:`` model answers with cited text)."""
        asked = {
            "tools": bool(self.tools),
            "response_format": self.response_format is not None and self.response_format.type != "text",
            "logprobs": self.logprobs,
            "n": self.n > 1,
        }
        return [name for name, given in asked.items() if given]

    @field_validator("stop")
    @classmethod
    def _stop_limits(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > limits.MAX_STOP_SEQUENCES or any(not s for s in stops):
            raise ValueError(f"stop takes at most {limits.MAX_STOP_SEQUENCES} non-empty strings")
        return value

    def plain_messages(self) -> list[Message]:
        """Text-only messages; 'developer' is OpenAI's newer name for 'system'. Non-text parts are refused.
        An assistant's function calls and a tool's answers keep their ids."""
        out: list[Message] = []
        for i, m in enumerate(self.messages):
            if isinstance(m.content, list):
                if any(p.type != "text" for p in m.content):
                    raise InvalidInput(f"messages[{i}]: only text content parts are supported")
                text = "".join(p.text or "" for p in m.content)
            else:
                text = m.content or ""
            role = "system" if m.role == "developer" else m.role
            message: Message = {"role": role, "content": text}
            if m.tool_calls:
                if m.role != "assistant":
                    raise InvalidInput(f"messages[{i}]: only an assistant message has tool_calls")
                message["tool_calls"] = [call.model_dump() for call in m.tool_calls]
            if m.role == "tool":
                if not m.tool_call_id:
                    raise InvalidInput(f"messages[{i}]: a tool message needs the tool_call_id it answers")
                message["tool_call_id"] = m.tool_call_id
            out.append(message)
        return out


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="JSON text, valid against the function's parameters.")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class TopLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobOut(TopLogprobOut):
    top_logprobs: list[TopLogprobOut]

    @classmethod
    def of(cls, t: TokenLogprob) -> TokenLogprobOut:
        return cls.model_validate(t.openai())


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut]


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="None when the answer is only function calls.")
    tool_calls: list[ToolCallOut] | None = None
    reasoning_content: str = ""
    citations: list[CitationPublic] | None = None
    sources: list[SourcePublic] | None = None
    unsupported_claims: list[UnsupportedClaimPublic] | None = None
    mode: str | None = Field(default=None, description="generated, extractive or no_sources (kb: models only).")


class ChatChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsagePublic


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kb-service"
    kind: Literal["knowledge_base", "llm", "embedding"] = Field(
        description="Not OpenAI's: what the id names: a knowledge base to chat with (kb:<name>), the LLM, or an "
        "embedding model for /v1/embeddings and new knowledge bases."
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

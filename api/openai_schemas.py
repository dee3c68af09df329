"""Bodies of the OpenAI-compatible endpoints: what OpenAI's SDK sends and expects, plus our citation fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kb_service.api.schemas import CitationPublic, SamplingFields, SourcePublic, UnsupportedClaimPublic, UsagePublic
from kb_service.core import limits
from kb_service.core.errors import InvalidInput
from kb_service.generation.llm import Message


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatRequestMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id …: accepted and ignored
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(SamplingFields):
    model_config = ConfigDict(extra="allow")  # clients send many optional fields (user, logprobs …); ignored
    model: str = Field(min_length=1, max_length=300, description="'kb:<knowledge base>' or the service's LLM id.")
    messages: list[ChatRequestMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1, le=limits.MAX_TOKENS)
    n: int = Field(default=1, ge=1, le=1, description="Only one choice is generated.")

    @field_validator("stop")
    @classmethod
    def _stop_limits(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > limits.MAX_STOP_SEQUENCES or any(not s for s in stops):
            raise ValueError(f"stop takes at most {limits.MAX_STOP_SEQUENCES} non-empty strings")
        return value

    def plain_messages(self) -> list[Message]:
        """Text-only messages; 'developer' is OpenAI's newer name for 'system'. Non-text parts are refused."""
        out: list[Message] = []
        for i, m in enumerate(self.messages):
            if isinstance(m.content, list):
                if any(p.type != "text" for p in m.content):
                    raise InvalidInput(f"messages[{i}]: only text content parts are supported")
                text = "".join(p.text or "" for p in m.content)
            else:
                text = m.content or ""
            role = "system" if m.role == "developer" else m.role
            out.append({"role": role, "content": text})
        return out


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str = ""
    citations: list[CitationPublic] | None = None
    sources: list[SourcePublic] | None = None
    unsupported_claims: list[UnsupportedClaimPublic] | None = None
    mode: str | None = Field(default=None, description="generated, extractive or no_sources (kb: models only).")


class ChatChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    finish_reason: str


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

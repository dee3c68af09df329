"""Domain errors. Each carries a message a person can act on; the API maps them to HTTP statuses in one place."""

from __future__ import annotations


class KBError(Exception):
    """Base of every error the service raises on purpose."""


class InvalidInput(KBError):
    """A caller supplied a value that can never work (bad name, bad option)."""


class KnowledgeBaseNotFound(KBError):
    def __init__(self, name: str) -> None:
        super().__init__(f"knowledge base {name!r} does not exist")
        self.name = name


class KnowledgeBaseExists(KBError):
    def __init__(self, name: str) -> None:
        super().__init__(f"knowledge base {name!r} already exists")
        self.name = name


class DocumentNotFound(KBError):
    def __init__(self, kb: str, doc_id: str) -> None:
        super().__init__(f"document {doc_id!r} not found in knowledge base {kb!r}")
        self.kb = kb
        self.doc_id = doc_id


class OriginalNotFound(KBError):
    """A document whose original file is not kept (ingested before originals were kept, or with them off)."""

    def __init__(self, kb: str, doc_id: str) -> None:
        super().__init__(
            f"document {doc_id!r} of knowledge base {kb!r} has no original file kept (ingested before originals "
            "were kept, or with KB_KEEP_ORIGINALS=false): upload the file again to keep it"
        )


class PageNotFound(KBError):
    """A page a document does not have, or a document without pages to render."""


class EmbeddingModelMismatch(KBError):
    """The knowledge base was built with another embedding model than the one offered."""


class EmbeddingError(KBError):
    """The embedding model could not be loaded or an embedding server failed."""


class EmbeddingModelUnavailable(EmbeddingError):
    """A named embedding model cannot be loaded (no such name or path): the caller's choice to fix."""


class StoreError(KBError):
    """The vector store failed or cannot be reached."""


class ParseError(KBError):
    """A file could not be turned into text. Subclasses name the reason."""

    reason = "parse_error"

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.detail = detail

    def __reduce__(self) -> tuple[type[ParseError], tuple[str, str]]:  # raised in a parse worker, re-raised here
        return type(self), (self.source, self.detail)


class UnsupportedFormat(ParseError):
    reason = "unsupported_format"


class EncryptedDocument(ParseError):
    reason = "encrypted"


class NoTextLayer(ParseError):
    reason = "no_text"


class CorruptDocument(ParseError):
    reason = "corrupt"


class EmptyDocument(ParseError):
    reason = "empty"


class FileTooLarge(ParseError):
    reason = "too_large"


class ArchiveBomb(CorruptDocument):
    """A zip container (DOCX, XLSX, PPTX, ODT, EPUB) that would expand far beyond any real document."""

    reason = "zip_bomb"


class LLMUnavailable(KBError):
    """The language model could not be loaded, or its server refused or failed the request."""


class LLMTimeout(LLMUnavailable):
    """The language model's server did not answer in time."""


class LLMRefused(InvalidInput, LLMUnavailable):
    """The language model's server refused the request as invalid (a 4xx: a tool or format it does not take, a
    prompt too long): a 422 to a caller who sent it; where the service wrote the prompt (an answer, a summary)
    it is one more way for the model to be unavailable, with the same fallback."""


class UnusableOutput(KBError):
    """The model's answer did not meet the request's ``response_format`` or ``tool_choice``, again and again."""


class JobNotFound(KBError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found: ids come from POST /v1/knowledge-bases/{{kb}}/documents")
        self.job_id = job_id


class Unauthorized(KBError):
    """No API key, or one the service does not know."""


class Forbidden(KBError):
    """A valid API key used outside the knowledge bases it is scoped to."""


class SyncSourceNotFound(KBError):
    """A sync source that is not there: a folder that does not exist, or no source configured for the KB."""


class SyncInProgress(KBError):
    def __init__(self, kb: str, source: str) -> None:
        super().__init__(f"a sync of knowledge base {kb!r} from {source} is already running; try again when it ends")


class ReindexInProgress(KBError):
    """A re-index of the knowledge base is running already (or another one is recorded and not finished)."""


class ReindexNotFound(KBError):
    """No re-index of the knowledge base is recorded."""


class ReindexCancelled(KBError):
    """The re-index was cancelled; the knowledge base is as it was."""


class IndexSwitched(KBError):
    """A write went to an index of a knowledge base that a re-index has just replaced: do it again on the one now
    serving (an ingest job does so by itself)."""

    def __init__(self, kb: str) -> None:
        super().__init__(f"knowledge base {kb!r} switched to a new index (re-indexed) during this write; run it again")
        self.kb = kb


class FileNotFound(KBError):
    def __init__(self, file_id: str) -> None:
        super().__init__(f"file {file_id!r} not found: ids come from POST /v1/files")
        self.file_id = file_id


class FileInUse(KBError):
    """A file still being ingested into a vector store cannot be deleted yet."""


class ResponseNotFound(KBError):
    def __init__(self, response_id: str) -> None:
        super().__init__(f"response {response_id!r} not found (responses are kept only when created with store=true)")
        self.response_id = response_id


class BatchNotFound(KBError):
    """A vector store file batch that is not there."""


class QueueUnavailable(KBError):
    """The job queue's broker (KB_QUEUE_URL) cannot be reached."""

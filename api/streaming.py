"""Server-sent event streams over a generator that drives a model, which stop the model when the client goes away.

The route calls ``cancellation()`` before it starts the generation; this response listens for the client's
disconnect beside the stream and sets it, and each LLM backend stops at its next token once it is set (a streamed
answer may be waiting on a whole sentence, which no send would interrupt). However the stream ends, the generator is
closed afterwards, which releases the model too."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import anyio
from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStream(StreamingResponse):
    def __init__(self, events: Iterator[str], cancel: threading.Event) -> None:
        self.events = events
        self.cancel = cancel
        super().__init__(events, media_type="text/event-stream")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def listen() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.cancel.set()  # the model stops at its next token

            group.start_soon(listen)
            try:
                await super().__call__(scope, receive, send)
            except ClientDisconnect:  # a send failed: the client is gone, and the model was stopped
                pass
            finally:
                group.cancel_scope.cancel()

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            self.cancel.set()
            # Shielded: a cancelled stream still waits for the model to stop.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(closing, self.events)


def closing(events: Iterator[object]) -> None:
    """Close a generator (a no-op for a finished one or a plain iterator)."""
    close = getattr(events, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError):  # "already executing": never, the reader waits for each step
            close()

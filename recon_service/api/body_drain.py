"""Answer only after the request body has been read, so every client can read an early refusal.

A route may answer before it has read the body: a 401/403 from the auth dependency arrives before the
submission handler reads a byte, and a 422 for a bad form field stops reading in the middle of an upload.
When the client asked for ``Connection: close`` (Python's ``urllib.request`` always does), uvicorn closes the
socket right after the answer while the client is still sending; the kernel then resets the connection
because unread bytes are pending, and the reset throws away the answer the client had not read yet.

:class:`DrainBody` wraps the app: when a response starts while the request body is not read to its end, it
reads and drops the rest first (nothing is stored), up to ``max_bytes`` for the whole body and ``timeout_s``
seconds. A body declared larger than that, one that turns out larger, or one the client holds back behind
``Expect: 100-continue`` is not read: the answer then carries ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOG = logging.getLogger(__name__)
DRAIN_TIMEOUT_S = 60.0


class DrainBody:
    """ASGI middleware: read what is left of the request body before the response starts."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = DRAIN_TIMEOUT_S):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        declared = headers.get(b"content-length", b"").strip()
        chunked = b"transfer-encoding" in headers
        if not chunked and (not declared.isdigit() or int(declared) == 0):  # no body at all
            await self.app(scope, receive, send)
            return
        waits_for_continue = headers.get(b"expect", b"").lower() == b"100-continue"
        state = _BodyState()

        async def tracked_receive() -> Message:
            state.asked = True
            message = await receive()
            state.see(message)
            return message

        async def drained_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not state.done:
                complete = False
                if not (waits_for_continue and not state.asked) and not (
                        declared.isdigit() and int(declared) > self.max_bytes):
                    complete = await self._drain(receive, state)
                if not complete:
                    message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, tracked_receive, drained_send)

    async def _drain(self, receive: Receive, state: _BodyState) -> bool:
        """Read and drop the rest of the body; True when it was read to its end (or the client left)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                while not state.done and state.received <= self.max_bytes:
                    state.see(await receive())
        except TimeoutError:
            LOG.info("gave up reading a refused request body after %.0f s", self.timeout_s)
        return state.done


class _BodyState:
    def __init__(self) -> None:
        self.received = 0
        self.done = False  # the last body chunk arrived, or the client disconnected
        self.asked = False  # the app called receive() (uvicorn then sent 100 Continue if it was expected)

    def see(self, message: Message) -> None:
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self.done = True

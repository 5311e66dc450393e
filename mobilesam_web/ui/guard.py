"""An ASGI guard in front of every route of the public server (Gradio's and ours under /msw).

- Body size: a request body on any route but Gradio's upload route (which enforces
  `max_upload_mb` itself while the upload streams in) may hold at most `max_body_kb`. A larger
  Content-Length is answered 413 before any of the body is read; a body without one (chunked)
  is counted while it streams and answered 413 once over the limit. Nothing is held beyond the
  limit: the server discards the rest of the body as it arrives.
- Headers: `X-Content-Type-Options: nosniff` on every response, and
  `Cache-Control: private, no-store` on Gradio's file route (a visitor's uploads and exports).
- Fair queueing: Gradio's queue (64 events) is shared by everyone, so one client could fill it
  and every other visitor would get "Queue is full". A queue join beyond `max_queued_per_session`
  events waiting or running for its session_hash, or `max_queued_per_client` for its client
  address, is answered 429 and never reaches the queue. The counts come from Gradio's own queue
  state (`Queue.event_ids_to_events`: every event from its join until its run ends or its page
  goes away), plus the joins this guard has let through that Gradio has not answered yet.
- Upload rate: at most `uploads_per_minute` uploads per client address in any 60 s.

A limit of 0 (or less) turns that check off. Errors are JSON `{"detail": message}`, which
Gradio's page and clients show as the error message.

The client address is the connection's peer; behind a reverse proxy (a Hugging Face Space:
every request comes from the proxy, which sets X-Forwarded-For) set MOBILESAM_TRUST_PROXY=1 to
use the first X-Forwarded-For entry instead. Only do so behind a proxy: otherwise a client
names its own address in that header.
"""

import asyncio
import json
import os
import re
from collections import Counter
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Tuple

from .rate_limits import RefusalLog, UploadRate
from .services import LIMIT_ENV, AppConfig

Scope = Dict[str, Any]
Message = Dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRUST_PROXY_ENV = "MOBILESAM_TRUST_PROXY"
UPLOAD_PATH = "/gradio_api/upload"
FILE_PREFIX = "/gradio_api/file="
# Every route that puts an event into Gradio's queue (the page's join and the REST API's calls).
QUEUE_JOIN = re.compile(r"/gradio_api/(queue/join|call/(v2/)?[^/]+/?)")


def trust_proxy_from_env() -> bool:
    return os.environ.get(TRUST_PROXY_ENV, "").strip().lower() in ("1", "true", "yes")


def client_address(scope: Scope, trust_proxy: bool = False) -> str:
    """The client's address: the connection's peer, or (behind a trusted proxy) the first
    X-Forwarded-For entry."""
    if trust_proxy:
        for name, value in scope.get("headers") or ():
            if name.lower() == b"x-forwarded-for":
                first = value.decode("latin-1").split(",")[0].strip()
                if first:
                    return first
    peer = scope.get("client")
    return str(peer[0]) if peer else "unknown"


def route_path(scope: Scope) -> str:
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def content_length(scope: Scope) -> Optional[int]:
    for name, value in scope.get("headers") or ():
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server's HTTP parser refuses it anyway
    return None


def limit_env(field: str) -> str:
    return "$" + LIMIT_ENV[field][0]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class LimitedBody:
    """`receive` that counts the body's bytes and raises BodyTooLarge once they pass `limit`
    (and at every later call: the rest of the body is never asked for)."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.seen = 0
        self.exceeded = False

    async def receive(self) -> Message:
        if self.exceeded:
            raise BodyTooLarge()
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.limit > 0 and self.seen > self.limit:
                self.exceeded = True
                raise BodyTooLarge()
        return message

    async def read_all(self) -> bytes:
        chunks: List[bytes] = []
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that gives the already-read body once, then the connection's own messages
    (so the app still learns of a disconnect)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def join_fields(body: bytes) -> Tuple[Optional[str], Any]:
    """(session_hash, fn_index) of a queue join's JSON body, None where it names none."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None, None  # Gradio answers the malformed body itself
    if not isinstance(data, dict):
        return None, None
    session = data.get("session_hash")
    return (session if isinstance(session, str) else None), data.get("fn_index")


async def reply(send: Send, status: int, message: str, headers: Iterable[Tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def with_headers(send: Send, no_store: bool) -> Send:
    """`send` that adds nosniff to the response (and, for a visitor's files, no-store in place
    of the app's Cache-Control)."""
    replaced = {b"x-content-type-options"} | ({b"cache-control"} if no_store else set())

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers") or () if k.lower() not in replaced]
            headers.append((b"x-content-type-options", b"nosniff"))
            if no_store:
                headers.append((b"cache-control", b"private, no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return sending


SETTLE_STEPS, SETTLE_S = 20, 0.05  # how long a join over the limit waits for finished events to go


class QueueShare:
    """Events each session and each client address has waiting or running in Gradio's queue."""

    def __init__(self, blocks: Any, per_session: int, per_client: int, trust_proxy: bool = False) -> None:
        self.blocks = blocks
        self.per_session = per_session
        self.per_client = per_client
        self.trust_proxy = trust_proxy
        # joins let through whose answer has not been sent: their events may not be in the
        # queue yet, and concurrent joins must not all pass one check
        self._joining_sessions: Counter = Counter()
        self._joining_clients: Counter = Counter()

    def _held(self) -> List[Any]:
        queue = getattr(self.blocks, "_queue", None)
        return list(queue.event_ids_to_events.values()) if queue is not None else []

    def _client_of(self, event: Any) -> Optional[str]:
        request = getattr(event, "request", None)
        scope = getattr(request, "scope", None)
        return client_address(scope, self.trust_proxy) if scope is not None else None

    def refusal(self, session: Optional[str], client: str) -> Optional[str]:
        """Why a join from `session` / `client` may not enter the queue now; None if it may."""
        events = self._held()
        if session is not None and self.per_session > 0:
            n = sum(e.session_hash == session for e in events) + self._joining_sessions[session]
            if n >= self.per_session:
                return (
                    f"Too many requests waiting from this page ({n}; at most {self.per_session}, "
                    f"{limit_env('max_queued_per_session')}): wait for the previous ones to finish."
                )
        if self.per_client > 0:
            n = sum(self._client_of(e) == client for e in events) + self._joining_clients[client]
            if n >= self.per_client:
                return (
                    f"Too many requests waiting from this address ({n}; at most {self.per_client}, "
                    f"{limit_env('max_queued_per_client')}): wait for the previous ones to finish."
                )
        return None

    def enter(self, session: Optional[str], client: str) -> None:
        if session is not None:
            self._joining_sessions[session] += 1
        self._joining_clients[client] += 1

    def leave(self, session: Optional[str], client: str) -> None:
        for counts, key in ((self._joining_sessions, session), (self._joining_clients, client)):
            if key is not None:
                counts[key] -= 1
                if counts[key] <= 0:
                    del counts[key]  # keep the counters as small as the traffic in flight


class Guard:
    """Pure ASGI middleware (it sees the body as it streams; nothing is buffered but a queue
    join's body, which is at most `max_body_kb`). `blocks`: the Gradio app whose queue is shared."""

    def __init__(self, app: ASGIApp, blocks: Any, config: AppConfig, trust_proxy: Optional[bool] = None) -> None:
        self.app = app
        self.config = config
        self.max_body = int(config.max_body_kb * 1024)
        self.trust_proxy = trust_proxy_from_env() if trust_proxy is None else trust_proxy
        self.queue = QueueShare(blocks, config.max_queued_per_session, config.max_queued_per_client, self.trust_proxy)
        self.uploads = UploadRate(config.uploads_per_minute)
        self.refusals = RefusalLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        post = scope.get("method") == "POST"
        client = client_address(scope, self.trust_proxy)
        send = with_headers(send, no_store=path.startswith(FILE_PREFIX))
        if post and path == UPLOAD_PATH:
            await self._upload(scope, receive, send, client)
            return
        declared = content_length(scope)
        if self.max_body > 0 and declared is not None and declared > self.max_body:
            await reply(send, 413, self._too_large())
            return
        body = LimitedBody(receive, self.max_body)
        if post and QUEUE_JOIN.fullmatch(path):
            await self._join(scope, body, send, client)
        else:
            await self._forward(scope, body, send)

    def _too_large(self) -> str:
        return (
            f"Request body too large: at most {self.config.max_body_kb:g} KB ({limit_env('max_body_kb')}) "
            f"on this route; send files through {UPLOAD_PATH}."
        )

    async def _upload(self, scope: Scope, receive: Receive, send: Send, client: str) -> None:
        wait = self.uploads.wait_s(client)
        if wait > 0:
            message = (
                f"Too many uploads from this address: at most {self.uploads.per_minute} a minute "
                f"({limit_env('uploads_per_minute')}); try again in {wait:.0f} s."
            )
            self.refusals.refused(client, "an upload", message)
            await reply(send, 429, message, [(b"retry-after", str(int(wait) + 1).encode())])
            return
        await self.app(scope, receive, send)  # Gradio limits the upload's size as it streams in

    async def _forward(self, scope: Scope, body: LimitedBody, send: Send) -> None:
        """Run the app; if the body passes the limit while the app reads it, its answer (an
        error about the cut-off body) is dropped and ours sent instead."""
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if body.exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, body.receive, sending)
        except Exception:
            if not body.exceeded:
                raise
        if body.exceeded and not started:
            await reply(send, 413, self._too_large())

    async def _join(self, scope: Scope, body: LimitedBody, send: Send, client: str) -> None:
        try:
            raw = await body.read_all()
        except BodyTooLarge:
            await reply(send, 413, self._too_large())
            return
        except ClientGone:
            return
        session, fn_index = join_fields(raw)
        fns = getattr(self.queue.blocks, "fns", None)
        if isinstance(fn_index, int) and isinstance(fns, dict) and fn_index not in fns:
            # Gradio would answer HTTP 500 with a traceback in the log (KeyError)
            await reply(send, 422, f"there is no event number {fn_index} in this app")
            return
        refusal = self.queue.refusal(session, client)
        # Gradio answers an event before it forgets it (cleanup runs after the result is sent):
        # a page's next event, sent at once, may find its last one still counted for a moment.
        for _ in range(SETTLE_STEPS):
            if refusal is None:
                break
            await asyncio.sleep(SETTLE_S)
            refusal = self.queue.refusal(session, client)
        if refusal is not None:
            self.refusals.refused(client, "a queue join", refusal)
            await reply(send, 429, refusal)
            return
        self.queue.enter(session, client)
        joining = True

        def joined() -> None:
            nonlocal joining
            if joining:
                joining = False
                self.queue.leave(session, client)

        async def sending(message: Message) -> None:
            # Gradio answers a join once its event is in the queue, where it is counted from now
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                joined()
            await send(message)

        try:
            await self.app(scope, replay(raw, body.receive), sending)
        finally:
            joined()


def guard_middleware(blocks: Any, config: AppConfig) -> Any:
    """The guard as a Starlette `Middleware` entry (for `app_kwargs={"middleware": [...]}` or
    `FastAPI(middleware=[...])`)."""
    from starlette.middleware import Middleware

    return Middleware(Guard, blocks=blocks, config=config)

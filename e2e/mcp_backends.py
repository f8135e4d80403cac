"""MCP servers written with the Python MCP SDK, run as a child process by test_path_proxy.py.

    python3 mcp_backends.py PORT

One Starlette app serves both transports on 127.0.0.1:PORT, each taking identity from the URL path only:
  - OpenMemory style SSE: GET /mcp/{client_name}/sse/{user_id} (SseServerTransport, message POSTs at
    /mcp/messages/?session_id=...), identity handed to tools through a context variable as OpenMemory does;
  - Streamable HTTP: /notes/{user_id}/mcp (POST answered with SSE, GET stream, DELETE) and /json/{user_id}/mcp
    (POST answered with JSON).
GET /stats reports what the backend saw (paths, identity headers, open/closed SSE streams, event send times).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import sys
import threading
import time

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

USER = contextvars.ContextVar("user_id", default="")
CLIENT = contextvars.ContextVar("client_name", default="")
STATS = {"sse_opened": 0, "sse_closed": 0, "sse_paths": [], "posts": [], "streamable_paths": [], "headers": [],
         "sent": {}}
LOCK = threading.Lock()
# The gateway (not a browser) is the only client: DNS rebinding protection would only check the gateway's Host.
SECURITY = TransportSecuritySettings(enable_dns_rebinding_protection=False)

server = MCPServer("path-identity-backend")


def identity(ctx: Context) -> dict:
    """The caller as the URL said: the SSE context variable, else the Streamable HTTP request path."""
    if USER.get():
        return {"user_id": USER.get(), "client_name": CLIENT.get()}
    request = ctx.request_context.request
    parts = request.url.path.strip("/").split("/") if request is not None else []
    return {"user_id": parts[1] if len(parts) >= 3 else "", "client_name": ""}


@server.tool()
async def whoami(ctx: Context) -> str:
    """Returns the identity the backend read from its URL path."""
    return json.dumps(identity(ctx))


@server.tool()
async def ticks(count: int, interval: float, tag: str, ctx: Context) -> str:
    """Sends `count` log notifications `interval` seconds apart, recording the monotonic time just before each."""
    for i in range(count):
        sent = time.monotonic()
        with LOCK:
            STATS["sent"].setdefault(tag, []).append(sent)
        await ctx.info(json.dumps({"tag": tag, "i": i, "sent": sent}))
        if i < count - 1:
            await anyio.sleep(interval)
    return "done"


sse = SseServerTransport("/mcp/messages/", security_settings=SECURITY)


SESSIONS: dict = {}  # session_id -> (user_id, client_name), learnt from the endpoint event this backend sends


async def handle_sse(request: Request) -> Response:
    user, client = request.path_params["user_id"], request.path_params["client_name"]
    USER.set(user)
    CLIENT.set(client)

    async def send(message):
        # The SDK carries the *poster's* context to tool handlers, so the identity of the SSE path is looked up by
        # session id when a message arrives (OpenMemory keeps the same mapping).
        body = message.get("body", b"") if message["type"] == "http.response.body" else b""
        if b"session_id=" in body:
            session = body.split(b"session_id=", 1)[1].split(b"\r", 1)[0].split(b"\n", 1)[0].decode()
            SESSIONS[session] = (user, client)
        await request._send(message)

    with LOCK:
        STATS["sse_opened"] += 1
        STATS["sse_paths"].append(request.url.path)
        STATS["headers"].append([[k, v] for k, v in request.headers.items()])
    try:
        async with sse.connect_sse(request.scope, request.receive, send) as streams:
            await server._lowlevel_server.run(streams[0], streams[1],
                                              server._lowlevel_server.create_initialization_options())
    finally:
        with LOCK:
            STATS["sse_closed"] += 1
    return Response()


async def handle_messages(scope, receive, send):
    query = dict(part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part)
    user, client = SESSIONS.get(query.get("session_id", ""), ("", ""))
    USER.set(user)
    CLIENT.set(client)
    with LOCK:
        STATS["posts"].append({"path": scope["path"], "query": scope["query_string"].decode(),
                               "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]]})
    await sse.handle_post_message(scope, receive, send)


notes = StreamableHTTPSessionManager(app=server._lowlevel_server, security_settings=SECURITY)
notes_json = StreamableHTTPSessionManager(app=server._lowlevel_server, json_response=True, security_settings=SECURITY)


def streamable(manager: StreamableHTTPSessionManager):
    async def app(scope, receive, send):
        with LOCK:
            STATS["streamable_paths"].append(f"{scope['method']} {scope['path']}")
            STATS["headers"].append([[k.decode(), v.decode()] for k, v in scope["headers"]])
        await manager.handle_request(scope, receive, send)
    return app


class PathApp:
    """Routes /notes/{user}/mcp and /json/{user}/mcp (any method) to the session managers as raw ASGI apps."""

    def __init__(self, fallback):
        self.fallback = fallback
        self.notes = streamable(notes)
        self.json = streamable(notes_json)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            parts = scope["path"].strip("/").split("/")
            if len(parts) == 3 and parts[2] == "mcp" and parts[0] in ("notes", "json"):
                await (self.notes if parts[0] == "notes" else self.json)(scope, receive, send)
                return
        await self.fallback(scope, receive, send)


async def stats(_: Request) -> Response:
    with LOCK:
        return JSONResponse(STATS)


async def health(_: Request) -> Response:
    return Response("ok")


@contextlib.asynccontextmanager
async def lifespan(_app):
    async with notes.run(), notes_json.run():
        yield


starlette = Starlette(routes=[
    Route("/", health),
    Route("/stats", stats),
    Route("/mcp/{client_name}/sse/{user_id}", handle_sse, methods=["GET"]),
    Mount("/mcp/messages/", app=handle_messages),
], lifespan=lifespan)
app = PathApp(starlette)

if __name__ == "__main__":
    port = int(sys.argv[1])
    print(f"mcp backend listening on 127.0.0.1:{port}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")

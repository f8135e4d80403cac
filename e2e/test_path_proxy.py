"""End to end: path-style backends behind the gateway's own reverse proxy (policy `backend.style: path`).

Real Traefik → real authgateway → MCP servers written with the MCP Python SDK (mcp_backends.py, a child process),
driven by the SDK's own clients. The gateway authenticates the client's API key or token, writes the identity
into the upstream path, rewrites the SSE `endpoint` event and binds each MCP session to its principal.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

import e2e_support as s
from conftest import child_env

POLICY = s.E2E_DIR / "path_proxy_policy.yaml"
BACKEND_SCRIPT = s.E2E_DIR / "mcp_backends.py"
ENDPOINT_PREFIX = "/openmemory/sse/mcp/messages/?session_id="


# --------------------------------------------------------------------------------------------------------------
# Fixture: issuer, stand-in and SDK backends, gateway, Traefik


@dataclass
class McpBackend:
    processes: s.Processes
    workdir: Path
    name: str
    port: int = 0
    child: s.Child = None

    @property
    def url(self) -> str:
        return f"http://{s.LOOPBACK}:{self.port}"

    def start(self) -> None:
        self.port = self.port or s.free_port()
        self.child = self.processes.start(self.name, [sys.executable, str(BACKEND_SCRIPT), str(self.port)],
                                          self.workdir / f"{self.name}.log", cwd=s.E2E_DIR)
        s.wait_until(lambda: self.answers(), 20, what=f"{self.name} to answer")

    def stop(self) -> None:
        self.processes.stop(self.child)

    def answers(self) -> bool:
        try:
            return s.request(self.port, "/", host=f"{s.LOOPBACK}:{self.port}", timeout=2).status == 200
        except OSError:
            return False

    def stats(self) -> dict:
        return s.request(self.port, "/stats", host=f"{s.LOOPBACK}:{self.port}").json()


@dataclass
class ProxyStack:
    gateway_port: int
    traefik_port: int
    gateway: s.Child
    backend: McpBackend
    flaky: McpBackend
    issuer: s.TestIssuer
    authctl: Path
    db: Path
    keys: dict = field(default_factory=dict)

    def key(self, name: str) -> str:
        return self.keys[name]["key"]


@pytest.fixture(scope="module")
def proxy_stack(request, binaries, tmp_path_factory) -> ProxyStack:
    gateway_bin, authctl, traefik_bin = binaries
    workdir = tmp_path_factory.mktemp("path-proxy")
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)
    issuer = s.TestIssuer()
    request.addfinalizer(issuer.close)
    stand_in = s.Backend("openmemory", s.SSEHandler)
    request.addfinalizer(stand_in.close)
    backend = McpBackend(processes, workdir, "mcp-backend")
    backend.start()
    flaky = McpBackend(processes, workdir, "mcp-flaky")
    flaky.start()
    s.ACTIVE_LOGS.append(("mcp-backend", backend.child.log_path))

    env = child_env({"CORP_ISSUER": issuer.issuer, "CORP_JWKS_URL": issuer.jwks_url, "OPENMEMORY_URL": stand_in.url,
                     "MCP_BACKEND_URL": backend.url, "FLAKY_URL": flaky.url})
    s.run_checked([str(authctl), "policy", "check", str(POLICY)], env=env)
    db = workdir / "authgateway.sqlite"
    log = workdir / "authgateway.log"
    s.ACTIVE_LOGS.append(("authgateway (path proxy)", log))
    gateway, gateway_port = s.start_gateway(processes, gateway_bin, POLICY, db, env, log)

    keys = {
        "alice": s.issue_key(authctl, db, "alice", "memory", name="e2e-laptop"),
        "bob": s.issue_key(authctl, db, "bob", "memory", name="e2e-bob"),
        "alice_no_scope": s.issue_key(authctl, db, "alice", "ffmpeg", name="e2e-laptop"),
        "dotdot": s.issue_key(authctl, db, "../admin", "memory", name="e2e-laptop"),
        "encoded": s.issue_key(authctl, db, "a%2Fb", "memory", name="e2e-laptop"),
        "dotdot_client": s.issue_key(authctl, db, "carol", "memory", name="../x"),
        "slash": s.issue_key(authctl, db, "a/b", "memory", name="e2e-laptop"),
    }

    dynamic_dir = workdir / "dynamic"
    dynamic_dir.mkdir()
    dynamic = s.run_checked([str(authctl), "traefik-config", "--policy", str(POLICY),
                             "--gateway-url", f"http://127.0.0.1:{gateway_port}"], env=env)
    (dynamic_dir / "authgateway.yaml").write_text(dynamic)
    static = s.run_checked([str(authctl), "traefik-config", "--static"], env=env)
    providers = f"providers:\n  file:\n    directory: \"{dynamic_dir}\"\n    watch: true\n"
    traefik, traefik_port = s.start_traefik(processes, traefik_bin, workdir, static, providers,
                                            probe_path="/notes/mcp")
    s.ACTIVE_LOGS.append(("traefik (path proxy)", traefik.log_path))
    return ProxyStack(gateway_port, traefik_port, gateway, backend, flaky, issuer, authctl, db, keys)


# --------------------------------------------------------------------------------------------------------------
# Helpers


def mcp_headers(credential: tuple) -> dict:
    """Client headers: the credential plus the public host name Traefik and the routes match on."""
    return {"Host": s.HOST, credential[0]: credential[1]}


def api_key(stack: ProxyStack, name: str) -> tuple:
    return ("X-API-Key", stack.key(name))


class RawStream:
    """An SSE GET read line by line on its own socket, so a test can act between events and close it at will."""

    def __init__(self, port: int, path: str, headers=(), timeout: float = s.SOCKET_TIMEOUT):
        self.conn = http.client.HTTPConnection(s.LOOPBACK, port, timeout=timeout)
        self.conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        self.conn.putheader("Host", s.HOST)
        self.conn.putheader("Accept", "text/event-stream")
        for name, value in headers:
            self.conn.putheader(name, value)
        self.conn.endheaders()
        self.response = self.conn.getresponse()
        self.status = self.response.status

    def next_event(self) -> tuple | None:
        """(event, data) of the next event; None when the stream ended."""
        event, data = "", []
        while True:
            line = self.response.readline()
            if not line:
                return None
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text == "":
                if event or data:
                    return event, "\n".join(data)
                continue
            if text.startswith("event:"):
                event = text[6:].strip()
            elif text.startswith("data:"):
                data.append(text[5:].strip())

    def close(self) -> None:
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def post_json(port: int, path: str, payload: dict, headers=()) -> s.Reply:
    return s.request(port, path, [("Content-Type", "application/json"), *headers], method="POST",
                     body=json.dumps(payload).encode())


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                         "clientInfo": {"name": "e2e", "version": "1"}}}


async def sse_session(port: int, headers: dict, work):
    """Runs `work(session)` in an MCP SDK session over the SSE transport at /openmemory/sse."""
    async with sse_client(f"http://{s.LOOPBACK}:{port}/openmemory/sse", headers=headers, timeout=10) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def tool_text(result) -> str:
    return result.content[0].text


# --------------------------------------------------------------------------------------------------------------
# SSE (OpenMemory style) through Traefik


def test_sdk_sse_client_lists_and_calls_tools_and_backend_sees_identity_in_path(proxy_stack):
    stack = proxy_stack

    async def work(session):
        tools = await session.list_tools()
        who = json.loads(tool_text(await session.call_tool("whoami", {})))
        return sorted(tool.name for tool in tools.tools), who

    headers = mcp_headers(api_key(stack, "alice"))
    headers["X-Auth-Subject"] = "bob"  # a spoofed identity header: never reaches the backend
    names, who = anyio.run(sse_session, stack.traefik_port, headers, work)
    assert names == ["ticks", "whoami"]
    assert who == {"user_id": "alice", "client_name": "e2e-laptop"}
    stats = stack.backend.stats()
    assert "/mcp/e2e-laptop/sse/alice" in stats["sse_paths"]
    assert stats["posts"] and all(post["path"] == "/mcp/messages/" for post in stats["posts"])
    for seen in stats["headers"] + [post["headers"] for post in stats["posts"]]:
        names_seen = {name.lower() for name, _ in seen}
        assert "x-api-key" not in names_seen and "authorization" not in names_seen
        assert [v for n, v in seen if n.lower() == "x-auth-subject"] in ([], ["alice"])


def test_sdk_sse_client_with_jwt_gets_its_subject_and_client_in_the_path(proxy_stack):
    stack = proxy_stack
    token = stack.issuer.token(sub="dave", aud="https://mcp.example.com/openmemory", scope="memory")

    async def work(session):
        return json.loads(tool_text(await session.call_tool("whoami", {})))

    who = anyio.run(sse_session, stack.traefik_port, mcp_headers(s.bearer(token)), work)
    assert who == {"user_id": "dave", "client_name": "e2e-mcp-client"}  # azp is the client


def test_endpoint_event_announces_the_public_prefix(proxy_stack):
    stream = RawStream(proxy_stack.traefik_port, "/openmemory/sse", [api_key(proxy_stack, "alice")])
    try:
        assert stream.status == 200
        event, data = stream.next_event()
        assert event == "endpoint"
        assert data.startswith(ENDPOINT_PREFIX), data
    finally:
        stream.close()


def test_events_arrive_as_they_are_sent(proxy_stack):
    """Each log notification reaches the client before the backend sends the next (no buffering anywhere)."""
    stack = proxy_stack
    arrivals: list = []

    async def on_log(params):
        data = json.loads(params.data)
        arrivals.append((data["i"], time.monotonic()))

    async def run():
        url = f"http://{s.LOOPBACK}:{stack.traefik_port}/openmemory/sse"
        async with sse_client(url, headers=mcp_headers(api_key(stack, "alice")), timeout=10) as (read, write):
            async with ClientSession(read, write, logging_callback=on_log) as session:
                await session.initialize()
                await session.call_tool("ticks", {"count": 4, "interval": 0.4, "tag": "arrival"})

    anyio.run(run)
    sent = stack.backend.stats()["sent"]["arrival"]
    assert [i for i, _ in arrivals] == [0, 1, 2, 3]
    for i in range(3):
        assert arrivals[i][1] < sent[i + 1], f"event {i} arrived after event {i + 1} was sent: {arrivals} vs {sent}"


def test_bob_cannot_post_into_alices_session_and_no_credential_is_401(proxy_stack):
    stack = proxy_stack
    stream = RawStream(stack.traefik_port, "/openmemory/sse", [api_key(stack, "alice")])
    try:
        _, endpoint = stream.next_event()
        posts_before = len(stack.backend.stats()["posts"])
        as_bob = post_json(stack.traefik_port, endpoint, INITIALIZE, [api_key(stack, "bob")])
        assert as_bob.status == 403, as_bob
        assert as_bob.json()["error"] == "access_denied"
        anonymous = post_json(stack.traefik_port, endpoint, INITIALIZE)
        assert anonymous.status == 401, anonymous
        assert "Bearer" in (anonymous.header("WWW-Authenticate") or "")
        assert len(stack.backend.stats()["posts"]) == posts_before, "a refused POST reached the backend"
        as_alice = post_json(stack.traefik_port, endpoint, INITIALIZE, [api_key(stack, "alice")])
        assert as_alice.status == 202, as_alice
    finally:
        stream.close()


def test_finding_4_a_second_session_id_spelling_is_refused_and_never_reaches_starlette(proxy_stack):
    """`?session_id=OWN&session%5Fid=VICTIM`: Starlette decodes the name and keeps the last value."""
    stack = proxy_stack
    alice = RawStream(stack.traefik_port, "/openmemory/sse", [api_key(stack, "alice")])
    bob = RawStream(stack.traefik_port, "/openmemory/sse", [api_key(stack, "bob")])
    try:
        _, own = alice.next_event()
        _, victim = bob.next_event()
        victim_id = victim.split("session_id=", 1)[1]
        posts_before = len(stack.backend.stats()["posts"])
        for spelling in ("session%5Fid", "session%5fid", "%73ession_id"):
            reply = post_json(stack.traefik_port, f"{own}&{spelling}={victim_id}", INITIALIZE, [api_key(stack, "alice")])
            assert reply.status == 400, (spelling, reply)
        assert len(stack.backend.stats()["posts"]) == posts_before, "a refused POST reached the backend"
        own_id = own.split("session_id=", 1)[1]
        encoded = post_json(stack.traefik_port, f"/openmemory/sse/mcp/messages/?session%5Fid={own_id}", INITIALIZE,
                            [api_key(stack, "alice")])
        assert encoded.status == 202, encoded
        assert stack.backend.stats()["posts"][-1]["query"] == f"session_id={own_id}"
    finally:
        alice.close()
        bob.close()


def test_session_binding_ends_with_the_stream(proxy_stack):
    stack = proxy_stack
    stream = RawStream(stack.traefik_port, "/openmemory/sse", [api_key(stack, "alice")])
    _, endpoint = stream.next_event()
    stream.close()
    reply = s.wait_until(lambda: (r := post_json(stack.traefik_port, endpoint, INITIALIZE, [api_key(stack, "alice")]))
                         .status == 404 and r, 20, what="the binding to end with its stream")
    assert reply.json()["error"] == "unknown_session"


@pytest.mark.parametrize("target", [
    "/openmemory/sse/mcp/e2e-laptop/sse/bob",               # an upstream path the backend never announced
    "/openmemory/sse/mcp/messages/",                        # no session_id
    "/openmemory/sse/mcp/messages/?session_id=0123456789abcdef0123456789abcdef",  # never bound
])
def test_paths_below_the_prefix_are_only_announced_message_urls(proxy_stack, target):
    reply = post_json(proxy_stack.traefik_port, target, INITIALIZE, [api_key(proxy_stack, "alice")])
    assert reply.status == 404, reply
    assert "/mcp/e2e-laptop/sse/bob" not in proxy_stack.backend.stats()["sse_paths"]


def test_missing_scope_is_403_and_never_proxied(proxy_stack):
    before = len(proxy_stack.backend.stats()["sse_paths"])
    reply = s.request(proxy_stack.traefik_port, "/openmemory/sse", [api_key(proxy_stack, "alice_no_scope")])
    assert reply.status == 403 and reply.json()["error"] == "insufficient_scope"
    assert len(proxy_stack.backend.stats()["sse_paths"]) == before


def test_forward_auth_openmemory_route_keeps_working_beside_the_proxy(proxy_stack):
    stack = proxy_stack
    status, _, events = s.read_sse(stack.traefik_port, "/openmemory/claude/sse/alice", [api_key(stack, "alice")])
    assert status == 200 and len(events) == s.SSE_EVENTS
    assert json.loads(events[0].data)["subject"] == "alice"
    assert s.request(stack.traefik_port, "/openmemory/claude/sse/bob", [api_key(stack, "alice")]).status == 403


# --------------------------------------------------------------------------------------------------------------
# Identity values in the path


@pytest.mark.parametrize("key", ["dotdot", "encoded", "slash", "dotdot_client"])
def test_unsafe_identity_values_are_refused_and_never_proxied(proxy_stack, key):
    before = proxy_stack.backend.stats()["sse_paths"]
    reply = s.request(proxy_stack.traefik_port, "/openmemory/sse", [api_key(proxy_stack, key)])
    assert reply.status == 403, reply
    assert proxy_stack.backend.stats()["sse_paths"] == before


@pytest.mark.parametrize("subject", ["a\u0001b", "a\u0085b", "x" * 300])
def test_jwt_subjects_with_control_characters_or_too_long_are_refused(proxy_stack, subject):
    token = proxy_stack.issuer.token(sub=subject, aud="https://mcp.example.com/openmemory", scope="memory")
    before = proxy_stack.backend.stats()["sse_paths"]
    reply = s.request(proxy_stack.traefik_port, "/openmemory/sse", [s.bearer(token)])
    assert reply.status in (401, 403), reply
    assert proxy_stack.backend.stats()["sse_paths"] == before


# --------------------------------------------------------------------------------------------------------------
# Streamable HTTP


async def streamable_session(port: int, path: str, headers: dict, work):
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(10, read=60)) as http:
        async with streamable_http_client(f"http://{s.LOOPBACK}:{port}{path}", http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)


@pytest.mark.parametrize("path,upstream", [("/notes/mcp", "/notes/alice/mcp"), ("/notes-json/mcp", "/json/alice/mcp")])
def test_sdk_streamable_http_client_through_traefik(proxy_stack, path, upstream):
    stack = proxy_stack

    async def work(session):
        tools = await session.list_tools()
        return sorted(t.name for t in tools.tools), json.loads(tool_text(await session.call_tool("whoami", {})))

    names, who = anyio.run(streamable_session, stack.traefik_port, path, mcp_headers(api_key(stack, "alice")), work)
    assert names == ["ticks", "whoami"]
    assert who["user_id"] == "alice"
    seen = stack.backend.stats()["streamable_paths"]
    assert f"POST {upstream}" in seen and f"DELETE {upstream}" in seen


def test_streamable_session_is_bound_to_its_principal_and_ends_with_delete(proxy_stack):
    stack = proxy_stack
    accept = ("Accept", "application/json, text/event-stream")
    opened = post_json(stack.traefik_port, "/notes-json/mcp", INITIALIZE, [api_key(stack, "alice"), accept])
    assert opened.status == 200, opened
    session = opened.header("Mcp-Session-Id")
    assert session
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    as_bob = post_json(stack.traefik_port, "/notes-json/mcp", ping, [api_key(stack, "bob"), accept, ("Mcp-Session-Id", session)])
    assert as_bob.status == 403, as_bob
    anonymous = post_json(stack.traefik_port, "/notes-json/mcp", ping, [accept, ("Mcp-Session-Id", session)])
    assert anonymous.status == 401, anonymous
    unknown = post_json(stack.traefik_port, "/notes-json/mcp", ping, [api_key(stack, "alice"), accept, ("Mcp-Session-Id", "f" * 32)])
    assert unknown.status == 404, unknown
    deleted = s.request(stack.traefik_port, "/notes-json/mcp", [api_key(stack, "alice"), ("Mcp-Session-Id", session)], method="DELETE")
    assert deleted.status in (200, 204), deleted
    after = post_json(stack.traefik_port, "/notes-json/mcp", ping, [api_key(stack, "alice"), accept, ("Mcp-Session-Id", session)])
    assert after.status == 404, after


# --------------------------------------------------------------------------------------------------------------
# Disconnects, backend failure, circuit breaker


def test_client_disconnect_closes_the_upstream_stream(proxy_stack):
    stack = proxy_stack
    closed_before = stack.backend.stats()["sse_closed"]
    stream = RawStream(stack.traefik_port, "/openmemory/sse", [api_key(stack, "alice")])
    _, endpoint = stream.next_event()
    # The backend's stream is open: make it write (a tool call's notifications go out on the stream).
    post_json(stack.traefik_port, endpoint, INITIALIZE, [api_key(stack, "alice")])
    stream.close()
    s.wait_until(lambda: stack.backend.stats()["sse_closed"] > closed_before, 30,
                 what="the backend to see its SSE stream closed after the client went away")


def test_upstream_close_ends_the_client_stream_then_circuit_opens_and_closes_again(proxy_stack):
    stack = proxy_stack
    flaky = stack.flaky
    stream = RawStream(stack.traefik_port, "/flaky/sse", [api_key(stack, "alice")])
    event, data = stream.next_event()
    assert event == "endpoint" and data.startswith("/flaky/sse/mcp/messages/")
    flaky.stop()
    assert stream.next_event() is None, "the client stream must end when the backend goes away"
    stream.close()

    statuses = []

    def breaker_open():
        reply = s.request(stack.traefik_port, "/flaky/sse", [api_key(stack, "alice")])
        statuses.append(reply.status)
        return reply.status == 503 and reply

    reply = s.wait_until(breaker_open, 30, what="the circuit to open")
    assert reply.json()["error"] == "backend_unavailable" and reply.header("Retry-After")
    assert set(statuses) <= {502, 503}, statuses
    health = s.request(stack.gateway_port, "/healthz/backends", host=f"127.0.0.1:{stack.gateway_port}")
    flaky_state = {b["route"]: b for b in health.json()["backends"]}["flaky"]
    assert health.status == 503 and flaky_state["state"] in ("open", "half_open"), health

    flaky.start()  # same port

    def closed_again():
        body = s.request(stack.gateway_port, "/healthz/backends", host=f"127.0.0.1:{stack.gateway_port}").json()
        return {b["route"]: b for b in body["backends"]}["flaky"]["state"] == "closed"

    s.wait_until(closed_again, 30, what="the circuit to close once the backend answers")
    stream = RawStream(stack.traefik_port, "/flaky/sse", [api_key(stack, "alice")])
    try:
        assert stream.status == 200 and stream.next_event()[0] == "endpoint"
    finally:
        stream.close()


# --------------------------------------------------------------------------------------------------------------
# Soak: many streams leak neither file descriptors nor memory


def fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_and_close_streams(stack: ProxyStack, count: int) -> list:
    """Opens `count` SSE streams at once straight at the gateway, reads each endpoint event, then closes them all."""
    streams, errors = [], []
    lock = threading.Lock()

    def one():
        try:
            stream = RawStream(stack.gateway_port, "/openmemory/sse", [api_key(stack, "alice")], timeout=30)
            event = stream.next_event()
            with lock:
                streams.append((stream, event))
        except Exception as error:  # noqa: BLE001 - reported below
            with lock:
                errors.append(repr(error))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    events = [event for _, event in streams]
    for stream, _ in streams:
        stream.close()
    assert not errors, errors[:3]
    return events


def test_hundred_stream_soak_leaks_neither_file_descriptors_nor_memory(proxy_stack):
    stack = proxy_stack
    pid = stack.gateway.pid
    open_and_close_streams(stack, 20)  # warm-up: pools, caches and allocator arenas settle
    closed_target = stack.backend.stats()["sse_opened"]
    s.wait_until(lambda: stack.backend.stats()["sse_closed"] >= closed_target, 30, what="warm-up streams to close")
    fds_before, rss_before = fd_count(pid), rss_kib(pid)

    for _ in range(2):
        events = open_and_close_streams(stack, 100)
        assert len(events) == 100 and all(e and e[0] == "endpoint" for e in events)

    opened = stack.backend.stats()["sse_opened"]
    s.wait_until(lambda: stack.backend.stats()["sse_closed"] >= opened, 60,
                 what="every upstream stream to be closed after the clients left")
    s.wait_until(lambda: fd_count(pid) <= fds_before + 4, 60,
                 what=f"gateway file descriptors back to {fds_before} (+4), now {fd_count(pid)}")
    ratio = rss_kib(pid) / rss_before
    assert ratio < 2.0, f"gateway RSS grew {ratio:.2f}x over 200 streams ({rss_before} KiB before)"

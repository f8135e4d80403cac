"""Attack table (SECURITY.md, issue 12) cases at the proxy/gateway boundary, through real Traefik 3.7:

- WebSocket: an upgrade is decided like any request (401 without a credential, no 101, nothing reaches the backend;
  101 and frames both ways with a valid key; a revoked key cannot upgrade), against a real WebSocket server;
- T2: a client-sent `X-Forwarded-Prefix` (and its spellings) on a route with a stripPrefix middleware never changes
  the route decided, nor lets a request through;
- T8: probe user agents and health/metrics paths under a protected route are decided like any other request;
- T31: an API key in the query is not a credential, and no key (valid, invalid, revoked) is ever written to the
  gateway's log, even at `--log-level trace`.

Own gateway (policy e2e/policy_boundary.yaml, `--log-level trace`) and Traefik, so the shared stack is untouched.
"""

from __future__ import annotations

import json
import secrets
import threading

import pytest
import yaml

import e2e_support as s
from conftest import child_env
from websocket_support import WebSocketEcho, raw_upgrade_with_early_frame, ws_open, ws_refused

POLICY = s.E2E_DIR / "policy_boundary.yaml"
SITE_HOST = "site.example.com"
METADATA = "https://mcp.example.com/.well-known/oauth-protected-resource/"


# ----------------------------------------------------------------------------------------------------------------
# Stand-in backends: a WebSocket echo server (websocket_support.py) and an HTTP echo server, both recording


class RecordingEchoHandler(s.FfmpegHandler):
    """The ffmpeg echo stand-in, also recording the request line of everything that reaches it."""

    def _handle(self):
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.seen.append(self.path)  # type: ignore[attr-defined]
        super()._handle()

    def do_HEAD(self):
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.seen.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle


@pytest.fixture(scope="module")
def boundary(request, binaries, tmp_path_factory):
    gateway_bin, authctl, traefik_bin = binaries
    workdir = tmp_path_factory.mktemp("boundary")
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)
    ws = WebSocketEcho()
    request.addfinalizer(ws.close)
    echo = s.Backend("echo", RecordingEchoHandler, seen=[], lock=threading.Lock())
    request.addfinalizer(echo.close)
    env = child_env({"WS_URL": ws.url, "ECHO_URL": echo.url})
    s.run_checked([str(authctl), "policy", "check", str(POLICY)], env=env)

    db = workdir / "authgateway.sqlite"
    log = workdir / "authgateway.log"
    entry = ("authgateway (boundary, trace)", log)
    s.ACTIVE_LOGS.append(entry)
    request.addfinalizer(lambda: s.ACTIVE_LOGS.remove(entry))
    try:
        gateway, gateway_port = s.start_gateway(processes, gateway_bin, POLICY, db, env, log,
                                                extra_args=["--log-level", "trace"])
    except RuntimeError as error:
        pytest.fail(f"authgateway (boundary) did not start: {error}", pytrace=False)
    keys = {
        "ws": s.issue_key(authctl, db, "alice", "ws", name="e2e-ws"),
        "tools": s.issue_key(authctl, db, "alice", "tools", name="e2e-tools"),
        "admin": s.issue_key(authctl, db, "root", "admin", name="e2e-admin"),
        "site": s.issue_key(authctl, db, "alice", "site", name="e2e-site"),
    }

    dynamic_dir = workdir / "dynamic"
    dynamic_dir.mkdir()
    dynamic = s.run_checked([str(authctl), "traefik-config", "--policy", str(POLICY),
                             "--gateway-url", f"http://127.0.0.1:{gateway_port}"], env=env)
    (dynamic_dir / "routes.yaml").write_text(dynamic)
    static_snippet = s.run_checked([str(authctl), "traefik-config", "--static"], env=env)
    providers = f"providers:\n  file:\n    directory: \"{dynamic_dir}\"\n"
    try:
        traefik, traefik_port = s.start_traefik(processes, traefik_bin, workdir, static_snippet, providers,
                                                probe_path="/tools/x")
    except RuntimeError as error:
        pytest.fail(f"traefik (boundary) did not start: {error}\n--- dynamic config:\n{dynamic}", pytrace=False)
    traefik_entry = ("traefik (boundary)", traefik.log_path)
    s.ACTIVE_LOGS.append(traefik_entry)
    request.addfinalizer(lambda: s.ACTIVE_LOGS.remove(traefik_entry))
    return {"traefik_port": traefik_port, "gateway_port": gateway_port, "gateway": gateway, "authctl": authctl,
            "db": db, "env": env, "keys": keys, "ws": ws, "echo": echo, "dynamic": yaml.safe_load(dynamic)}


def get(boundary, path: str, headers=(), method: str = "GET", host: str = s.HOST) -> s.Reply:
    return s.request(boundary["traefik_port"], path, headers, method=method, host=host)


def key(boundary, name: str) -> str:
    return boundary["keys"][name]["key"]


def echo_reached(boundary, marker: str) -> list:
    echo = boundary["echo"].server
    with echo.lock:
        return [path for path in echo.seen if marker in path]


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# ----------------------------------------------------------------------------------------------------------------
# WebSocket upgrade through Traefik + forwardAuth


@pytest.mark.parametrize("credential", ["none", "unknown_key", "wrong_scope_key"])
def test_websocket_upgrade_without_valid_credential_is_refused_and_nothing_reaches_backend(boundary, credential):
    marker = unique("denied")
    headers = {"none": [], "unknown_key": [s.bearer("agk_" + secrets.token_hex(32))],
               "wrong_scope_key": [s.bearer(key(boundary, "tools"))]}[credential]
    response = ws_refused(boundary["traefik_port"], f"/ws/{marker}", headers)
    expected = 403 if credential == "wrong_scope_key" else 401
    assert response.status_code == expected, (response.status_code, response.headers, response.body)
    challenge = response.headers.get("WWW-Authenticate") or ""
    assert challenge.startswith("Bearer ") and METADATA + "ws" in challenge, response.headers
    assert "Upgrade" not in response.headers and "Sec-WebSocket-Accept" not in response.headers, response.headers
    assert boundary["ws"].reached(marker) == [], "a refused upgrade reached the WebSocket backend"


def test_websocket_upgrade_with_early_frame_and_no_credential_gets_401_and_no_frame_reaches_backend(boundary):
    marker = unique("early")
    head = raw_upgrade_with_early_frame(boundary["traefik_port"], f"/ws/{marker}")
    status_line = head.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 401 "), head
    assert b"101" not in status_line and b"sec-websocket-accept" not in head.lower(), head
    assert boundary["ws"].reached(marker) == [], "the upgrade or its early frame reached the WebSocket backend"


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_websocket_upgrade_with_valid_key_gets_101_and_frames_go_both_ways(boundary, header):
    marker = unique("echo")
    secret = key(boundary, "ws")
    credential = s.bearer(secret) if header == "Authorization" else ("X-API-Key", secret)
    with ws_open(boundary["traefik_port"], f"/ws/{marker}", [credential]) as connection:
        assert connection.response.status_code == 101, connection.response
        hello = json.loads(connection.recv(timeout=s.SOCKET_TIMEOUT))
        seen = hello["headers"]
        assert s.header_values(seen, "X-Auth-Subject") == ["alice"], seen
        assert s.header_values(seen, "X-Auth-Route") == ["ws"], seen
        assert all(secret not in value for _, value in seen), "the client's key reached the WebSocket backend"
        for message in ("ping 1", "ping 2 ünïcode", b"\x00\x01binary\xff"):
            connection.send(message)
            assert connection.recv(timeout=s.SOCKET_TIMEOUT) == message
    received = [m for p, m in boundary["ws"].messages if marker in p]
    assert received == ["ping 1", "ping 2 ünïcode", b"\x00\x01binary\xff"], received


def test_websocket_upgrade_with_revoked_key_is_401(boundary):
    issued = s.issue_key(boundary["authctl"], boundary["db"], "alice", "ws", name="e2e-ws-revoke")
    with ws_open(boundary["traefik_port"], f"/ws/{unique('before')}", [s.bearer(issued["key"])]) as connection:
        assert connection.response.status_code == 101, "the key must upgrade before revocation"
    s.run_checked([str(boundary["authctl"]), "--db", str(boundary["db"]), "revoke-key", issued["id"]],
                  env=boundary["env"])
    marker = unique("revoked")
    response = ws_refused(boundary["traefik_port"], f"/ws/{marker}", [s.bearer(issued["key"])])
    assert response.status_code == 401, (response.status_code, response.headers, response.body)
    assert 'error="invalid_token"' in (response.headers.get("WWW-Authenticate") or ""), response.headers
    assert boundary["ws"].reached(marker) == []


# ----------------------------------------------------------------------------------------------------------------
# T2: X-Forwarded-Prefix injected by the client before Traefik + StripPrefix

PREFIX_INJECTIONS = {
    "canonical": [("X-Forwarded-Prefix", "/admin")],
    "lower_case": [("x-forwarded-prefix", "/admin")],
    "underscore_alias": [("X_Forwarded_Prefix", "/admin")],
    "dot_alias": [("X.Forwarded.Prefix", "/admin")],
    "trailing_slash": [("X-Forwarded-Prefix", "/admin/")],
    "double_slash": [("X-Forwarded-Prefix", "//admin")],
    "dot_segments": [("X-Forwarded-Prefix", "/tools/../admin")],
    "encoded": [("X-Forwarded-Prefix", "/%61dmin")],
    "absolute_url": [("X-Forwarded-Prefix", "http://evil.example/admin")],
    "repeated": [("X-Forwarded-Prefix", "/admin"), ("X-Forwarded-Prefix", "/tools")],
    "comma_list": [("X-Forwarded-Prefix", "/admin, /tools")],
    "with_uri": [("X-Forwarded-Prefix", "/admin"), ("X-Forwarded-Uri", "/admin/x")],
}


def test_t2_generated_config_runs_forward_auth_before_strip_prefix(boundary):
    routers = boundary["dynamic"]["http"]["routers"]
    middlewares = boundary["dynamic"]["http"]["middlewares"]
    assert routers["tools"]["middlewares"] == ["authgateway", "tools-strip"], routers["tools"]
    assert middlewares["tools-strip"] == {"stripPrefix": {"prefixes": ["/tools"]}}, middlewares
    assert middlewares["authgateway"]["forwardAuth"]["trustForwardHeader"] is False


@pytest.mark.parametrize("injection", sorted(PREFIX_INJECTIONS))
def test_t2_injected_forwarded_prefix_without_credential_is_401_for_the_real_route(boundary, injection):
    marker = unique("t2-anon")
    reply = get(boundary, f"/tools/{marker}", PREFIX_INJECTIONS[injection])
    assert reply.status == 401, reply
    assert METADATA + "tools" in (reply.header("WWW-Authenticate") or ""), reply
    assert echo_reached(boundary, marker) == []


@pytest.mark.parametrize("injection", sorted(PREFIX_INJECTIONS))
def test_t2_injected_forwarded_prefix_with_tools_key_is_decided_as_the_tools_route(boundary, injection):
    marker = unique("t2-tools")
    reply = get(boundary, f"/tools/{marker}", [s.bearer(key(boundary, "tools")), *PREFIX_INJECTIONS[injection]])
    assert reply.status == 200, reply
    echo = reply.json()
    assert echo["path"] == f"/{marker}", echo  # stripped by Traefik after the decision
    assert s.header_values(echo["headers"], "X-Auth-Route") == ["tools"], echo["headers"]
    assert s.header_values(echo["headers"], "X-Auth-Subject") == ["alice"], echo["headers"]
    # Traefik 3.7 with the generated configuration: the backend sees only the real prefix, and no alias of it.
    assert s.header_values(echo["headers"], "X-Forwarded-Prefix") == ["/tools"], echo["headers"]
    assert not [n for n, _ in echo["headers"] if n.lower() in ("x_forwarded_prefix", "x.forwarded.prefix")], echo


@pytest.mark.parametrize("injection", ["canonical", "repeated", "with_uri"])
def test_t2_injected_forwarded_prefix_naming_an_allowed_route_does_not_open_admin(boundary, injection):
    marker = unique("t2-admin")
    spoof = [(name, value.replace("/admin", "/tools")) for name, value in PREFIX_INJECTIONS[injection]]
    reply = get(boundary, f"/admin/{marker}", [s.bearer(key(boundary, "tools")), *spoof])
    assert reply.status == 403, reply
    challenge = reply.header("WWW-Authenticate") or ""
    assert 'error="insufficient_scope"' in challenge and METADATA + "admin" in challenge, reply
    assert echo_reached(boundary, marker) == []
    # Control: the admin key opens /admin (the route is reachable at all).
    assert get(boundary, f"/admin/{marker}", [s.bearer(key(boundary, "admin"))]).status == 200


def test_t2_injected_forwarded_prefix_sent_straight_to_auth_does_not_change_the_decision(boundary):
    port = boundary["gateway_port"]
    base = [("X-Forwarded-Method", "GET"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", s.HOST),
            ("X-Forwarded-For", "203.0.113.7")]
    for prefix in ("/admin", "/tools", "/"):
        tools = s.request(port, "/auth", base + [("X-Forwarded-Uri", "/tools/x"), ("X-Forwarded-Prefix", prefix),
                                                 s.bearer(key(boundary, "tools"))], host=f"127.0.0.1:{port}")
        assert tools.status == 200 and tools.header("X-Auth-Route") == "tools", (prefix, tools)
        admin = s.request(port, "/auth", base + [("X-Forwarded-Uri", "/admin/x"), ("X-Forwarded-Prefix", prefix),
                                                 s.bearer(key(boundary, "tools"))], host=f"127.0.0.1:{port}")
        assert admin.status == 403, (prefix, admin)
        anonymous = s.request(port, "/auth", base + [("X-Forwarded-Uri", "/tools/x"), ("X-Forwarded-Prefix", prefix)],
                              host=f"127.0.0.1:{port}")
        assert anonymous.status == 401, (prefix, anonymous)


# ----------------------------------------------------------------------------------------------------------------
# T8: health/probe shortcuts

PROBE_AGENTS = ["kube-probe/1.29", "ELB-HealthChecker/2.0", "GoogleHC/1.0", "Prometheus/2.53.0", "Consul Health Check"]
PROBE_PATHS = [(SITE_HOST, p) for p in ("/health", "/healthz", "/ready", "/readyz", "/livez", "/metrics", "/ping")]
PROBE_PATHS += [(s.HOST, p) for p in ("/tools/health", "/tools/healthz", "/tools/ready", "/tools/metrics")]


def test_t8_probe_user_agents_and_health_paths_through_traefik_are_401_without_credential(boundary):
    wrong = []
    for host, path in PROBE_PATHS:
        for agent in PROBE_AGENTS[:2]:
            for method in ("GET", "HEAD"):
                marker = unique("t8")
                target = f"{path}?probe={marker}"
                reply = get(boundary, target, [("User-Agent", agent)], method=method, host=host)
                route = "site" if host == SITE_HOST else "tools"
                challenge = reply.header("WWW-Authenticate") or ""
                if reply.status != 401 or f'scope="{route}"' not in challenge:  # the real route's challenge
                    wrong.append(f"{method} {host}{path} {agent}: {reply.status} {challenge!r}")
                if echo_reached(boundary, marker):
                    wrong.append(f"{method} {host}{path} {agent}: reached the backend")
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("agent", PROBE_AGENTS)
def test_t8_probe_user_agent_alone_never_opens_a_protected_route(boundary, agent):
    marker = unique("t8-agent")
    reply = get(boundary, f"/healthz?probe={marker}", [("User-Agent", agent)], host=SITE_HOST)
    assert reply.status == 401, reply
    assert echo_reached(boundary, marker) == []
    # Control: with the route's key the same probe request is allowed, as the site route.
    allowed = get(boundary, "/healthz", [("User-Agent", agent), s.bearer(key(boundary, "site"))], host=SITE_HOST)
    assert allowed.status == 200 and s.header_values(allowed.json()["headers"], "X-Auth-Route") == ["site"], allowed


# ----------------------------------------------------------------------------------------------------------------
# T31: query-parameter keys and keys in logs

QUERY_NAMES = ["api_key", "key", "access_token", "token", "apikey", "api-key", "x-api-key", "auth", "authorization",
               "bearer"]


@pytest.mark.parametrize("name", QUERY_NAMES)
def test_t31_valid_key_in_query_parameter_is_not_a_credential(boundary, name):
    secret = key(boundary, "tools")
    marker = unique("t31")
    for value in (secret, "Bearer%20" + secret):
        reply = get(boundary, f"/tools/{marker}?{name}={value}")
        assert reply.status == 401, (name, reply)
        challenge = reply.header("WWW-Authenticate") or ""
        assert METADATA + "tools" in challenge and "invalid_token" not in challenge, reply  # no credential at all
        assert secret.encode() not in reply.body and secret not in challenge, "the key was echoed in the answer"
    assert echo_reached(boundary, marker) == []


def test_t31_valid_key_in_query_cannot_upgrade_a_websocket(boundary):
    marker = unique("t31-ws")
    for name in ("access_token", "token", "api_key"):
        response = ws_refused(boundary["traefik_port"], f"/ws/{marker}?{name}={key(boundary, 'ws')}")
        assert response.status_code == 401, (name, response.status_code, response.headers)
    assert boundary["ws"].reached(marker) == []


def test_t31_no_key_appears_in_the_gateway_log_at_trace_level(boundary):
    """Valid, unknown, malformed and revoked keys in every place a client can put them: none reaches the log,
    while the log does record the decisions (so the check is not vacuous)."""
    authctl, db, env = boundary["authctl"], boundary["db"], boundary["env"]
    revoked = s.issue_key(authctl, db, "alice", "tools", name="e2e-log-revoked")
    s.run_checked([str(authctl), "--db", str(db), "revoke-key", revoked["id"]], env=env)
    valid = key(boundary, "tools")
    unknown = "agk_" + secrets.token_hex(32)
    malformed = "not-a-key-" + secrets.token_hex(12)
    secrets_sent = [valid, unknown, malformed, revoked["key"]]
    for secret in secrets_sent:
        for headers, query in (([s.bearer(secret)], ""), ([("X-API-Key", secret)], ""), ([], f"?api_key={secret}"),
                               ([], f"?access_token={secret}")):
            for path in ("/tools/x", "/admin/x"):
                get(boundary, path + query, headers)
        # Straight to /auth, including an unmatched path with the key in its query (the "no route" reason).
        port = boundary["gateway_port"]
        for uri in (f"/nowhere?key={secret}", f"/tools/x?token={secret}"):
            s.request(port, "/auth", [("X-Forwarded-Method", "GET"), ("X-Forwarded-Proto", "https"),
                                      ("X-Forwarded-Host", s.HOST), ("X-Forwarded-Uri", uri),
                                      ("X-Forwarded-For", "203.0.113.7"), s.bearer(secret)],
                      host=f"127.0.0.1:{port}")
    log = boundary["gateway"].log()
    assert "deny" in log and "allow" in log, f"the trace log records no decisions:\n{log[-2000:]}"
    for secret in secrets_sent:
        assert secret not in log, f"a key was logged: {secret[:8]}…"
        # Nor the secret part without its prefix (agk_…), in any slice long enough to matter.
        body = secret.split("_", 1)[-1]
        assert body[:16] not in log and body[-16:] not in log, f"part of a key was logged: {secret[:8]}…"

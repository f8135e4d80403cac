"""End-to-end: faults that must never open the gate (issue 12, item 4): the JWKS endpoint, the policy file, the clock.

Each test runs its own `authgateway` (the real debug binary) and asks its `/auth` directly, as Traefik's forwardAuth
does (the proxy adds nothing to these faults). The issuer is a JWKS server in this process whose answer each test
chooses (`FaultyJWKS`). For every fault: no allow that should be a deny, `503` + `Retry-After` where the gateway
cannot decide, never a plain 500, and the gateway recovers without a restart once the fault clears.

The issuer's timings are small on purpose (`FAULT_POLICY`): fetch timeout 0.5 s, cache TTL 1 s, stale limit 1 s,
refetch throttle 0.2 s, policy reload every 0.2 s; the whole file runs in well under a minute.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import e2e_support as s

try:
    import jwt as pyjwt  # type: ignore
except ImportError:  # pragma: no cover
    pyjwt = None

ISSUER = "https://issuer.faults.test/realms/e2e"
FFMPEG = "/ffmpeg/x"
MEMORY = "/memory/x"
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")

FAULT_POLICY = """\
gateway:
  public_url: https://mcp.example.com
  realm: mcp
  trusted_proxies: [127.0.0.1/32]
  api_key_header: X-API-Key

issuers:
  corp:
    issuer: ${FAULT_ISSUER}
    jwks_url: ${FAULT_JWKS_URL}
    algorithms: [ES256]
    audience: route
    claims: { subject: sub, scopes: scope }
    leeway: 5s
    jwks_fetch_timeout: 0.5s
    jwks_cache_ttl: 1s
    jwks_min_refresh_interval: 0.2s
    jwks_stale_limit: 1s

routes:
  - name: ffmpeg
    match: { host: mcp.example.com, path: "/ffmpeg/**" }
    accept: [api_key, jwt]
    issuers: [corp]
    require: { scopes: [ffmpeg] }
    backend: { style: headers, url: "http://127.0.0.1:9" }

  - name: memory
    match: { host: mcp.example.com, path: "/memory/**" }
    accept: [api_key, jwt]
    issuers: [corp]
    require:
      scopes: [memory]
    backend: { style: headers, url: "http://127.0.0.1:9" }
"""

# The policy as a half-written file would leave it: the memory route without its `require` is still a valid route,
# and it would let any key in.
HALF_WRITTEN = FAULT_POLICY[: FAULT_POLICY.index("    require:\n      scopes: [memory]")]

EXTRA_ROUTE = """
  - name: extra
    match: { host: mcp.example.com, path: "/extra/**" }
    accept: [api_key]
    require: { scopes: [ffmpeg] }
    backend: { style: headers, url: "http://127.0.0.1:9" }
"""


# --------------------------------------------------------------------------------------------------------------
# The issuer: signing keys, and a JWKS server whose answer the test chooses


def _b64url(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """An EC P-256 key with its kid and public JWK."""

    def __init__(self, label: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = f"{label}-{secrets.token_hex(3)}"
        numbers = self.key.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
                    "x": _b64url(numbers.x.to_bytes(32, "big")), "y": _b64url(numbers.y.to_bytes(32, "big"))}

    def token(self, scope: str = "ffmpeg", aud: str = "https://mcp.example.com/ffmpeg", lifetime: int = 300,
              now: float | None = None, sub: str = "alice") -> str:
        issued = int(now if now is not None else time.time())
        claims = {"iss": ISSUER, "sub": sub, "aud": aud, "scope": scope, "iat": issued, "nbf": issued,
                  "exp": issued + lifetime, "jti": secrets.token_hex(6)}
        assert pyjwt is not None, "PyJWT is needed (pip install -r e2e/requirements.txt)"
        return pyjwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid, "typ": "JWT"})


class _FaultyHandler(s._QuietHandler):
    server_version = "e2e-faulty-issuer/1"

    def setup(self):
        super().setup()
        jwks: "FaultyJWKS" = self.server.jwks  # type: ignore[attr-defined]
        with jwks.lock:
            jwks.connections.add(self.connection)

    def finish(self):
        jwks: "FaultyJWKS" = self.server.jwks  # type: ignore[attr-defined]
        with jwks.lock:
            jwks.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self):  # noqa: C901 - one branch per fault
        jwks: "FaultyJWKS" = self.server.jwks  # type: ignore[attr-defined]
        with jwks.lock:
            mode, keys = jwks.mode, [key.jwk for key in jwks.published]
            jwks.fetches += 1
        try:
            if mode == "ok":
                self._send_json(200, {"keys": keys})
                with jwks.lock:
                    jwks.served.append((time.monotonic(), tuple(k["kid"] for k in keys)))
            elif mode == "slow_head":  # the head comes after the gateway's fetch timeout
                time.sleep(3)
                self._send_json(200, {"keys": keys})
            elif mode == "stalled_body":  # a prompt head, then a body that trickles in and never ends
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b'{"keys": [')
                self.wfile.flush()
                for _ in range(100):
                    time.sleep(0.1)
                    self.wfile.write(b" ")
                    self.wfile.flush()
            elif mode == "huge_streamed" or mode == "huge_announced":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if mode == "huge_announced":
                    self.send_header("Content-Length", str(100 * 1024 * 1024 + 20))
                else:
                    self.send_header("Connection", "close")  # no length: the body ends when the connection does
                self.end_headers()
                self.close_connection = True
                self.wfile.write(b'{"keys": [')
                chunk = b" " * (1 << 20)
                for _ in range(100):
                    self.wfile.write(chunk)
                    with jwks.lock:
                        jwks.huge_bytes_sent += len(chunk)
                self.wfile.write(b"]}")
            else:
                status, body = GARBAGE[mode](keys)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            self.close_connection = True


def _wrong_kty(keys):
    return 200, {"keys": [{**k, "kty": "RSA", "n": k["x"], "e": "AQAB"} for k in keys]}


def _wrong_alg(keys):
    return 200, {"keys": [{**k, "alg": "RS256"} for k in keys]}


def _wrong_curve(keys):
    return 200, {"keys": [{**k, "crv": "P-384"} for k in keys]}


def _symmetric(keys):
    return 200, {"keys": [{"kty": "oct", "kid": k["kid"], "alg": "HS256", "k": _b64url(b"secret" * 6)} for k in keys]}


# What each garbage answer is; `keys` is the set that would be published.
GARBAGE = {
    "not_json": lambda keys: (200, b"<html>It works!</html>"),
    "truncated_json": lambda keys: (200, json.dumps({"keys": keys}).encode()[:40]),
    "json_not_jwks": lambda keys: (200, {"issuer": ISSUER}),
    "json_array": lambda keys: (200, [k for k in keys]),
    "keys_not_list": lambda keys: (200, {"keys": {"0": keys[0] if keys else {}}}),
    "empty_keys": lambda keys: (200, {"keys": []}),
    "http_500": lambda keys: (500, {"error": "upstream"}),
    "wrong_kty": _wrong_kty,
    "wrong_alg": _wrong_alg,
    "wrong_curve": _wrong_curve,
    "symmetric_key": _symmetric,
}


class FaultyJWKS:
    """A JWKS endpoint on a fixed loopback port that can be down (nothing listening), or answer as `mode` says."""

    path = "/jwks"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mode = "ok"
        self.published: list[SigningKey] = []
        self.fetches = 0
        self.huge_bytes_sent = 0
        self.served: list = []  # (monotonic time the answer was written, kids) for every "ok" answer
        self.connections: set = set()  # open connections, closed by down() as a dying server would
        self.port = s.free_port()
        self.url = f"http://{s.LOOPBACK}:{self.port}{self.path}"
        self.server = None
        self.thread = None

    def set(self, mode: str | None = None, published: list | None = None) -> None:
        with self.lock:
            if mode is not None:
                self.mode = mode
            if published is not None:
                self.published = list(published)

    def up(self) -> None:
        if self.server is not None:
            return
        for _ in range(50):  # the port was ours a moment ago; a TIME_WAIT socket may hold it briefly
            try:
                server = ThreadingHTTPServer((s.LOOPBACK, self.port), _FaultyHandler)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"port {self.port} did not become free for the JWKS server")
        server.daemon_threads = True
        server.jwks = self  # type: ignore[attr-defined]
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def down(self) -> None:
        """Stops listening: the gateway's next fetch gets `connection refused`."""
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            connections = list(self.connections)
        for connection in connections:  # the gateway's pooled keep-alive connections die with the server
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(timeout=5)
        self.server = None


# --------------------------------------------------------------------------------------------------------------
# The gateway


def gateway_env(jwks: FaultyJWKS, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("AUTHGATEWAY_DB", None)
    env.update({"FAULT_ISSUER": ISSUER, "FAULT_JWKS_URL": jwks.url})
    env.update(extra or {})
    return env


_CLIENT_ADDRESSES = itertools.count(1)


class Gateway:
    """One authgateway process with its own policy file, store, log and keys."""

    def __init__(self, processes: s.Processes, binaries, workdir: Path, jwks: FaultyJWKS, policy_text: str = FAULT_POLICY,
                 extra_env: dict | None = None, reload_interval: str = "0.2", wrap: list | None = None) -> None:
        gateway_bin, self.authctl, _ = binaries
        self.workdir = workdir
        self.policy = workdir / "policy.yaml"
        self.policy.write_text(policy_text)
        self.db = workdir / "authgateway.sqlite"
        self.log_path = workdir / "authgateway.log"
        self.env = gateway_env(jwks, extra_env)
        self.wrap = wrap or []
        s.ACTIVE_LOGS.append(("authgateway (faults)", self.log_path))
        argv_bin = Path(gateway_bin)
        if self.wrap:  # e.g. setpriv: start_gateway runs [binary, ...]; the wrapper goes in front via a script
            script = workdir / "authgateway-wrapped"
            script.write_text("#!/bin/sh\nexec " + " ".join(self.wrap) + f" {gateway_bin} \"$@\"\n")
            script.chmod(0o755)
            argv_bin = script
        self.child, self.port = s.start_gateway(processes, argv_bin, self.policy, self.db, self.env, self.log_path,
                                                extra_args=["--reload-interval", reload_interval])
        self.keys = {
            "ffmpeg": self.issue_key("alice", "ffmpeg", "faults-ffmpeg"),
            "memory": self.issue_key("bob", "memory", "faults-memory"),
        }

    def issue_key(self, subject: str, scopes: str, name: str) -> str:
        argv = [*self.wrap, str(self.authctl), "--db", str(self.db), "issue-key", "--subject", subject, "--scopes",
                scopes, "--name", name, "--json"]
        return json.loads(s.run_checked(argv, env=self.env))["key"]

    def close(self) -> None:
        if ("authgateway (faults)", self.log_path) in s.ACTIVE_LOGS:
            s.ACTIVE_LOGS.remove(("authgateway (faults)", self.log_path))

    def auth(self, path: str = FFMPEG, token: str | None = None, api_key: str | None = None,
             client: str | None = None) -> s.Reply:
        """`/auth` exactly as Traefik's forwardAuth calls it, from the trusted peer."""
        if client is None:
            # A new client address per request: these tests send many refused credentials on purpose, and the
            # per-address throttle of failed credentials (429) is not what they are about.
            n = next(_CLIENT_ADDRESSES)
            client = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        headers = [("X-Forwarded-Method", "GET"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", s.HOST),
                   ("X-Forwarded-Uri", path), ("X-Forwarded-For", client)]
        if token is not None:
            headers.append(s.bearer(token))
        if api_key is not None:
            headers.append(("X-API-Key", api_key))
        reply = s.request(self.port, "/auth", headers, host=f"127.0.0.1:{self.port}")
        assert reply.status != 500, f"a plain 500 from /auth: {reply!r}"
        if reply.status == 503:
            assert reply.header("Retry-After"), f"503 without Retry-After: {reply!r}"
        return reply

    def status(self, **kwargs) -> int:
        return self.auth(**kwargs).status

    def rss_kib(self) -> int:
        """VmRSS of the gateway process (the child itself: start_gateway runs the binary without a shell)."""
        status = Path(f"/proc/{self.child.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))

    def log(self) -> str:
        return self.child.log()


def api_key_decides_normally(gw: Gateway) -> None:
    """API keys do not depend on the JWKS: allowed with the scope, denied without it or when unknown."""
    assert gw.status(api_key=gw.keys["ffmpeg"]) == 200
    assert gw.status(api_key=gw.keys["memory"]) == 403
    assert gw.status(api_key="agw_" + secrets.token_hex(20)) == 401
    assert gw.status() == 401


@pytest.fixture
def jwks(request):
    server = FaultyJWKS()
    request.addfinalizer(server.down)
    return server


@pytest.fixture
def start(request, binaries, tmp_path):
    """start(jwks, **kwargs) -> Gateway: a gateway stopped (by PID group) at the end of the test."""
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)
    gateways: list = []
    request.addfinalizer(lambda: [g.close() for g in gateways])

    def make(jwks: FaultyJWKS, workdir: Path | None = None, **kwargs) -> Gateway:
        directory = workdir or tmp_path / f"gw{len(gateways)}"
        directory.mkdir(parents=True, exist_ok=True)
        gateway = Gateway(processes, binaries, directory, jwks, **kwargs)
        gateways.append(gateway)
        return gateway

    make.processes = processes
    return make


def eventually(predicate, what: str, timeout: float = 10):
    return s.wait_until(predicate, timeout, interval=0.05, what=what)


# --------------------------------------------------------------------------------------------------------------
# JWKS endpoint faults


def test_jwks_down_jwt_gets_503_api_key_decides_and_recovery_without_restart(start, jwks):
    key = SigningKey("a")
    jwks.set("ok", [key])  # what it will publish once up; nothing listens yet
    gw = start(jwks)

    reply = gw.auth(token=key.token())
    assert reply.status == 503, f"a JWT whose keys cannot be fetched must not be decided: {reply!r}"
    assert gw.status(token=SigningKey("forged").token()) == 503
    api_key_decides_normally(gw)

    jwks.up()
    eventually(lambda: gw.status(token=key.token()) == 200, "the JWT to be accepted once the JWKS answers")
    assert gw.status(token=SigningKey("forged").token()) == 401
    assert gw.status(path=MEMORY, token=key.token()) == 401  # aud names ffmpeg, not memory

    # Down again: the last good keys work for cache TTL + stale limit (2 s here), then JWTs get 503, never an allow
    # for a key the gateway never saw.
    jwks.down()
    forged = SigningKey("forged2")
    eventually(lambda: gw.status(token=key.token()) == 503, "JWTs to get 503 once the stale limit has passed")
    assert gw.status(token=forged.token()) == 503
    api_key_decides_normally(gw)

    jwks.up()
    eventually(lambda: gw.status(token=key.token()) == 200, "recovery after the JWKS is back")
    assert gw.status(token=forged.token()) == 401
    assert gw.child.alive()


@pytest.mark.parametrize("mode", ["slow_head", "stalled_body"])
def test_jwks_slower_than_fetch_timeout_gets_503_and_recovers(start, jwks, mode):
    """`slow_head`: the answer comes after the 0.5 s fetch timeout. `stalled_body`: the head comes at once, the body
    trickles for 10 s; AsyncHTTPClient's own deadline stops at the head, so without a deadline over the body this
    fetch, and every JWT decision waiting for it, would hang (the request below would time out instead of a 503)."""
    key = SigningKey("a")
    jwks.set(mode, [key])
    jwks.up()
    gw = start(jwks)

    for _ in range(3):
        reply = gw.auth(token=key.token())
        assert reply.status == 503, reply
    api_key_decides_normally(gw)
    assert "JWKS fetch failed" in gw.log(), s.tail(gw.log_path)

    jwks.set("ok")
    eventually(lambda: gw.status(token=key.token()) == 200, "recovery once the JWKS answers in time")
    assert gw.status(token=SigningKey("forged").token()) == 401


GARBAGE_UNDECIDABLE = ["not_json", "truncated_json", "json_not_jwks", "json_array", "keys_not_list", "empty_keys",
                       "http_500"]
# A set that parses but holds no key usable for ES256 with this kid: the token names a key that is not there.
GARBAGE_UNUSABLE_KEYS = ["wrong_kty", "wrong_alg", "wrong_curve", "symmetric_key"]


@pytest.mark.parametrize("mode", GARBAGE_UNDECIDABLE + GARBAGE_UNUSABLE_KEYS)
def test_jwks_garbage_never_allows_and_recovers(start, jwks, mode):
    key = SigningKey("a")
    jwks.set(mode, [key])
    jwks.up()
    gw = start(jwks)

    statuses = {gw.status(token=key.token()) for _ in range(3)}
    expected = {503} if mode in GARBAGE_UNDECIDABLE else {401, 503}
    assert statuses <= expected, f"{mode}: {statuses}"
    assert gw.status(token=SigningKey("forged").token()) in expected
    api_key_decides_normally(gw)

    jwks.set("ok")
    eventually(lambda: gw.status(token=key.token()) == 200, f"recovery after {mode}")
    assert gw.status(token=SigningKey("forged").token()) == 401


def test_jwks_garbage_after_a_good_set_keeps_the_last_good_keys_then_503(start, jwks):
    key = SigningKey("a")
    jwks.set("ok", [key])
    jwks.up()
    gw = start(jwks)
    assert gw.status(token=key.token()) == 200

    jwks.set("not_json")
    # Garbage is a failed fetch, not a new key set: never a key from it, and after the stale limit 503.
    eventually(lambda: gw.status(token=key.token()) == 503, "503 once the last good set is past its stale limit")
    jwks.set("wrong_curve")
    eventually(lambda: gw.status(token=key.token()) == 401, "a parsed set without the kid: the token's key is gone")
    jwks.set("ok")
    eventually(lambda: gw.status(token=key.token()) == 200, "recovery")


@pytest.mark.parametrize("mode", ["huge_streamed", "huge_announced"])
def test_jwks_answering_100_mb_is_capped_and_rss_stays_bounded(start, jwks, mode):
    key = SigningKey("a")
    jwks.set(mode, [key])
    jwks.up()
    gw = start(jwks)
    assert gw.status(token=key.token()) == 503
    before = gw.rss_kib()
    fetches = jwks.fetches
    for _ in range(8):  # a fetch per 0.2 s refetch interval; each one is cut off at the 1 MiB document limit
        assert gw.status(token=key.token()) == 503
        time.sleep(0.25)
    after = gw.rss_kib()
    assert jwks.fetches > fetches, "the gateway must have fetched again"
    # 100 MB per fetch would be 800 MB; the limit is 1 MiB plus socket buffers.
    assert after - before < 64 * 1024, f"RSS grew from {before} KiB to {after} KiB"
    per_fetch = jwks.huge_bytes_sent / max(jwks.fetches, 1)
    print(f"{mode}: RSS {before} -> {after} KiB over {jwks.fetches - fetches} fetches; {per_fetch:.0f} bytes sent per fetch")
    assert per_fetch < 16 * 1024 * 1024, f"the gateway read {per_fetch:.0f} bytes per fetch"
    api_key_decides_normally(gw)

    jwks.set("ok")
    eventually(lambda: gw.status(token=key.token()) == 200, "recovery after the oversized answers")


# How long the gateway may take to read and install a key set after this server wrote it (generous: the machine
# running the suite may be busy).
INSTALL_MARGIN = 0.5


def test_jwks_key_rotation_under_load_never_allows_a_key_outside_the_current_set(start, jwks):
    """Keys rotate every 0.6 s while four threads send tokens by the current, the next, the previous and removed
    keys and by a key that was never published. A 200 is correct only for a key in the set the gateway had when
    the request came in (the last set served INSTALL_MARGIN or more before it) or in a set served while it was
    decided."""
    keys = [SigningKey(f"k{n}") for n in range(6)]
    never = SigningKey("never")
    jwks.set("ok", [keys[0]])
    jwks.up()
    gw = start(jwks)
    assert gw.status(token=keys[0].token()) == 200

    state = {"index": 0, "stop": False}
    results: list = []  # (kid, sent, done, status or error text)
    lock = threading.Lock()
    tokens = {k.kid: k.token() for k in keys}
    tokens[never.kid] = never.token()

    def load():
        rng = secrets.SystemRandom()
        while not state["stop"]:
            index = state["index"]
            candidates = [keys[j] for j in range(max(index - 2, 0), min(index + 2, 6))] + [never]
            signer = rng.choice(candidates)
            sent = time.monotonic()
            try:
                status = gw.status(token=tokens[signer.kid])
            except (AssertionError, OSError) as error:
                status = repr(error)
            with lock:
                results.append((signer.kid, sent, time.monotonic(), status))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for index in range(1, 6):
            # Publish the next key alongside the current one, then drop the previous one.
            jwks.set(published=[keys[index - 1], keys[index]])
            state["index"] = index
            time.sleep(0.3)
            jwks.set(published=[keys[index]])
            time.sleep(0.3)
    finally:
        state["stop"] = True
        for thread in threads:
            thread.join(timeout=15)

    assert len(results) > 50, f"too little load: {len(results)} requests"
    statuses = {status for *_, status in results}
    assert statuses <= {200, 401}, f"only allows and denies are expected here: {statuses}"
    assert all(status == 401 for kid, *_, status in results if kid == never.kid), "a never-published key was allowed"
    with jwks.lock:
        served = list(jwks.served)
    wrong = []
    for kid, sent, done, status in results:
        if status != 200:
            continue
        in_force = [kids for at, kids in served if at <= sent - INSTALL_MARGIN][-1:]
        during = [kids for at, kids in served if sent - INSTALL_MARGIN < at <= done]
        if not any(kid in kids for kids in in_force + during):
            wrong.append((kid, round(sent, 3), round(done, 3)))
    assert not wrong, f"allowed by a key outside the gateway's current set: {wrong[:10]} (served: {served[-12:]})"
    # Once the rotation has settled: the current key works, the removed ones do not.
    eventually(lambda: gw.status(token=keys[4].token()) == 401, "the last removed key to be refused")
    assert gw.status(token=keys[5].token()) == 200
    assert gw.status(token=keys[0].token()) == 401


# --------------------------------------------------------------------------------------------------------------
# Policy file faults


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.chmod(mode)
    os.replace(temporary, path)


def policy_decisions_are_the_good_ones(gw: Gateway) -> None:
    assert gw.status(api_key=gw.keys["ffmpeg"]) == 200
    assert gw.status(path=MEMORY, api_key=gw.keys["ffmpeg"]) == 403
    assert gw.status(path=MEMORY, api_key=gw.keys["memory"]) == 200
    assert gw.status(path=MEMORY) == 401
    assert gw.status(path="/extra/x", api_key=gw.keys["ffmpeg"]) == 403  # no route: deny


def fixed_policy_is_picked_up(gw: Gateway) -> None:
    write_atomically(gw.policy, FAULT_POLICY + EXTRA_ROUTE)
    eventually(lambda: gw.status(path="/extra/x", api_key=gw.keys["ffmpeg"]) == 200, "the fixed policy to be loaded")
    assert gw.status(path="/extra/x", api_key=gw.keys["memory"]) == 403
    assert gw.status(path=MEMORY, api_key=gw.keys["ffmpeg"]) == 403


BAD_POLICIES = {
    "invalid": (FAULT_POLICY + "    no_such_key: true\n", "no_such_key"),
    "empty": ("", None),
    "truncated_yaml": (FAULT_POLICY[: FAULT_POLICY.index("scopes: [memory]") + len("scopes: [mem")], None),
    "truncated_mid_key": (FAULT_POLICY[: FAULT_POLICY.index("issuers: [corp]\n    require:\n      scopes: [memory]") + 4],
                          None),
}


@pytest.mark.parametrize("case", sorted(BAD_POLICIES))
def test_policy_replaced_by_a_bad_file_keeps_the_last_good_policy_then_picks_up_the_fix(start, jwks, case):
    text, detail = BAD_POLICIES[case]
    gw = start(jwks)
    policy_decisions_are_the_good_ones(gw)

    write_atomically(gw.policy, text)
    eventually(lambda: "policy change refused" in gw.log(), f"the gateway to refuse the {case} policy")
    log = gw.log()
    assert f"{gw.policy.name}:" in log.split("policy change refused", 1)[1], f"no file:line in the log:\n{log[-2000:]}"
    if detail:
        assert detail in log
    # Decisions keep coming from the last good policy, several reload intervals later too.
    for _ in range(3):
        policy_decisions_are_the_good_ones(gw)
        time.sleep(0.2)
    assert gw.child.alive()
    fixed_policy_is_picked_up(gw)


def test_policy_file_deleted_keeps_the_last_good_policy_then_picks_up_the_fix(start, jwks):
    gw = start(jwks)
    gw.policy.unlink()
    eventually(lambda: "policy change refused" in gw.log(), "the gateway to refuse the missing policy")
    policy_decisions_are_the_good_ones(gw)
    fixed_policy_is_picked_up(gw)


def _nobody_can_run_the_binaries(binaries) -> bool:
    return all(subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "test", "-x", str(b)],
                              capture_output=True).returncode == 0 for b in binaries[:2])


def test_policy_unreadable_keeps_the_last_good_policy_and_a_chmod_fix_is_picked_up(start, jwks, binaries):
    """A new policy that the gateway may not read (mode 000), then `chmod 644`: the chmod leaves the modification
    time alone, so the gateway must notice permissions too. Root reads any file, so the gateway runs as nobody."""
    wrap: list = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None or not _nobody_can_run_the_binaries(binaries):
            pytest.skip("running as root without setpriv or a binary path nobody can reach: no permission error")
        wrap = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    workdir = Path(tempfile.mkdtemp(prefix="faults-perm-"))
    workdir.chmod(0o777)
    try:
        gw = start(jwks, workdir=workdir, wrap=wrap)
        policy_decisions_are_the_good_ones(gw)
        write_atomically(gw.policy, FAULT_POLICY + EXTRA_ROUTE, mode=0o000)
        eventually(lambda: "policy change refused" in gw.log(), "the gateway to refuse the unreadable policy")
        assert "policy.yaml" in gw.log().split("policy change refused", 1)[1]
        for _ in range(3):
            policy_decisions_are_the_good_ones(gw)
            time.sleep(0.2)
        gw.policy.chmod(0o644)
        eventually(lambda: gw.status(path="/extra/x", api_key=gw.keys["ffmpeg"]) == 200,
                   "the now readable policy to be loaded")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_policy_being_written_is_not_applied_half_way(start, jwks):
    """A writer that is not atomic (`cat > policy.yaml`): half the file, a pause, then the rest. The half file is
    a valid policy whose memory route has lost its `require` and would let any key in; it must never be applied."""
    gw = start(jwks)
    stop = threading.Event()
    wrong: list = []

    def probe():
        while not stop.is_set():
            status = gw.status(path=MEMORY, api_key=gw.keys["ffmpeg"])
            if status != 403:
                wrong.append(status)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        for _ in range(5):
            with open(gw.policy, "w") as handle:
                handle.write(HALF_WRITTEN)
                handle.flush()
                time.sleep(0.1)  # shorter than one reload interval: a finished write never stands still this long
                handle.write(FAULT_POLICY[len(HALF_WRITTEN):])
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not wrong, f"the ffmpeg-only key got {wrong} on the memory route while the policy was being written"
    assert "routes\":\"1\"" not in gw.log() and "routes: 1" not in gw.log()
    policy_decisions_are_the_good_ones(gw)


@pytest.mark.parametrize("case", sorted(BAD_POLICIES))
def test_gateway_without_a_good_policy_does_not_start(binaries, jwks, tmp_path, case):
    """A gateway that never had a good policy has nothing to decide with: it refuses to start (exit 65, file:line
    on stderr), so the proxy's forwardAuth gets no answer and denies; it never serves with a partial policy."""
    text, _ = BAD_POLICIES[case]
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    result = subprocess.run([str(binaries[0]), "--policy", str(policy), "--db", str(tmp_path / "db.sqlite"),
                             "--listen", "127.0.0.1:0"], env=gateway_env(jwks), capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 65, result
    assert "policy.yaml:" in result.stderr, result.stderr


# --------------------------------------------------------------------------------------------------------------
# Clock jumps (libfaketime: the wall clock jumps, the monotonic clock does not, as with a real settimeofday)


# libfaketime 0.9.10 preloaded by hand (LD_PRELOAD + FAKETIME_TIMESTAMP_FILE) leaves a Swift program with an empty
# CommandLine.arguments (measured: `[]` instead of `["./argv", "a", "b"]`), so authgateway would start with its
# default policy and port. Through the `faketime` wrapper (which also sets FAKETIME_SHARED) the arguments arrive;
# FAKETIME is then removed so that the offset comes from the file, re-read on every call (FAKETIME_NO_CACHE).
FAKETIME_WRAP = ["faketime", "-f", "+0", "env", "-u", "FAKETIME"]


def faketime_env(offset_file: Path) -> dict:
    return {"FAKETIME_TIMESTAMP_FILE": str(offset_file), "FAKETIME_NO_CACHE": "1",
            # A real settimeofday moves CLOCK_REALTIME only; the monotonic clocks (the JWKS cache, the throttles,
            # NIO's timers) keep counting.
            "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


@pytest.fixture
def faked_clock(tmp_path):
    if not LIBFAKETIME.is_file() or shutil.which("faketime") is None:
        pytest.skip("libfaketime is not installed (scripts/install-deps --e2e installs it)")
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    return offset


def test_clock_jumps_expire_cached_tokens_keep_valid_keys_and_never_wedge_refetch_or_throttle(start, jwks, faked_clock):
    """exp, nbf and iat are read against the wall clock on every request, cached verifications included; the JWKS
    cache and the throttles count on the monotonic clock. What this cannot give: after a backward jump of d, a token
    whose [nbf, exp] contains the new wall time is valid again, even if it expired (in real time) less than d ago,
    as with any verifier that trusts its system clock; its iat/nbf refuse it when the jump is longer than its age."""
    key = SigningKey("a")
    jwks.set("ok", [key])
    jwks.up()
    # A throttle of failed credentials that refills in about a second, to see that no jump leaves it locked.
    policy = FAULT_POLICY.replace("  api_key_header: X-API-Key\n", "  api_key_header: X-API-Key\n  failed_credentials: 5/s\n")
    gw = start(jwks, extra_env=faketime_env(faked_clock), wrap=FAKETIME_WRAP, policy_text=policy)
    assert f"policy={gw.policy}" in gw.log(), "authgateway did not get its arguments under faketime"
    short = key.token(lifetime=600)
    assert gw.status(token=short) == 200  # verified now, and remembered in the verified-token cache
    api_key_decides_normally(gw)

    # Forward 2 h: the cached verification must not outlive the token's exp on the new clock.
    faked_clock.write_text("+2h\n")
    eventually(lambda: gw.status(token=short) == 401, "the 10-minute token to expire after a 2 h jump")
    later = time.time() + 7200
    assert gw.status(token=key.token(now=later)) == 200, "a token valid on the gateway's clock"
    api_key_decides_normally(gw)
    # The JWKS cache is on the monotonic clock: a rotation is still picked up at once.
    rotated = SigningKey("b")
    jwks.set(published=[rotated])
    eventually(lambda: gw.status(token=rotated.token(now=later)) == 200, "the rotated key after the forward jump")
    eventually(lambda: gw.status(token=key.token(now=later)) == 401, "the removed key after the forward jump")
    throttle_is_not_wedged(gw, "after the forward jump")

    # Backward 2 h (from the real time): tokens issued at the real time are from the future; a token that expired
    # in real time a minute ago has iat/nbf after the gateway's now and is refused too.
    faked_clock.write_text("-2h\n")
    expired_real = rotated.token(now=time.time() - 660, lifetime=600)
    eventually(lambda: gw.status(token=rotated.token()) == 401, "tokens from the future after the backward jump")
    assert gw.status(token=expired_real) == 401
    earlier = time.time() - 7200
    assert gw.status(token=rotated.token(now=earlier)) == 200, "a token valid on the gateway's clock"
    api_key_decides_normally(gw)
    # No refetch is pending for hours: another rotation is picked up at once.
    third = SigningKey("c")
    jwks.set(published=[third])
    eventually(lambda: gw.status(token=third.token(now=earlier)) == 200, "the rotated key after the backward jump")
    assert gw.status(token=rotated.token(now=earlier)) in (200, 401)
    eventually(lambda: gw.status(token=rotated.token(now=earlier)) == 401, "the removed key after the backward jump")

    throttle_is_not_wedged(gw, "after the backward jump")

    # Back to the real time: everything as before the jumps.
    faked_clock.write_text("+0\n")
    eventually(lambda: gw.status(token=third.token()) == 200, "recovery at the real time")
    assert gw.status(token=expired_real) == 401
    api_key_decides_normally(gw)
    throttle_is_not_wedged(gw, "back at the real time")


def throttle_is_not_wedged(gw: Gateway, when: str) -> None:
    """One address guesses keys until it gets 429; its valid key still passes, and the throttle lets it guess again
    within seconds (the throttle counts on the monotonic clock, which no wall-clock jump moves)."""
    address = f"198.51.100.{secrets.randbelow(250) + 1}"
    statuses = [gw.status(api_key="agw_" + secrets.token_hex(20), client=address) for _ in range(12)]
    assert 429 in statuses and set(statuses) <= {401, 429}, f"{when}: {statuses}"
    limited = gw.auth(api_key="agw_" + secrets.token_hex(20), client=address)
    if limited.status == 429:
        assert int(limited.header("Retry-After") or "0") <= 2, f"{when}: {limited!r}"
    assert gw.status(api_key=gw.keys["ffmpeg"], client=address) == 200
    eventually(lambda: gw.status(api_key="agw_" + secrets.token_hex(20), client=address) == 401,
               f"the throttle {when} to let the address try again")

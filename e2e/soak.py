"""The soak (issue 12 item 6): real Traefik + the real authgateway + a stand-in backend, driven at about 80 % of the
capacity measured at the start, with a mix of good and bad credentials, from several client addresses.

    python3 e2e/soak.py --seconds 600        # what scripts/soak runs (after a build)
    e2e/test_soak.py                         # the same, 25 s, in the default test command

Every answer is checked against the decision the request must get (status, challenge, identity the backend saw);
any wrong decision, any 5xx other than the vault route's expected 503, any transport error, or RSS / open fds of
the gateway growing beyond the stated tolerance between the start and the end of the soak fails it.

Client addresses are loopback addresses (127.0.0.2-13 and the "hammer" 127.0.0.40): the client connects from them,
Traefik writes them into X-Forwarded-For, and the gateway throttles failed credentials per address. Addresses
127.0.0.8-15 are the internal network the path_context route trusts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e_support as s  # noqa: E402

SOAK_POLICY = s.E2E_DIR / "soak_policy.yaml"
CLIENTS = [f"127.0.0.{n}" for n in range(2, 14)]
INTERNAL = {f"127.0.0.{n}" for n in range(8, 16)}
HAMMER = "127.0.0.40"
HAMMER_RATE = 60.0  # failures a second from the hammer address: three times the soak policy's 20/s
PROCESSES = 2
# Flat: from the sample at the start of the soak to the one at its end, at most this much growth.
RSS_TOLERANCE = (0.15, 16 * 1024)  # 15 %, or 16 MiB if that is more (KiB)
FD_TOLERANCE = (0.20, 16)  # 20 %, or 16 descriptors if that is more
FFMPEG_METADATA = "https://mcp.example.com/.well-known/oauth-protected-resource/ffmpeg"


# --------------------------------------------------------------------------------------------------------------
# The stand-in backend (its own process): echoes the identity it was given, as compact JSON, keep-alive.


class EchoIdentity(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        names = [k.lower() for k in self.headers.keys()]
        body = json.dumps({
            "subject": self.headers.get_all("X-Auth-Subject") or [],
            "method": self.headers.get_all("X-Auth-Method") or [],
            "route": self.headers.get_all("X-Auth-Route") or [],
            "authorization": self.headers.get_all("Authorization") or [],
            "api_key": self.headers.get_all("X-API-Key") or [],
            "aliases": [n for n in names if n in ("x_auth_subject", "x.auth.subject")],
            "path": self.path,
        }, separators=(",", ":")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_backend(port: int) -> None:
    server = ThreadingHTTPServer((s.LOOPBACK, port), EchoIdentity)
    server.daemon_threads = True
    server.request_queue_size = 256
    print(f"backend listening on {port}", flush=True)
    server.serve_forever(poll_interval=0.5)


# --------------------------------------------------------------------------------------------------------------
# The cases: what is sent, and the one decision it must get.


def build_cases(issuer: s.TestIssuer, keys: dict, lifetime: int) -> list:
    """Each case: name, weight, path, headers, expected statuses, what the backend must have seen on a 200,
    the challenge error on a 401, whether it is a failed credential (401 or 429), and which addresses send it."""
    ffmpeg_aud = "https://mcp.example.com/ffmpeg"
    memory_aud = "https://mcp.example.com/openmemory"
    now = int(time.time())
    forger = s.TestIssuer.__new__(s.TestIssuer)  # a key of its own under the issuer's kid, no JWKS server
    from cryptography.hazmat.primitives.asymmetric import ec
    forger.key, forger.kid, forger.issuer = ec.generate_private_key(ec.SECP256R1()), issuer.kid, issuer.issuer

    def pool(make, n):
        return [make() for _ in range(n)]

    valid = pool(lambda: issuer.token(aud=ffmpeg_aud, scope="ffmpeg", lifetime=lifetime), 20)
    valid_memory = pool(lambda: issuer.token(aud=memory_aud, scope="memory", lifetime=lifetime), 5)
    expired = pool(lambda: issuer.token(aud=ffmpeg_aud, iat=now - 900, nbf=now - 900, exp=now - 600), 10)
    wrong_aud = pool(lambda: issuer.token(aud="https://mcp.example.com/elsewhere", lifetime=lifetime), 10)
    forged = pool(lambda: forger.token(aud=ffmpeg_aud, lifetime=lifetime), 20)
    unknown = ["agk_" + secrets.token_hex(32) for _ in range(20)]
    alice, memory_only, revoked = keys["alice"]["key"], keys["memory_only"]["key"], keys["revoked"]["key"]
    bearer = lambda token: [("Authorization", f"Bearer {token}")]  # noqa: E731
    ok = lambda method, route, subject="alice": {"subject": [subject], "method": [method], "route": [route]}  # noqa: E731

    def case(name, weight, path, headers, expect, echo=None, error=None, counted=False, sender=None):
        return {"name": name, "weight": weight, "path": path, "headers": headers, "expect": sorted(expect),
                "echo": echo, "error": error, "counted": counted, "from": sender}

    return [
        case("api key", 14, "/ffmpeg/x", [bearer(alice)], {200}, ok("api_key", "ffmpeg")),
        case("api key in X-API-Key", 4, "/ffmpeg/y", [[("X-API-Key", alice)]], {200}, ok("api_key", "ffmpeg")),
        case("api key lacking the scope", 4, "/ffmpeg/x", [bearer(memory_only)], {403}, error="insufficient_scope"),
        case("unknown api key", 3, "/ffmpeg/x", [bearer(k) for k in unknown], {401}, error="invalid_token", counted=True),
        case("revoked api key", 2, "/ffmpeg/x", [bearer(revoked)], {401}, error="invalid_token", counted=True),
        case("jwt", 12, "/ffmpeg/x", [bearer(t) for t in valid], {200}, ok("jwt", "ffmpeg")),
        case("expired jwt", 4, "/ffmpeg/x", [bearer(t) for t in expired], {401}, error="invalid_token"),
        case("jwt for another audience", 4, "/ffmpeg/x", [bearer(t) for t in wrong_aud], {401}, error="invalid_token"),
        case("forged jwt", 3, "/ffmpeg/x", [bearer(t) for t in forged], {401}, error="invalid_token", counted=True),
        case("bound stream, own", 6, "/openmemory/claude/sse/alice", [bearer(alice)], {200},
             ok("api_key", "openmemory")),
        case("bound stream, own, jwt", 4, "/openmemory/claude/sse/alice", [bearer(t) for t in valid_memory], {200},
             ok("jwt", "openmemory")),
        case("bound stream, another user's", 4, "/openmemory/claude/sse/bob", [bearer(alice)], {403}),
        case("encoded traversal in the bound segment", 2, "/openmemory/claude/sse/alice%2F..%2Fbob", [bearer(alice)],
             {400}),
        case("path context from the internal network", 8, "/internal/claude/sse/bob", [[]], {200},
             ok("path", "internal", "bob"), sender="internal"),
        case("path context from outside", 4, "/internal/claude/sse/bob", [[]], {401}, sender="external"),
        case("path context from outside, spoofed X-Forwarded-For", 2, "/internal/claude/sse/root",
             [[("X-Forwarded-For", "127.0.0.9"), ("X-Real-Ip", "127.0.0.9")]], {401}, sender="external"),
        case("no credential", 8, "/ffmpeg/x", [[]], {401}),
        case("spoofed forwarded headers", 4, "/ffmpeg/x",
             [[("X-Forwarded-Uri", "/vault/x"), ("X-Forwarded-Host", "evil.example.com"),
               ("X-Forwarded-Method", "DELETE"), ("X-Forwarded-For", "10.9.8.7"), *bearer(alice)]],
             {200}, ok("api_key", "ffmpeg")),
        case("forwarded header aliases", 3, "/ffmpeg/x",
             [[("X_Forwarded_Uri", "/vault/x"), ("X.Forwarded.For", "127.0.0.9"), *bearer(alice)]],
             {200}, ok("api_key", "ffmpeg")),
        case("forwarded headers named hop-by-hop", 3, "/ffmpeg/x",
             [[("Connection", "X-Forwarded-Uri, X-Forwarded-Host, X-Forwarded-For"), *bearer(alice)]],
             {200}, ok("api_key", "ffmpeg")),
        case("malformed X-Forwarded-For", 3, "/ffmpeg/x",
             [[("X-Forwarded-For", "not-an-ip, , ::::, 300.1.1.1"), *bearer(alice)]], {200}, ok("api_key", "ffmpeg")),
        case("spoofed identity headers", 3, "/ffmpeg/x",
             [[("X-Auth-Subject", "mallory"), ("X_Auth_Subject", "mallory"), ("X-Auth-Route", "vault"),
               *bearer(alice)]], {200}, ok("api_key", "ffmpeg")),
        case("vault without its backend secret (expected 503)", 2, "/vault/x", [bearer(alice)], {503}),
    ]


# --------------------------------------------------------------------------------------------------------------
# Load: threads with a keep-alive connection each, bound to one client address; in a few processes.


class Connection:
    def __init__(self, port: int, source: str) -> None:
        self.port, self.source, self.conn = port, source, None

    def request(self, path: str, headers: list) -> tuple:
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(s.LOOPBACK, self.port, timeout=s.SOCKET_TIMEOUT,
                                                       source_address=(self.source, 0))
            try:
                self.conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
                self.conn.putheader("Host", s.HOST)
                for name, value in headers:
                    self.conn.putheader(name, value)
                self.conn.endheaders()
                response = self.conn.getresponse()
                body = response.read()
                if response.will_close:
                    self.close()
                return response.status, response.getheaders(), body, attempt
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if fresh or attempt:  # a reused keep-alive connection may have been closed: one retry, as clients do
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def check(case: dict, status: int, headers: list, body: bytes) -> Optional[str]:
    """None when the answer is the decision `case` must get; else what is wrong."""
    def header(name):
        values = [v for k, v in headers if k.lower() == name.lower()]
        return values[0] if values else None

    expected = set(case["expect"]) | ({429} if case["counted"] else set())
    if status not in expected:
        return f"status {status}, expected {sorted(expected)}"
    if status == 429:
        if not (header("Retry-After") or "").isdigit() or b'"too_many_requests"' not in body:
            return "429 without Retry-After or too_many_requests"
        return None
    if status == 401:
        challenge = header("WWW-Authenticate") or ""
        if case["error"] and f'error="{case["error"]}"' not in challenge:
            return f"401 challenge {challenge!r} lacks error={case['error']}"
        if not case["error"] and "error=" in challenge:
            return f"401 without a credential carries an error: {challenge!r}"
        if "resource_metadata=" not in challenge:
            return f"401 challenge without resource_metadata: {challenge!r}"
    if status == 403 and case["error"]:
        if f'error="{case["error"]}"' not in (header("WWW-Authenticate") or ""):
            return f"403 without error={case['error']}"
    if status == 200:
        try:
            echo = json.loads(body)
        except ValueError:
            return f"200 that is not the backend's echo: {body[:200]!r}"
        for name, value in case["echo"].items():
            if echo.get(name) != value:
                return f"backend saw {name}={echo.get(name)!r}, expected {value!r}"
        if echo["authorization"] or echo["api_key"] or echo["aliases"]:
            return f"the client's credential or an identity alias reached the backend: {echo!r}"
    return None


def drive(port: int, source: str, cases: list, rate: Optional[float], until: float, seed: int) -> dict:
    """Sends cases from `source` until `until` (monotonic), at `rate` a second (None: as fast as answered)."""
    chooser = random.Random(seed)
    internal = source in INTERNAL
    usable = [c for c in cases if c["from"] is None or (c["from"] == "internal") == internal]
    weights = [c["weight"] for c in usable]
    stats = {"sent": 0, "wrong": 0, "errors": 0, "retries": 0, "statuses": Counter(), "throttled": Counter(),
             "unexpected_5xx": 0, "examples": []}
    conn = Connection(port, source)
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= until:
            break
        if rate:
            if next_at > now:
                time.sleep(min(next_at - now, until - now))
                continue
            next_at += 1.0 / rate
            if next_at < now - 1.0:  # fell behind by more than a second: do not burst to catch up
                next_at = now
        case = chooser.choices(usable, weights)[0]
        headers = chooser.choice(case["headers"])
        stats["sent"] += 1
        try:
            status, answer_headers, body, retried = conn.request(case["path"], headers)
        except (OSError, http.client.HTTPException) as error:
            stats["errors"] += 1
            conn.close()
            if len(stats["examples"]) < 10:
                stats["examples"].append(f"{source} {case['name']}: transport error {error!r}")
            continue
        stats["retries"] += retried
        stats["statuses"][status] += 1
        if status == 429:
            stats["throttled"][case["name"]] += 1
        problem = check(case, status, answer_headers, body)
        if status >= 500 and status not in case["expect"]:
            stats["unexpected_5xx"] += 1
        if problem:
            stats["wrong"] += 1
            if len(stats["examples"]) < 10:
                stats["examples"].append(f"{source} {case['name']} {case['path']}: {problem}")
    conn.close()
    return stats


def merge(into: dict, more: dict) -> dict:
    for key, value in more.items():
        if isinstance(value, Counter):
            into.setdefault(key, Counter()).update(value)
        elif isinstance(value, list):
            into.setdefault(key, []).extend(value)
        else:
            into[key] = into.get(key, 0) + value
    return into


def worker(port: int, sources: list, cases: list, rate_each: Optional[float], duration: float, seed: int,
           hammer: Optional[dict], results) -> None:
    """One load process: a thread per client address (and the hammer's, if given); puts merged stats on `results`."""
    until = time.monotonic() + duration
    outcomes: dict = {}
    threads = []

    def run(name, source, run_cases, rate, thread_seed):
        outcomes[name] = drive(port, source, run_cases, rate, until, thread_seed)

    for index, source in enumerate(sources):
        threads.append(threading.Thread(target=run, args=(source, source, cases, rate_each, seed + index)))
    if hammer:
        threads.append(threading.Thread(target=run, args=("hammer", HAMMER, hammer["cases"], hammer["rate"], seed + 99)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total: dict = {}
    for name, stats in outcomes.items():
        if name == "hammer":
            stats = {f"hammer_{k}": v for k, v in stats.items()}
        merge(total, stats)
    results.put(total)


def run_load(port: int, cases: list, hammer_cases: list, rate: Optional[float], duration: float, seed: int) -> dict:
    """Runs the client addresses over PROCESSES processes for `duration` s at `rate` in total (None: unpaced)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    groups = [CLIENTS[i::PROCESSES] for i in range(PROCESSES)]
    rate_each = rate / len(CLIENTS) if rate else None
    processes = []
    for index, sources in enumerate(groups):
        hammer = {"cases": hammer_cases, "rate": HAMMER_RATE} if index == 0 and hammer_cases else None
        process = context.Process(target=worker, args=(port, sources, cases, rate_each, duration, seed + 100 * index,
                                                       hammer, results), daemon=True)
        process.start()
        processes.append(process)
    total: dict = {}
    for _ in processes:
        merge(total, results.get(timeout=duration + 120))
    for process in processes:
        process.join(timeout=30)
    return total


# --------------------------------------------------------------------------------------------------------------
# The gateway's resources


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """Samples the gateway's RSS and open fds once a second while the soak runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples, self.stop = pid, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - start, rss_kib(self.pid), open_fds(self.pid)))
            self.stop.wait(1.0)

    def at(self, fraction: float) -> tuple:
        end = self.samples[-1][0]
        return min(self.samples, key=lambda sample: abs(sample[0] - fraction * end))


def within(start: int, end: int, tolerance: tuple) -> bool:
    relative, absolute = tolerance
    return end - start <= max(start * relative, absolute)


# --------------------------------------------------------------------------------------------------------------
# The stack and the run


def child_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("AUTHGATEWAY_DB", None)
    env.pop("SOAK_VAULT_TOKEN", None)
    env.update(extra)
    return env


def soak(seconds: float, workdir: Path, capacity_seconds: float = 5.0, log=print) -> dict:
    """Runs the whole soak; returns the report (report["ok"] says whether it passed)."""
    gateway_bin, authctl = s.gateway_binaries()
    traefik_bin = s.traefik_binary()
    processes = s.Processes()
    issuer = s.TestIssuer()
    try:
        backend_port = s.free_port()
        processes.start("backend", [sys.executable, str(Path(__file__).resolve()), "--backend", str(backend_port)],
                        workdir / "backend.log")
        s.wait_until(lambda: "listening" in (workdir / "backend.log").read_text(), 15, what="the stand-in backend")
        env = child_env({"CORP_ISSUER": issuer.issuer, "CORP_JWKS_URL": issuer.jwks_url,
                         "SOAK_BACKEND_URL": f"http://{s.LOOPBACK}:{backend_port}"})
        s.run_checked([str(authctl), "policy", "check", str(SOAK_POLICY)], env=env)
        db = workdir / "soak.sqlite"
        gateway, gateway_port = s.start_gateway(processes, gateway_bin, SOAK_POLICY, db, env, workdir / "gateway.log")
        keys = {"alice": s.issue_key(authctl, db, "alice", "ffmpeg,memory,vault", name="soak-alice"),
                "memory_only": s.issue_key(authctl, db, "alice", "memory", name="soak-memory"),
                "revoked": s.issue_key(authctl, db, "alice", "ffmpeg", name="soak-revoked")}
        s.run_checked([str(authctl), "--db", str(db), "revoke-key", keys["revoked"]["id"]], env=env)
        dynamic_dir = workdir / "dynamic"
        dynamic_dir.mkdir(exist_ok=True)
        (dynamic_dir / "authgateway.yaml").write_text(s.run_checked(
            [str(authctl), "traefik-config", "--policy", str(SOAK_POLICY), "--gateway-url",
             f"http://127.0.0.1:{gateway_port}"], env=env))
        static = s.run_checked([str(authctl), "traefik-config", "--static"], env=env)
        providers = f"providers:\n  file:\n    directory: \"{dynamic_dir}\"\n    watch: false\n"
        _, traefik_port = s.start_traefik(processes, traefik_bin, workdir, static, providers, probe_path="/ffmpeg/x")

        cases = build_cases(issuer, keys, lifetime=int(seconds + capacity_seconds + 600))
        by_name = {c["name"]: c for c in cases}
        valid_probe = dict(by_name["api key"], weight=1)
        hammer_cases = [dict(by_name["unknown api key"], weight=6), dict(by_name["forged jwt"], weight=3), valid_probe]

        log(f"soak: measuring capacity for {capacity_seconds:.0f} s (unpaced, {len(CLIENTS)} connections)")
        measured = run_load(traefik_port, cases, [], None, capacity_seconds, seed=1)
        capacity = measured["sent"] / capacity_seconds
        target = 0.8 * capacity
        log(f"soak: capacity {capacity:.0f} req/s; driving {target:.0f} req/s for {seconds:.0f} s")

        sampler = Sampler(gateway.pid)
        sampler.thread.start()
        started = time.monotonic()
        result = run_load(traefik_port, cases, hammer_cases, target, seconds, seed=2)
        elapsed = time.monotonic() - started
        sampler.stop.set()
        sampler.thread.join()
        alive = gateway.alive()

        # Start: after the first tenth (caches, buffers and the allocator settle); middle; end.
        start, middle, end = sampler.at(0.1), sampler.at(0.5), sampler.at(1.0)
        flat_rss = within(start[1], end[1], RSS_TOLERANCE)
        flat_fds = within(start[2], end[2], FD_TOLERANCE)
        report = {
            "seconds": round(elapsed, 1), "capacity_rps": round(capacity), "target_rps": round(target),
            "achieved_rps": round(result["sent"] / elapsed), "requests": result["sent"] + result.get("hammer_sent", 0),
            "wrong_decisions": result["wrong"] + result.get("hammer_wrong", 0),
            "unexpected_5xx": result["unexpected_5xx"] + result.get("hammer_unexpected_5xx", 0),
            "expected_503": result["statuses"].get(503, 0),
            "transport_errors": result["errors"] + result.get("hammer_errors", 0),
            "keepalive_retries": result["retries"] + result.get("hammer_retries", 0),
            "statuses": dict(sorted(result["statuses"].items())),
            "throttled_normal": sum(result["throttled"].values()),
            "hammer_sent": result.get("hammer_sent", 0),
            "hammer_throttled": sum(result.get("hammer_throttled", Counter()).values()),
            "rss_kib": {"start": start[1], "middle": middle[1], "end": end[1]},
            "fds": {"start": start[2], "middle": middle[2], "end": end[2]},
            "tolerance": f"RSS end - start <= max({RSS_TOLERANCE[0]:.0%}, {RSS_TOLERANCE[1] // 1024} MiB); "
                         f"fds end - start <= max({FD_TOLERANCE[0]:.0%}, {FD_TOLERANCE[1]})",
            "flat": flat_rss and flat_fds, "gateway_alive": alive,
            "examples": (result["examples"] + result.get("hammer_examples", []))[:20],
        }
        report["ok"] = (report["wrong_decisions"] == 0 and report["unexpected_5xx"] == 0
                        and report["transport_errors"] == 0 and report["flat"] and alive
                        and report["expected_503"] > 0 and report["hammer_throttled"] > 0)
        return report
    finally:
        processes.stop_all()
        issuer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--capacity-seconds", type=float, default=8)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        serve_backend(args.backend)
        return 0
    import tempfile
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="authgateway-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = soak(args.seconds, workdir, capacity_seconds=args.capacity_seconds)
    print(json.dumps(report, indent=2))
    print(f"soak: {'PASS' if report['ok'] else 'FAIL'} (logs in {workdir})")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

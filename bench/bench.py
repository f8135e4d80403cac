#!/usr/bin/env python3
"""AuthGateway benchmark: the gateway against the forward-auth floor, measured in one run. Started by bench/run.

Figures (each the median of BENCH_ROUNDS rounds, the gateway and its comparison alternating within a round):
  alone   wrk → /auth with Traefik's headers: gateway vs nginx `return 200` (1 worker)
  e2e     wrk → Traefik → forwardAuth → nginx backend: gateway vs the nginx `return 200` stub as forwardAuth
  envoy   wrk → Envoy jwt_authn (ES256) → nginx backend vs Envoy without auth (reference)
  scale   10 / 10,000 routes × 1,000 / 1,000,000 keys: p50/p99 and RSS vs the smallest case
  cold    process start → first answered decision, 1M-key store vs 1k-key store
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Callable, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import gen_keystore  # noqa: E402
import gen_policy  # noqa: E402
import gen_tokens  # noqa: E402
from harness import (LOOPBACK, Child, Load, Processes, Wrk, free_port, group_cpu_seconds, http_request,  # noqa: E402
                     wait_until)

ISSUER = "https://issuer.bench.test/realms/mcp"
GROUPS = ["alone", "e2e", "envoy", "scale", "cold"]
WRK_THREADS = 1      # one wrk thread = one core for the load generator, the other for the server under test
WRK_CONNECTIONS = 50  # the concurrency the research floors were measured at; Traefik's clients look like this
CLIENT_HEADERS = [     # what an MCP client sends (Traefik copies them to the auth request)
    ("User-Agent", "mcp-client/1.0 (bench)"),
    ("Accept", "application/json, text/event-stream"),
    ("Accept-Encoding", "gzip"),
    ("Mcp-Protocol-Version", "2025-06-18"),
]


def forwarded(uri: str, client: str) -> list[tuple[str, str]]:
    """The X-Forwarded-* set Traefik 3.7 sends to forwardAuth (trustForwardHeader: false, web entrypoint)."""
    return [("X-Forwarded-Method", "GET"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", gen_policy.HOST),
            ("X-Forwarded-Port", "443"), ("X-Forwarded-Uri", uri), ("X-Forwarded-For", client)] + CLIENT_HEADERS


def bearer(credential: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {credential}")]


# ---------------------------------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One row of the table: a subject measured against a comparison, each once per round."""
    id: str
    group: str
    title: str
    comparison_title: str
    subject: Callable[[], dict]          # one measurement (a wrk result, or {"ms": ...} for cold start)
    comparison: Optional[Callable[[], dict]]
    metric: str = "req_s"                # req_s | p99_us | ms
    runs: list = field(default_factory=list)
    comparison_runs: list = field(default_factory=list)
    rss_of: Optional[Child] = None       # the gateway whose VmRSS is read after each of its runs
    notes: list = field(default_factory=list)


def median(runs: list, key: str) -> Optional[float]:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def cpu_per_request(runs: list) -> dict:
    """Median CPU µs per answered request of each role measured in `runs`."""
    roles = sorted({role for r in runs for role in r.get("cpu_us_per_request", {})})
    return {role: statistics.median(r["cpu_us_per_request"][role] for r in runs if role in r.get("cpu_us_per_request", {}))
            for role in roles}


def summarize(figure: Figure) -> dict:
    keys = ["req_s", "p50_us", "p90_us", "p99_us", "ms"]
    subject = {k: median(figure.runs, k) for k in keys if median(figure.runs, k) is not None}
    comparison = {k: median(figure.comparison_runs, k) for k in keys if median(figure.comparison_runs, k) is not None}
    for side, runs in ((subject, figure.runs), (comparison, figure.comparison_runs)):
        if cpu := cpu_per_request(runs):
            side["cpu_us_per_request"] = cpu
    value, other = subject.get(figure.metric), comparison.get(figure.metric)
    problems = sorted({p for r in figure.runs + figure.comparison_runs for p in r.get("problems", [])})
    return {
        "id": figure.id, "group": figure.group, "title": figure.title, "metric": figure.metric,
        "value": value, "comparison_title": figure.comparison_title, "comparison_value": other,
        "ratio": (value / other) if value is not None and other else None,
        "subject": subject, "comparison": comparison,
        # VmRSS after the last round's run (growth across rounds shows in the runs)
        "rss_kib": figure.runs[-1].get("rss_kib") if figure.runs else None,
        "comparison_rss_kib": figure.comparison_runs[-1].get("rss_kib") if figure.comparison_runs else None,
        "valid": not problems, "problems": problems, "notes": figure.notes,
        "runs": figure.runs, "comparison_runs": figure.comparison_runs,
    }


def fmt_value(metric: str, summary: dict) -> str:
    if not summary:
        return "–"
    if metric == "ms":
        return f"{summary['ms']:.0f} ms"
    text = f"{summary['req_s']:,.0f} req/s" if "req_s" in summary else ""
    if "p50_us" in summary:
        text += f" (p50 {summary['p50_us'] / 1000:.2f} / p99 {summary['p99_us'] / 1000:.2f} ms)"
    return text


def table(rows: list[dict]) -> str:
    lines = ["| figure | value | comparison | ratio |", "|---|---|---|---|"]
    for row in rows:
        ratio = f"{row['ratio']:.2f}×" if row["ratio"] is not None else "–"
        if not row["valid"]:
            ratio += " ⚠ " + "; ".join(row["problems"])
        value = fmt_value(row["metric"], row["subject"])
        comparison = fmt_value(row["metric"], row["comparison"])
        if row["metric"] == "p99_us":
            ratio = ratio.replace("×", "× p99", 1)
        if row.get("rss_kib"):
            value += f", RSS {row['rss_kib'] / 1024:.0f} MB"
        if row.get("comparison_rss_kib"):
            comparison += f", RSS {row['comparison_rss_kib'] / 1024:.0f} MB"
        cmp_title = f"{row['comparison_title']}: {comparison}" if row["comparison_title"] else "–"
        lines.append(f"| {row['title']} | {value} | {cmp_title} | {ratio} |")
    return "\n".join(lines)


def cpu_table(rows: list[dict]) -> str:
    """CPU µs per request of each server, for the figures that record it: where the machine's time goes."""
    measured = [r for r in rows if r["subject"].get("cpu_us_per_request")]
    if not measured:
        return ""
    lines = ["| figure | CPU per request: with the gateway | with the comparison |", "|---|---|---|"]

    def fmt(cpu: dict) -> str:
        return ", ".join(f"{role} {value:.1f} µs" for role, value in cpu.items()) if cpu else "–"
    for row in measured:
        lines.append(f"| {row['title']} | {fmt(row['subject']['cpu_us_per_request'])} | "
                     f"{fmt(row['comparison'].get('cpu_us_per_request', {}))} |")
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[dict]:
    """Issue 6's targets, read off this run: reported, never asserted (a noisy box must not fail anything)."""
    by_id = {r["id"]: r for r in rows}
    out = []

    def add(target: str, figure: str, measured: str, met: Optional[bool]) -> None:
        out.append({"target": target, "figure": figure, "measured": measured, "met": met})
    for fid in ("e2e.api_key", "e2e.jwt_es256", "e2e.path_context", "e2e.api_key_one_thread"):
        row = by_id.get(fid)
        if row and row["ratio"] is not None:
            extra = (row["subject"]["p99_us"] - row["comparison"]["p99_us"]) / 1000
            add("end to end ≥ 0.95× the stub, p99 ≤ stub + 0.5 ms", row["title"],
                f"{row['ratio']:.2f}×, p99 {extra:+.2f} ms", row["ratio"] >= 0.95 and extra <= 0.5)
    alone = [r for r in rows if r["group"] == "alone" and r["ratio"] is not None and r["id"] != "alone.jwt_unique"]
    if alone:  # unique JWTs have their own target below
        worst = min(alone, key=lambda r: r["ratio"])
        add("gateway alone ≥ 0.5× nginx (worst figure but unique JWTs)", worst["title"], f"{worst['ratio']:.2f}×",
            worst["ratio"] >= 0.5)
    row = by_id.get("alone.jwt_unique")
    if row and row["value"]:
        add("≥ 10k unique-JWT decisions/s", row["title"], f"{row['value']:,.0f}/s", row["value"] >= 10_000)
    row = by_id.get("scale.largest")
    if row and row["ratio"] is not None:
        add("p99 at the largest scale ≤ 1.2× the smallest", row["title"], f"{row['ratio']:.2f}×", row["ratio"] <= 1.2)
    row = by_id.get("scale.large_store")
    if row and row["rss_kib"]:
        add("RSS ≤ 64 MB with 1M keys", row["title"], f"{row['rss_kib'] / 1024:.0f} MB", row["rss_kib"] <= 64 * 1024)
    return out


def targets_table(items: list[dict]) -> str:
    lines = ["| target (issue 6) | figure | measured | met |", "|---|---|---|---|"]
    for t in items:
        lines.append(f"| {t['target']} | {t['figure']} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- the run


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="authgateway-bench-"))
        os.chmod(self.workdir, 0o755)  # nginx workers (nobody) read the JWKS file from here
        (self.workdir / "logs").mkdir()
        self.processes = Processes(self.workdir / "logs")
        self.wrk = Wrk(BENCH / "wrk" / "bench.lua", WRK_THREADS, WRK_CONNECTIONS, self.processes)
        self.gateway_bin = Path(os.environ.get("BENCH_GATEWAY_BIN", REPO / ".build" / "release" / "authgateway"))
        self.authctl_bin = Path(os.environ.get("BENCH_AUTHCTL_BIN", REPO / ".build" / "release" / "authctl"))
        self.nginx_bin = os.environ.get("NGINX_BIN") or shutil.which("nginx") or "/usr/sbin/nginx"
        self.figures: list[Figure] = []
        self.servers: dict[str, Child] = {}  # by name, for CPU accounting
        self.started = time.monotonic()

    # ------------------------------------------------------------------ helpers

    def log(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)

    def run_checked(self, argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout

    def write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.write_text(text)
        return path

    def start_gateway(self, name: str, policy: Path, db: Path, port: Optional[int] = None,
                      extra: Optional[list[str]] = None) -> tuple[Child, int]:
        port = port or free_port()
        child = self.processes.start(name, [
            str(self.gateway_bin), "--policy", str(policy), "--db", str(db), "--listen", f"{LOOPBACK}:{port}",
            "--log-level", "error"] + (extra or []), cwd=self.workdir)
        wait_until(lambda: http_request(port, "/healthz", [], timeout=1).status == 200, 60,
                   f"{name} /healthz", child=child)
        return child, port

    def start_nginx(self, name: str, template: str, **values) -> Child:
        (self.workdir / f"{name}-tmp").mkdir(exist_ok=True)
        config = self.write(f"{name}.conf", Template((BENCH / "templates" / template).read_text())
                            .substitute(workdir=self.workdir, **values))
        child = self.processes.start(name, [self.nginx_bin, "-c", str(config), "-e", str(self.workdir / f"{name}.err")])
        wait_until(lambda: http_request(values["port"], "/", [], timeout=1).status == 200, 20, name, child=child)
        self.servers[name] = child
        return child

    def start_traefik(self, name: str, dynamic: str) -> int:
        port = free_port()
        static = self.static_snippet.replace("__ADDRESS__", f"{LOOPBACK}:{port}")
        dynamic_path = self.write(f"{name}-dynamic.yaml", dynamic)
        static += (f"providers:\n  file:\n    filename: \"{dynamic_path}\"\n"
                   "global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\nlog:\n  level: ERROR\n")
        config = self.write(f"{name}-static.yaml", static)
        child = self.processes.start(name, [shutil.which("traefik") or "traefik", f"--configFile={config}"],
                                     env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir)},
                                     cwd=self.workdir)
        wait_until(lambda: http_request(port, gen_policy.TARGET_PATH, [], host=gen_policy.HOST, timeout=2).status
                   != 404, 30, f"{name} to route {gen_policy.TARGET_PATH}", interval=0.2, child=child)
        self.servers[name] = child
        return port

    def check(self, what: str, port: int, headers: list, status: int, method: Optional[str] = None,
              host: Optional[str] = None, path: str = "/auth") -> None:
        """One request before measuring: the load must get the answer the figure claims to measure."""
        reply = http_request(port, path, headers, host=host)
        got_method = reply.headers.get("x-auth-method")
        if reply.status != status or (method and got_method != method):
            raise RuntimeError(f"precheck '{what}': expected {status}{' ' + method if method else ''}, got "
                               f"{reply.status} X-Auth-Method={got_method!r}: {reply.body[:300]!r}")

    def measure(self, load: Load, cpu_of: Optional[dict] = None) -> Callable[[], dict]:
        """One wrk run after a warm-up; with `cpu_of` ({role: Child}), also each server's CPU µs per request."""
        seconds, warmup = self.args.seconds, self.args.warmup

        def run() -> dict:
            if warmup > 0:
                self.wrk.run(load, warmup)
            before = {role: group_cpu_seconds(child.pid) for role, child in (cpu_of or {}).items()}
            result = self.wrk.run(load, seconds)
            if cpu_of and result["requests"]:
                result["cpu_us_per_request"] = {
                    role: (group_cpu_seconds(child.pid) - before[role]) * 1e6 / result["requests"]
                    for role, child in cpu_of.items()}
            return result
        return run

    def add(self, *args, **kwargs) -> Figure:
        figure = Figure(*args, **kwargs)
        self.figures.append(figure)
        return figure

    # ------------------------------------------------------------------ setup

    def setup_common(self) -> None:
        self.stub_port, self.backend_port, self.jwks_port = free_port(), free_port(), free_port()
        self.identity_stub_port = free_port()
        self.backend_url = f"http://{LOOPBACK}:{self.backend_port}"
        self.jwks_url = f"http://{LOOPBACK}:{self.jwks_port}/jwks.json"
        unique = self.args.unique_tokens if "alone" in self.args.groups else 0
        self.log(f"signing keys, JWKS and tokens ({unique} unique ES256 tokens)")
        gen_tokens.write_all(self.workdir, ISSUER, gen_policy.AUDIENCE, unique)
        self.es256 = (self.workdir / "es256.jwt").read_text().strip()
        self.rs256 = (self.workdir / "rs256.jwt").read_text().strip()
        self.log("nginx stub and backend")
        self.start_nginx("nginx-stub", "nginx-stub.conf", port=self.stub_port)
        if "e2e" in self.args.groups:
            self.start_nginx("nginx-stub-identity", "nginx-stub-identity.conf", port=self.identity_stub_port)
        self.start_nginx("nginx-backend", "nginx-backend.conf", port=self.backend_port, jwks_port=self.jwks_port)
        self.policy = self.write("policy.yaml", gen_policy.bench_policy(ISSUER, self.jwks_url, self.backend_url))
        self.db = self.workdir / "main.sqlite"
        issued = json.loads(self.run_checked([str(self.authctl_bin), "--db", str(self.db), "issue-key", "--subject",
                                              "alice", "--scopes", "ffmpeg,memory", "--name", "bench", "--json"]))
        self.api_key = issued["key"]
        self.gateway, self.gateway_port = self.start_gateway("authgateway", self.policy, self.db)

    # ------------------------------------------------------------------ groups

    def setup_alone(self) -> None:
        gw, stub = f"http://{LOOPBACK}:{self.gateway_port}/auth", f"http://{LOOPBACK}:{self.stub_port}/auth"
        target = forwarded(gen_policy.TARGET_PATH, "203.0.113.7")
        path_ctx = forwarded(gen_policy.PATH_CONTEXT_PATH, "127.0.0.1")
        cases = [
            ("alone.api_key", "Gateway alone: API key", target + bearer(self.api_key), "api_key", 200, None),
            ("alone.api_key_new_connection", "Gateway alone: API key, new connection per request",
             target + bearer(self.api_key) + [("Connection", "close")], "api_key", 200, None),
            ("alone.jwt_es256", "Gateway alone: JWT ES256, warm JWKS", target + bearer(self.es256), "jwt", 200, None),
            ("alone.jwt_rs256", "Gateway alone: JWT RS256, warm JWKS", target + bearer(self.rs256), "jwt", 200, None),
            ("alone.jwt_unique", "Gateway alone: unique ES256 JWTs (decisions/s, no cache can help)", target, "jwt", 200,
             self.workdir / "unique-es256.txt"),
            ("alone.path_context", "Gateway alone: path-context", path_ctx, "path", 200, None),
            ("alone.denied", "Gateway alone: denied (no credential, 401)", target, None, 401, None),
        ]
        for fid, title, headers, method, status, cycle in cases:
            # The precheck uses the file's last token, the one the measured runs reach last (if at all).
            probe = bearer(cycle.read_text().rstrip("\n").rsplit("\n", 1)[-1]) if cycle else []
            self.check(fid, self.gateway_port, headers + probe, status, method)
            self.check(fid + " (nginx)", self.stub_port, headers + probe, 200)
            new_connections = ("Connection", "close") in headers
            subject = Load(gw, headers, cycle_file=cycle, expect_ok=status < 400, tolerate_read_errors=new_connections)
            comparison = Load(stub, headers, cycle_file=cycle, advance_offset=False,
                              tolerate_read_errors=new_connections)
            self.add(fid, "alone", title, "nginx return 200",
                     self.measure(subject, cpu_of={"gateway": self.gateway}),
                     self.measure(comparison, cpu_of={"nginx": self.servers["nginx-stub"]}), rss_of=self.gateway)

    def setup_e2e(self) -> None:
        snippet = self.run_checked([str(self.authctl_bin), "traefik-config", "--static"])
        lines, replaced = [], False
        for line in snippet.splitlines():
            if not replaced and line.strip().startswith("address:"):
                line = line[: line.index("address:")] + 'address: "__ADDRESS__"'
                replaced = True
            lines.append(line)
        if not replaced:
            raise RuntimeError(f"`authctl traefik-config --static` printed no entrypoint address:\n{snippet}")
        self.static_snippet = "\n".join(lines) + "\n"

        def dynamic(auth_url: str) -> str:
            return self.run_checked([str(self.authctl_bin), "traefik-config", "--policy", str(self.policy),
                                     "--gateway-url", auth_url])
        self.log("Traefik → gateway, Traefik → nginx stub, Traefik → nginx without auth")
        via_gateway = self.start_traefik("traefik-gateway", dynamic(f"http://{LOOPBACK}:{self.gateway_port}"))
        via_stub = self.start_traefik("traefik-stub", dynamic(f"http://{LOOPBACK}:{self.stub_port}"))
        plain = self.start_traefik("traefik-plain", (
            "http:\n  routers:\n    plain:\n      rule: \"PathPrefix(`/`)\"\n      service: backend\n"
            f"  services:\n    backend:\n      loadBalancer:\n        servers:\n          - url: \"{self.backend_url}\"\n"))
        cases = [
            ("e2e.api_key", "End to end: API key", gen_policy.TARGET_PATH, bearer(self.api_key)),
            ("e2e.jwt_es256", "End to end: JWT ES256", gen_policy.TARGET_PATH, bearer(self.es256)),
            ("e2e.path_context", "End to end: path-context", gen_policy.PATH_CONTEXT_PATH, []),
        ]
        for fid, title, path, credential in cases:
            headers = [("Host", gen_policy.HOST)] + CLIENT_HEADERS + credential
            self.check(fid, via_gateway, headers, 200, path=path, host=gen_policy.HOST)
            self.check(fid + " (stub)", via_stub, headers, 200, path=path, host=gen_policy.HOST)
            subject = Load(f"http://{LOOPBACK}:{via_gateway}{path}", headers)
            comparison = Load(f"http://{LOOPBACK}:{via_stub}{path}", headers)
            backend = self.servers["nginx-backend"]
            self.add(fid, "e2e", title, "Traefik → nginx stub → nginx",
                     self.measure(subject, cpu_of={"gateway": self.gateway, "Traefik": self.servers["traefik-gateway"],
                                                   "backend": backend}),
                     self.measure(comparison, cpu_of={"stub": self.servers["nginx-stub"],
                                                      "Traefik": self.servers["traefik-stub"], "backend": backend}),
                     rss_of=self.gateway)
        # The same with the gateway on one event loop thread, as nginx's one worker: on two cores shared with
        # Traefik, fewer gateway threads leave Traefik more of the machine.
        one_thread, one_thread_port = self.start_gateway("authgateway-1-thread", self.policy, self.db, extra=["--threads", "1"])
        via_one_thread = self.start_traefik("traefik-gateway-1-thread", dynamic(f"http://{LOOPBACK}:{one_thread_port}"))
        headers = [("Host", gen_policy.HOST)] + CLIENT_HEADERS + bearer(self.api_key)
        self.check("e2e.api_key_one_thread", via_one_thread, headers, 200, path=gen_policy.TARGET_PATH, host=gen_policy.HOST)
        self.add("e2e.api_key_one_thread", "e2e", "End to end: API key, gateway `--threads 1`", "Traefik → nginx stub → nginx",
                 self.measure(Load(f"http://{LOOPBACK}:{via_one_thread}{gen_policy.TARGET_PATH}", headers),
                              cpu_of={"gateway": one_thread, "Traefik": self.servers["traefik-gateway-1-thread"],
                                      "backend": self.servers["nginx-backend"]}),
                 self.measure(Load(f"http://{LOOPBACK}:{via_stub}{gen_policy.TARGET_PATH}", headers),
                              cpu_of={"stub": self.servers["nginx-stub"], "Traefik": self.servers["traefik-stub"],
                                      "backend": self.servers["nginx-backend"]}),
                 rss_of=one_thread)
        # Against a stub that also answers with identity headers: what Traefik's copying of them costs is then on
        # both sides, and the ratio is what the gateway's decision and connection handling cost.
        via_identity_stub = self.start_traefik("traefik-stub-identity", dynamic(f"http://{LOOPBACK}:{self.identity_stub_port}"))
        self.check("e2e.api_key (identity stub)", via_identity_stub, headers, 200, path=gen_policy.TARGET_PATH, host=gen_policy.HOST)
        self.add("e2e.api_key_identity_stub", "e2e", "End to end: API key, against a stub returning identity headers",
                 "Traefik → nginx stub with identity headers → nginx",
                 self.measure(Load(f"http://{LOOPBACK}:{via_gateway}{gen_policy.TARGET_PATH}", headers),
                              cpu_of={"gateway": self.gateway, "Traefik": self.servers["traefik-gateway"],
                                      "backend": self.servers["nginx-backend"]}),
                 self.measure(Load(f"http://{LOOPBACK}:{via_identity_stub}{gen_policy.TARGET_PATH}", headers),
                              cpu_of={"stub": self.servers["nginx-stub-identity"],
                                      "Traefik": self.servers["traefik-stub-identity"],
                                      "backend": self.servers["nginx-backend"]}),
                 rss_of=self.gateway)
        # Context: what forwardAuth costs in itself (the stub path vs no auth at all).
        headers = [("Host", gen_policy.HOST)] + CLIENT_HEADERS
        self.add("e2e.no_auth", "e2e", "Context: Traefik → nginx, no forwardAuth", "",
                 self.measure(Load(f"http://{LOOPBACK}:{plain}{gen_policy.TARGET_PATH}", headers),
                              cpu_of={"Traefik": self.servers["traefik-plain"], "backend": self.servers["nginx-backend"]}),
                 None)

    def setup_envoy(self) -> None:
        jwt_port, plain_port = free_port(), free_port()
        jwks = (self.workdir / "jwks.json").read_text()
        config = self.write("envoy.yaml", Template((BENCH / "templates" / "envoy.yaml").read_text()).substitute(
            jwt_port=jwt_port, plain_port=plain_port, backend_port=self.backend_port, issuer=ISSUER,
            audience=gen_policy.AUDIENCE, jwks=jwks))
        self.log("Envoy (1 worker)")
        child = self.processes.start("envoy", [shutil.which("envoy") or "envoy", "-c", str(config), "--concurrency", "1",
                                               "--disable-hot-restart", "--log-level", "error"], cwd=self.workdir)
        wait_until(lambda: http_request(plain_port, "/", [], timeout=1).status == 200, 60, "envoy", child=child)
        headers = [("Host", gen_policy.HOST)] + CLIENT_HEADERS + bearer(self.es256)
        self.check("envoy.jwt_authn", jwt_port, headers, 200, path=gen_policy.TARGET_PATH, host=gen_policy.HOST)
        self.check("envoy.jwt_authn rejects", jwt_port, headers[:-1], 401, path=gen_policy.TARGET_PATH,
                   host=gen_policy.HOST)
        self.add("envoy.jwt_es256", "envoy", "Reference: Envoy jwt_authn ES256 (token cache on) → nginx",
                 "Envoy → nginx, no auth",
                 self.measure(Load(f"http://{LOOPBACK}:{jwt_port}{gen_policy.TARGET_PATH}", headers)),
                 self.measure(Load(f"http://{LOOPBACK}:{plain_port}{gen_policy.TARGET_PATH}", headers)))

    def make_store(self, name: str, count: int) -> tuple[Path, Path]:
        db = self.workdir / f"{name}.sqlite"
        shutil.copyfile(self.schema_db, db)
        sample = self.workdir / f"{name}-keys.txt"
        seconds = gen_keystore.fill(db, count, "ffmpeg memory", sample=self.args.sample_keys, sample_out=sample)
        self.log(f"store {name}: {count:,} keys in {seconds:.1f}s, {db.stat().st_size / 1e6:.0f} MB")
        return db, sample

    def setup_schema_db(self) -> None:
        """Starts the gateway once on an empty file so its migrations create the schema, then stops it."""
        self.schema_db = self.workdir / "schema.sqlite"
        child, _ = self.start_gateway("authgateway-schema", self.policy, self.schema_db)
        self.processes.stop(child)
        with sqlite3.connect(self.schema_db) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for suffix in ("-wal", "-shm"):
            Path(str(self.schema_db) + suffix).unlink(missing_ok=True)

    def setup_scale(self) -> None:
        self.setup_schema_db()
        large_routes, large_keys = self.args.large_routes, self.args.large_keys
        stores = {"small": self.make_store("keys-1k", 1_000), "large": self.make_store("keys-1m", large_keys)}
        self.scale_stores = stores
        key_label = {"small": "1k keys", "large": f"{large_keys / 1e6:g}M keys"}
        # (figure id, routes, policy shape, store, title); the first is the comparison of all the others.
        cases = [
            ("scale.small", 10, "mixed", "small", ""),
            (f"scale.{large_routes}_routes", large_routes, "mixed", "small", ""),
            ("scale.large_store", 10, "mixed", "large", ""),
            ("scale.largest", large_routes, "mixed", "large", ""),
            (f"scale.{large_routes}_routes_distinct", large_routes, "distinct", "small",
             ", every route its own first segment"),
        ]
        self.scale_gateways = {}
        measures = {}
        for fid, routes, shape, store, extra in cases:
            policy = self.workdir / f"scale-{routes}-{shape}.yaml"
            if not policy.exists():
                policy.write_text(gen_policy.scale_policy(ISSUER, self.jwks_url, self.backend_url, routes, shape))
            name = f"authgateway-{routes}-routes-{shape}-{store}-store"
            child, port = self.start_gateway(name, policy, stores[store][0])
            headers = forwarded(gen_policy.TARGET_PATH, "203.0.113.7")
            key = stores[store][1].read_text().split("\n", 1)[0]
            self.check(name, port, headers + bearer(key), 200, "api_key")
            route = http_request(port, "/auth", headers + bearer(key)).headers.get("x-auth-route")
            if route != "ffmpeg":
                raise RuntimeError(f"{name}: decided on route {route!r}, not the target route ffmpeg")
            self.scale_gateways[fid] = child
            measures[fid] = self.measure(Load(f"http://{LOOPBACK}:{port}/auth", headers, cycle_file=stores[store][1]))

        # The smallest case is measured once per round and is the comparison of every other case.
        cached: dict = {}

        def smallest() -> dict:
            return cached.setdefault(self.round, measures["scale.small"]())
        for fid, routes, shape, store, extra in cases:
            title = f"Scale: {routes:,} routes, {key_label[store]}{extra} (API keys cycling)"
            if fid == "scale.small":
                self.add(fid, "scale", title, "", smallest, None, metric="p99_us", rss_of=self.scale_gateways[fid])
            else:
                self.add(fid, "scale", title, "10 routes, 1k keys", measures[fid], smallest, metric="p99_us",
                         rss_of=self.scale_gateways[fid])

    def setup_cold(self) -> None:
        small_db, small_keys = self.scale_stores["small"]
        large_db, large_keys = self.scale_stores["large"]
        policy = self.workdir / "scale-10-mixed.yaml"

        def cold(db: Path, keys: Path) -> Callable[[], dict]:
            key = keys.read_text().split("\n", 1)[0]
            headers = forwarded(gen_policy.TARGET_PATH, "203.0.113.7") + bearer(key)

            def run() -> dict:
                port = free_port()
                child = self.processes.start("authgateway-cold", [
                    str(self.gateway_bin), "--policy", str(policy), "--db", str(db), "--listen",
                    f"{LOOPBACK}:{port}", "--log-level", "error"], cwd=self.workdir)
                try:
                    def answered():
                        try:
                            return http_request(port, "/auth", headers, timeout=1).status == 200
                        except ConnectionRefusedError:
                            return False
                    wait_until(answered, 60, "the first answered decision", interval=0.002, child=child)
                    elapsed = (time.monotonic() - child.started) * 1000
                    return {"ms": elapsed, "rss_kib": child.rss_kib()}
                finally:
                    self.processes.stop(child)
            return run
        self.add("cold.large_store", "cold", f"Cold start to first decision, {self.args.large_keys / 1e6:g}M keys",
                 "1k keys", cold(large_db, large_keys), cold(small_db, small_keys), metric="ms")

    # ------------------------------------------------------------------ run

    def run(self) -> dict:
        self.log(f"workdir {self.workdir}; rounds {self.args.rounds} × {self.args.seconds}s "
                 f"(+{self.args.warmup}s warm-up), wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}")
        load_before = os.getloadavg()
        if load_before[0] > 1.5:
            self.log(f"warning: load average {load_before[0]:.1f} on {os.cpu_count()} CPUs: other work shares the "
                     "machine, absolute numbers will be low and noisy (the ratios hold up better)")
        self.setup_common()
        setups = {"alone": self.setup_alone, "e2e": self.setup_e2e, "envoy": self.setup_envoy,
                  "scale": self.setup_scale, "cold": self.setup_cold}
        if "cold" in self.args.groups and "scale" not in self.args.groups:
            self.args.groups.insert(self.args.groups.index("cold"), "scale")
        for group in GROUPS:
            if group in self.args.groups:
                self.log(f"setting up {group}")
                setups[group]()
        for self.round in range(self.args.rounds):
            for figure in self.figures:
                # Alternate which of the pair goes first, so slow drift (other load, heat) hits both alike.
                order = [("subject", figure.subject), ("comparison", figure.comparison)]
                if self.round % 2:
                    order.reverse()
                for which, measure in order:
                    if measure is None:
                        continue
                    result = measure()
                    if which == "subject" and figure.rss_of is not None:
                        result["rss_kib"] = figure.rss_of.rss_kib()
                    (figure.runs if which == "subject" else figure.comparison_runs).append(result)
                last = figure.runs[-1]
                self.log(f"round {self.round + 1}/{self.args.rounds} {figure.id}: "
                         f"{fmt_value(figure.metric, last)}"
                         + (f" vs {fmt_value(figure.metric, figure.comparison_runs[-1])}" if figure.comparison_runs else ""))
        for figure in self.figures:
            if figure.id == "alone.jwt_unique" and any(r.get("cycle_wrapped") for r in figure.runs):
                figure.notes.append("the unique-token file ran out and started over, so tokens repeated: "
                                    "raise BENCH_UNIQUE_TOKENS")
        rows = [summarize(f) for f in self.figures]
        return self.report(rows, load_before)

    def report(self, rows: list[dict], load_before: tuple) -> dict:
        def version(argv: list[str]) -> str:
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
                return (done.stdout + done.stderr).strip().splitlines()[0]
            except (OSError, subprocess.TimeoutExpired, IndexError):
                return "?"
        git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "Sources", "Package.swift"],
                                    capture_output=True, text=True).stdout.strip())
        goals = targets(rows)
        cpu = cpu_table(rows)
        markdown = table(rows) + ("\n\n" + cpu if cpu else "") + ("\n\n" + targets_table(goals) if goals else "")
        return {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "git": {"commit": git, "sources_dirty": dirty},
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "load_before": load_before,
                        "load_after": os.getloadavg()},
            "versions": {"wrk": version(["wrk", "-v"]), "nginx": version([self.nginx_bin, "-v"]),
                         "traefik": version(["traefik", "version"]), "envoy": version(["envoy", "--version"]),
                         "swift": version(["swift", "--version"])},
            "settings": {"rounds": self.args.rounds, "seconds": self.args.seconds, "warmup_seconds": self.args.warmup,
                         "wrk_threads": WRK_THREADS, "wrk_connections": WRK_CONNECTIONS, "quick": self.args.quick,
                         "groups": self.args.groups, "unique_tokens": self.args.unique_tokens,
                         "large_routes": self.args.large_routes, "large_keys": self.args.large_keys,
                         "sample_keys": self.args.sample_keys},
            "duration_seconds": round(time.monotonic() - self.started, 1),
            "table": markdown,
            "targets": goals,
            "figures": rows,
        }

    def cleanup(self) -> None:
        self.processes.stop_all()
        if os.environ.get("BENCH_KEEP_WORKDIR"):
            self.log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round × 2 s (development), smaller token file")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups: {','.join(GROUPS)}")
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    env = os.environ.get
    args.rounds = int(env("BENCH_ROUNDS", "1" if args.quick else "3"))
    args.seconds = float(env("BENCH_SECONDS", "2" if args.quick else "5"))
    args.warmup = float(env("BENCH_WARMUP", "1"))
    args.unique_tokens = int(env("BENCH_UNIQUE_TOKENS", "40000" if args.quick else "300000"))
    args.large_routes = int(env("BENCH_LARGE_ROUTES", "10000"))
    args.large_keys = int(env("BENCH_LARGE_KEYS", "1000000"))
    args.sample_keys = int(env("BENCH_SAMPLE_KEYS", "1000"))
    args.groups = [g for g in args.only.split(",") if g]
    unknown = set(args.groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}")
    return args


def main() -> int:
    args = parse_args()
    bench = Bench(args)

    def stop(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        result = bench.run()
    finally:
        bench.cleanup()
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d-%H%M")
    path = args.results / f"{stamp}-{result['host']}.json"
    text = json.dumps(result, indent=2) + "\n"
    path.write_text(text)
    (args.results / "latest.json").write_text(text)
    print(result["table"])
    print(f"\nJSON: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}"
          f" (and {args.results.name}/latest.json); {result['duration_seconds']:.0f}s")
    unique = next((r for r in result["figures"] if r["id"] == "alone.jwt_unique"), None)
    if unique and unique["notes"]:
        print("note: " + "; ".join(unique["notes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Processes, ports, probes and wrk for the benchmark. Loopback only; every wait is bounded.

Every child (servers and each wrk run) starts in its own session (process group) and is stopped by that group id.
The ids of the children still running are kept in $BENCH_PIDFILE, so that bench/run's trap can stop them should
this Python process die without cleaning up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

LOOPBACK = "127.0.0.1"


# ---------------------------------------------------------------------------------------------------- processes


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log: Path
    started: float  # time.monotonic() just before the fork

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def rss_kib(self) -> Optional[int]:
        """VmRSS of the process itself (not its children), in KiB."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None


class Processes:
    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[Child] = []
        self.pidfile = os.environ.get("BENCH_PIDFILE")

    def start(self, name: str, argv: list[str], env: Optional[dict] = None, cwd: Optional[Path] = None) -> Child:
        log = self.logdir / f"{name}.log"
        with open(log, "ab") as out:
            started = time.monotonic()
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=env, cwd=str(cwd) if cwd else None, start_new_session=True)
        child = Child(name, popen, log, started)
        self.children.append(child)
        self._write_pidfile()
        return child

    def stop(self, child: Child, grace: float = 5.0) -> None:
        if child.alive():
            _killpg(child.pid, signal.SIGTERM)
            try:
                child.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _killpg(child.pid, signal.SIGKILL)
                try:
                    child.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        _killpg(child.pid, signal.SIGKILL)  # whatever it left in its group (nginx workers)
        if child in self.children:
            self.children.remove(child)
        self._write_pidfile()

    def _write_pidfile(self) -> None:
        """Only groups still running stay listed, so the trap never signals a recycled id."""
        if self.pidfile:
            with open(self.pidfile, "w") as f:
                f.writelines(f"{c.pid}\n" for c in self.children)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child, grace=3.0)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every process in the process group `pgid` (a server and its workers)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, ... utime (14th field overall), stime (15th).
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------------- waiting, ports


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05,
               child: Optional[Child] = None):
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while True:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.popen.returncode} while waiting for {what}:\n"
                               f"{child.tail()}")
        try:
            value = predicate()
            if value:
                return value
        except OSError as error:
            last = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last!r})" if last else ""
            log = f"\n--- {child.name} log:\n{child.tail()}" if child else ""
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{log}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------- raw HTTP


@dataclass
class Reply:
    status: int
    headers: dict  # lower-case name -> value (last one wins)
    body: bytes


def http_request(port: int, path: str, headers: list[tuple[str, str]], host: Optional[str] = None,
                 timeout: float = 2.0) -> Reply:
    """One HTTP/1.1 request on a fresh connection (Connection: close); the whole answer."""
    lines = [f"GET {path} HTTP/1.1"]
    if not any(name.lower() == "host" for name, _ in headers):
        lines.append(f"Host: {host or f'{LOOPBACK}:{port}'}")
    lines += [f"{name}: {value}" for name, value in headers if name.lower() != "connection"]
    lines.append("Connection: close")
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split()[1]), parsed, body)


# ---------------------------------------------------------------------------------------------------- wrk


@dataclass
class Load:
    """One wrk workload: a URL, the request headers, and optionally a file of credentials to cycle through."""
    url: str
    headers: list[tuple[str, str]]
    cycle_file: Optional[Path] = None
    cycle_header: str = "Authorization"
    cycle_prefix: str = "Bearer "
    expect_ok: bool = True  # False: every answer must be a 4xx (denied requests)
    advance_offset: bool = True  # next run continues where this one stopped in cycle_file (fresh credentials)
    # Connection: close loads: a server that closes after answering without saying `Connection: close` makes wrk
    # try one more request on the dead socket and count a read error per request; the answers still count.
    tolerate_read_errors: bool = False


RESULT = re.compile(r"^BENCH_RESULT (\{.*\})$", re.M)


class Wrk:
    def __init__(self, script: Path, threads: int, connections: int, processes: Processes) -> None:
        self.script = script
        self.threads = threads
        self.connections = connections
        self.processes = processes
        self.cycle_offsets: dict[Path, int] = {}
        self.cycle_lengths: dict[Path, int] = {}

    def run(self, load: Load, seconds: float) -> dict:
        """Runs wrk for `seconds`; returns its BENCH_RESULT plus req_s and a `valid` verdict."""
        env = dict(os.environ)
        if load.cycle_file:
            env.update(BENCH_CYCLE_FILE=str(load.cycle_file), BENCH_CYCLE_HEADER=load.cycle_header,
                       BENCH_CYCLE_PREFIX=load.cycle_prefix,
                       BENCH_CYCLE_OFFSET=str(self.cycle_offsets.get(load.cycle_file, 0)))
        argv = ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{max(1, round(seconds))}s", "--latency",
                "--timeout", "5s", "-s", str(self.script)]
        for name, value in load.headers:
            argv += ["-H", f"{name}: {value}"]
        argv.append(load.url)
        child = self.processes.start("wrk", argv, env=env)
        try:
            child.popen.wait(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"wrk did not finish: {' '.join(argv)}") from None
        finally:
            self.processes.stop(child)
        output = child.log.read_text(errors="replace")
        child.log.unlink()
        match = RESULT.search(output)
        if child.popen.returncode != 0 or not match:
            raise RuntimeError(f"wrk failed ({child.popen.returncode}): {' '.join(argv)}\n{output}")
        result = json.loads(match.group(1))
        result["req_s"] = result["requests"] / (result["duration_us"] / 1e6)
        if load.cycle_file and load.advance_offset:
            if load.cycle_file not in self.cycle_lengths:
                with open(load.cycle_file, "rb") as f:
                    self.cycle_lengths[load.cycle_file] = sum(1 for line in f if line.strip())
            end = self.cycle_offsets.get(load.cycle_file, 0) + result["requests"]
            self.cycle_offsets[load.cycle_file] = end
            # Past the end of the file the script starts over: credentials are then seen for the second time.
            result["cycle_wrapped"] = end > self.cycle_lengths[load.cycle_file]
        socket_errors = result["connect_errors"] + result["write_errors"] + result["timeouts"]
        socket_errors += 0 if load.tolerate_read_errors else result["read_errors"]
        problems = []
        if load.expect_ok and result["non_2xx"]:
            problems.append(f"{result['non_2xx']} answers were not 2xx/3xx")
        if not load.expect_ok and result["non_2xx"] < result["requests"]:
            problems.append(f"{result['requests'] - result['non_2xx']} answers were not denials")
        if socket_errors > result["requests"] * 0.001:
            problems.append(f"{socket_errors} socket errors")
        result["problems"] = problems
        result["valid"] = not problems
        return result

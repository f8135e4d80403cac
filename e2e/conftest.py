"""Fixtures for the end-to-end suite: real Traefik 3.7 + the real authgateway/authctl binaries + stand-in backends.

Topology (all on 127.0.0.1, ports picked at run time):

    client ──Host: mcp.example.com──▶ Traefik (entrypoint web, file provider, config from `authctl traefik-config`)
                                         │ forwardAuth ──▶ authgateway (--listen 127.0.0.1:0, e2e/policy.yaml)
                                         ▼                                   └─ JWKS ◀── test issuer (ES256)
                                     ffmpeg echo · trello (checks its token) · openmemory SSE
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import e2e_support as s

POLICY = s.POLICY
_ACTIVE_LOGS = s.ACTIVE_LOGS


def child_env(extra: dict) -> dict:
    """The environment for the gateway and authctl: ours without proxy settings (loopback only) plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("AUTHGATEWAY_DB", None)
    env.update(extra)
    return env


@dataclass
class Stack:
    workdir: Path
    gateway_bin: Path
    authctl: Path
    traefik_bin: Path
    db: Path
    env: dict
    issuer: s.TestIssuer
    ffmpeg: s.Backend
    trello: s.Backend
    openmemory: s.Backend
    trello_token: str
    static_snippet: str
    gateway_port: int = 0
    traefik_port: int = 0
    gateway: s.Child = None
    traefik: s.Child = None
    keys: dict = field(default_factory=dict)

    def get(self, path: str, headers=(), method: str = "GET", body=None) -> s.Reply:
        """A request through Traefik's entrypoint with Host: mcp.example.com."""
        return s.request(self.traefik_port, path, headers, method=method, body=body)

    def key(self, name: str) -> str:
        return self.keys[name]["key"]


@pytest.fixture(scope="session")
def binaries():
    try:
        gateway, ctl = s.gateway_binaries()
        traefik = s.traefik_binary()
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)
    return gateway, ctl, traefik


@pytest.fixture(scope="session")
def services(request, tmp_path_factory):
    """The test issuer and the three stand-in backends (threads in this process)."""
    issuer = s.TestIssuer()
    request.addfinalizer(issuer.close)
    ffmpeg = s.Backend("ffmpeg", s.FfmpegHandler)
    request.addfinalizer(ffmpeg.close)
    token = "trello-" + secrets.token_hex(16)
    trello = s.Backend("trello", s.TrelloHandler, token=token)
    request.addfinalizer(trello.close)
    openmemory = s.Backend("openmemory", s.SSEHandler)
    request.addfinalizer(openmemory.close)
    env = child_env({
        "CORP_ISSUER": issuer.issuer, "CORP_JWKS_URL": issuer.jwks_url,
        "FFMPEG_URL": ffmpeg.url, "TRELLO_URL": trello.url, "OPENMEMORY_URL": openmemory.url,
        "TRELLO_TOKEN": token,
    })
    return issuer, ffmpeg, trello, openmemory, token, env


@pytest.fixture(scope="session")
def stack(request, binaries, services, tmp_path_factory) -> Stack:
    gateway_bin, authctl, traefik_bin = binaries
    issuer, ffmpeg, trello, openmemory, token, env = services
    workdir = tmp_path_factory.mktemp("stack")
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)

    # The policy must be valid as the gateway will read it (same environment).
    s.run_checked([str(authctl), "policy", "check", str(POLICY)], env=env)

    static_snippet = s.run_checked([str(authctl), "traefik-config", "--static"], env=env)
    st = Stack(workdir=workdir, gateway_bin=gateway_bin, authctl=authctl, traefik_bin=traefik_bin,
               db=workdir / "authgateway.sqlite", env=env, issuer=issuer, ffmpeg=ffmpeg, trello=trello,
               openmemory=openmemory, trello_token=token, static_snippet=static_snippet)

    gateway_log = workdir / "authgateway.log"
    _ACTIVE_LOGS.append(("authgateway", gateway_log))
    try:
        st.gateway, st.gateway_port = s.start_gateway(processes, gateway_bin, POLICY, st.db, env, gateway_log)
    except RuntimeError as error:
        pytest.fail(f"authgateway did not start: {error}", pytrace=False)

    # Keys are issued by the real authctl into the store the running gateway uses.
    st.keys["alice"] = s.issue_key(authctl, st.db, "alice", "ffmpeg,memory,trello", name="e2e-laptop")
    st.keys["alice_memory_only"] = s.issue_key(authctl, st.db, "alice", "memory", name="e2e-memory-only")
    st.keys["alice_to_revoke"] = s.issue_key(authctl, st.db, "alice", "ffmpeg", name="e2e-revoke-me")

    dynamic_dir = workdir / "dynamic"
    dynamic_dir.mkdir()
    dynamic = s.run_checked([str(authctl), "traefik-config", "--policy", str(POLICY),
                             "--gateway-url", f"http://127.0.0.1:{st.gateway_port}"], env=env)
    (dynamic_dir / "authgateway.yaml").write_text(dynamic)
    providers = f"providers:\n  file:\n    directory: \"{dynamic_dir}\"\n    watch: true\n"
    try:
        st.traefik, st.traefik_port = s.start_traefik(processes, traefik_bin, workdir, static_snippet, providers,
                                                      probe_path="/ffmpeg/x")
    except RuntimeError as error:
        pytest.fail(f"traefik did not start: {error}\n--- dynamic config:\n{dynamic}", pytrace=False)
    _ACTIVE_LOGS.append(("traefik", st.traefik.log_path))
    return st


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name, path in list(_ACTIVE_LOGS):
            report.sections.append((f"{name} log (tail) {path}", s.tail(Path(path), 30)))

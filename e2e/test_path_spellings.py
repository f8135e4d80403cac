"""Issue 11 finding 3: the path spelling table (e2e/path_spellings.json) checked against real Traefik 3.7.

Traefik gets the routers `authctl traefik-config` generates for the table's routes (each route its own echo
backend) and writes a JSON access log, which names the router each spelling hit. The same run checks the gateway
behind it: whenever a request reaches a backend, the gateway's `X-Auth-Route` is the router Traefik chose; when
it does not, the gateway refused it (400). The Swift test Finding3PathSpellingTests checks the table's `gateway`
column (the spelling reaching the gateway unnormalised).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import e2e_support as s
from conftest import child_env

TABLE = json.loads((s.E2E_DIR / "path_spellings.json").read_text())


def policy_yaml(backends: dict) -> str:
    routes = "\n".join(
        f"  - name: {route['name']}\n"
        f"    match: {{ host: {s.HOST}, path: \"{route['path']}\" }}\n"
        f"    accept: [api_key]\n"
        f"    backend: {{ style: headers, url: \"{backends[route['name']].url}\" }}"
        for route in TABLE["routes"])
    return ("gateway:\n  public_url: https://mcp.example.com\n  realm: mcp\n  trusted_proxies: [127.0.0.1/32]\n"
            f"routes:\n{routes}\n")


@pytest.fixture(scope="module")
def spelling_stack(request, binaries, tmp_path_factory):
    gateway_bin, authctl, traefik_bin = binaries
    workdir = tmp_path_factory.mktemp("spellings")
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)
    backends = {}
    for route in TABLE["routes"]:
        backends[route["name"]] = s.Backend(route["name"], s.FfmpegHandler)
        request.addfinalizer(backends[route["name"]].close)
    policy = workdir / "policy.yaml"
    policy.write_text(policy_yaml(backends))
    env = child_env({})
    db = workdir / "authgateway.sqlite"
    log = workdir / "authgateway.log"
    s.ACTIVE_LOGS.append(("authgateway (spellings)", log))
    _, gateway_port = s.start_gateway(processes, gateway_bin, policy, db, env, log)
    key = s.issue_key(authctl, db, "alice", "ffmpeg", name="spellings")["key"]

    dynamic_dir = workdir / "dynamic"
    dynamic_dir.mkdir()
    (dynamic_dir / "routes.yaml").write_text(s.run_checked(
        [str(authctl), "traefik-config", "--policy", str(policy), "--gateway-url", f"http://127.0.0.1:{gateway_port}"],
        env=env))
    access_log = workdir / "access.log"
    static_snippet = s.run_checked([str(authctl), "traefik-config", "--static"], env=env)
    providers = (f"providers:\n  file:\n    directory: \"{dynamic_dir}\"\n"
                 f"accessLog:\n  filePath: \"{access_log}\"\n  format: json\n")
    _, traefik_port = s.start_traefik(processes, traefik_bin, workdir, static_snippet, providers,
                                      probe_path="/ffmpeg/x", probe_headers=[s.bearer(key)])
    return traefik_port, key, access_log


def last_access_entry(access_log: Path, seen: int) -> tuple[dict, int]:
    """The access log entry after the first `seen` lines (waits briefly: Traefik writes it after answering)."""
    deadline = time.monotonic() + 5
    while True:
        lines = access_log.read_text().splitlines() if access_log.exists() else []
        if len(lines) > seen:
            return json.loads(lines[-1]), len(lines)
        if time.monotonic() > deadline:
            return {}, seen
        time.sleep(0.05)


def from_gateway(reply: s.Reply) -> bool:
    """Whether a denial came from the gateway (its JSON error body) rather than from Traefik itself."""
    try:
        return "error" in reply.json()
    except ValueError:
        return False


def router_of(entry: dict, reply: s.Reply) -> str:
    # Traefik 3.7 picks a router before its entrypoint refuses an encoded '/' (400, empty body): that is a refusal.
    if reply.status == 400 and not from_gateway(reply):
        return "refused"
    router = entry.get("RouterName", "")
    return router.split("@", 1)[0] if router else "none"


def test_traefik_routes_each_spelling_as_the_table_says(spelling_stack):
    port, key, access_log = spelling_stack
    seen = len(access_log.read_text().splitlines()) if access_log.exists() else 0
    observed, wrong = [], []
    for row in TABLE["spellings"]:
        reply = s.request(port, row["path"], [s.bearer(key)])
        entry, seen = last_access_entry(access_log, seen)
        router = router_of(entry, reply)
        observed.append(f"{row['path']:45} traefik={router:14} status={reply.status} "
                        f"uri-at-backend={entry.get('RequestPath', '?')}")
        if router != row["traefik"]:
            wrong.append(f"{row['path']}: Traefik routed to {router}, the table says {row['traefik']}")
        if reply.status == 200:
            echo = reply.json()
            decided = s.only(echo, "X-Auth-Route")
            if decided != router:
                wrong.append(f"{row['path']}: Traefik chose {router} but the gateway decided {decided}")
        elif router not in ("none", "refused") and not (reply.status == 400 and from_gateway(reply)):
            wrong.append(f"{row['path']}: routed to {router}, gateway answered {reply.status} (expected allow or 400)")
    assert not wrong, "\n".join(wrong) + "\n--- observed:\n" + "\n".join(observed)

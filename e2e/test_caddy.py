"""End-to-end: Caddy `forward_auth` in front of the stand-in backends, decided by the real authgateway.

Caddy runs as a foreground child (`caddy run --config <tmp>/Caddyfile --adapter caddyfile`, admin API off, HOME and
XDG dirs in the temp dir) with the configuration rendered from deploy/proxies/Caddyfile.
Install: `sudo e2e/install-proxies.sh` (Debian: caddy).
"""

from __future__ import annotations

import pytest

import e2e_support as s
import proxy_support as ps


def caddy_binary():
    return ps.proxy_binary("caddy", "CADDY_BIN", "apt-get install -y caddy")


def launch_caddy(binary, workdir, values: dict):
    def launch(port: int, attempt: int):
        config = workdir / f"Caddyfile-{attempt}"
        config.write_text(ps.render("Caddyfile", {**values, "LISTEN_HOST": s.LOOPBACK, "LISTEN_PORT": port}))
        argv = [str(binary), "run", "--config", str(config), "--adapter", "caddyfile"]
        return argv, config, ps.child_env(workdir)

    return launch


@pytest.fixture(scope="module")
def gw(request, tmp_path_factory, services):
    caddy_binary()  # skip before starting anything when caddy is missing
    return ps.start_gateway(request, tmp_path_factory, services, "caddy")


@pytest.fixture(scope="module")
def caddy(request, gw, tmp_path_factory) -> ps.Proxy:
    workdir = tmp_path_factory.mktemp("caddy")
    try:
        return ps.start_proxy(request, "caddy", workdir, launch_caddy(caddy_binary(), workdir, gw.template_values()),
                              ready=ps.unauthenticated)
    except RuntimeError as error:
        pytest.fail(f"caddy did not start: {error}", pytrace=False)


def test_valid_key_backend_sees_identity_headers_never_the_client_authorization(caddy, gw):
    ps.check_api_key_allowed(caddy, gw)


def test_host_with_port_and_other_case_matches_the_route(caddy, gw):
    ps.check_host_with_port_and_case(caddy, gw)


def test_key_in_x_api_key_is_accepted_and_not_forwarded(caddy, gw):
    ps.check_x_api_key_allowed_and_stripped(caddy, gw)


def test_jwt_allowed_with_issuer_header(caddy, gw):
    ps.check_jwt_allowed(caddy, gw)


def test_no_credential_401_relayed_verbatim(caddy):
    reply = ps.check_no_credential_401(caddy)
    # Caddy copies the gateway's answer back as it is: status, headers and the JSON body.
    assert ps.json_error(reply) == "unauthorized", reply
    assert reply.header("Cache-Control") == "no-store", reply


def test_unknown_key_401_invalid_token(caddy):
    reply = ps.check_bad_key_401(caddy)
    assert ps.json_error(reply) == "invalid_token", reply


def test_missing_scope_403_insufficient_scope(caddy, gw):
    reply = ps.check_missing_scope_403(caddy, gw)
    assert ps.json_error(reply) == "insufficient_scope", reply


def test_path_no_route_matches_403_no_backend_404(caddy, gw):
    reply = ps.check_unrouted_paths(caddy, gw)
    assert ps.json_error(reply) == "access_denied", reply


def test_spoofed_identity_headers_never_reach_backend(caddy, gw):
    ps.check_spoofed_identity_never_reaches_backend(caddy, gw)


def test_spoofed_forwarded_headers_do_not_change_the_decision(caddy, gw):
    ps.check_spoofed_forwarded_headers_do_not_change_the_decision(caddy, gw)


def test_credential_route_swaps_client_key_for_backend_token(caddy, gw):
    ps.check_credential_swap(caddy, gw)


def test_post_body_reaches_backend_after_allow(caddy, gw):
    ps.check_post_body_reaches_backend(caddy, gw)


def test_original_method_decides_not_the_client_claim(caddy, gw):
    ps.check_original_method_decides(caddy, gw)


def test_sse_streams_through_and_path_binding_is_enforced(caddy, gw):
    ps.check_sse_streams_and_binding(caddy, gw)


def test_discovery_metadata_is_served_without_auth(caddy):
    ps.check_discovery_metadata_without_auth(caddy)


def test_gateway_400_is_relayed(caddy, gw):
    """Any non-2xx is relayed verbatim: the gateway's 400 for an encoded '/' reaches the client as a 400."""
    reply = caddy.get("/ffmpeg/a%2Fb", [s.bearer(gw.key("alice"))])
    assert reply.status == 400, reply
    assert ps.json_error(reply) == "invalid_request", reply


def test_gateway_unreachable_fails_closed_with_502(request, gw, tmp_path_factory):
    """A second Caddy whose gateway address has nothing listening: every protected request is a 502."""
    workdir = tmp_path_factory.mktemp("caddy-down")
    values = {**gw.template_values(), "GATEWAY_PORT": s.free_port()}
    proxy = ps.start_proxy(request, "caddy-down", workdir, launch_caddy(caddy_binary(), workdir, values),
                           ready=lambda reply: reply.status == 502)
    for path in ("/ffmpeg/x", "/trello/boards", "/openmemory/laptop/sse/alice"):
        reply = proxy.get(path, [s.bearer(gw.key("alice"))])
        assert reply.status == 502, (path, reply)

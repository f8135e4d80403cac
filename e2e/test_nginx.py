"""End-to-end: nginx `auth_request` in front of the stand-in backends, decided by the real authgateway.

nginx runs as a foreground child (`-p <tmp> -c <tmp>/nginx.conf -e stderr -g 'daemon off;'`) with the configuration
rendered from deploy/proxies/nginx.conf. Install: `sudo e2e/install-proxies.sh` (Debian: nginx-light).
"""

from __future__ import annotations

import os
import subprocess

import pytest

import e2e_support as s
import proxy_support as ps


def nginx_binary():
    return ps.proxy_binary("nginx", "NGINX_BIN", "apt-get install -y nginx-light")


def launch_nginx(binary, workdir, values: dict):
    run_dir = workdir / "run"
    run_dir.mkdir(exist_ok=True)

    def launch(port: int, attempt: int):
        config = workdir / f"nginx-{attempt}.conf"
        config.write_text(ps.render("nginx.conf", {
            **values, "LISTEN_HOST": s.LOOPBACK, "LISTEN_PORT": port, "RUN_DIR": run_dir,
            # Workers as the user running the suite (root in CI): they must reach the temp dir.
            "NGINX_USER": _current_user(),
        }))
        argv = [str(binary), "-p", str(workdir), "-c", str(config), "-e", "stderr", "-g", "daemon off;"]
        return argv, config, ps.child_env(workdir)

    return launch


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture(scope="module")
def gw(request, tmp_path_factory, services):
    binary = nginx_binary()  # skip before starting anything when nginx is missing
    version = subprocess.run([str(binary), "-V"], capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
    if "http_auth_request_module" not in version.stdout + version.stderr:
        pytest.fail(f"{binary} lacks ngx_http_auth_request_module (nginx -V); install nginx-light or nginx-full",
                    pytrace=False)
    return ps.start_gateway(request, tmp_path_factory, services, "nginx")


@pytest.fixture(scope="module")
def nginx(request, gw, tmp_path_factory) -> ps.Proxy:
    workdir = tmp_path_factory.mktemp("nginx")
    try:
        return ps.start_proxy(request, "nginx", workdir, launch_nginx(nginx_binary(), workdir, gw.template_values()),
                              ready=ps.unauthenticated)
    except RuntimeError as error:
        pytest.fail(f"nginx did not start: {error}", pytrace=False)


def test_valid_key_backend_sees_identity_headers_never_the_client_authorization(nginx, gw):
    ps.check_api_key_allowed(nginx, gw)


def test_host_with_port_and_other_case_matches_the_route(nginx, gw):
    ps.check_host_with_port_and_case(nginx, gw)


def test_key_in_x_api_key_is_accepted_and_not_forwarded(nginx, gw):
    ps.check_x_api_key_allowed_and_stripped(nginx, gw)


def test_jwt_allowed_with_issuer_header(nginx, gw):
    ps.check_jwt_allowed(nginx, gw)


def test_no_credential_401_relays_only_the_challenge(nginx):
    reply = ps.check_no_credential_401(nginx)
    # nginx relays the status and WWW-Authenticate only; the body is nginx's own error page, not the gateway's JSON.
    assert not (reply.header("Content-Type") or "").startswith("application/json"), reply


def test_unknown_key_401_invalid_token(nginx):
    ps.check_bad_key_401(nginx)


def test_missing_scope_403_insufficient_scope(nginx, gw):
    ps.check_missing_scope_403(nginx, gw)


def test_path_no_route_matches_403_no_backend_404(nginx, gw):
    ps.check_unrouted_paths(nginx, gw)


def test_spoofed_identity_headers_never_reach_backend(nginx, gw):
    ps.check_spoofed_identity_never_reaches_backend(nginx, gw)


def test_spoofed_forwarded_headers_do_not_change_the_decision(nginx, gw):
    ps.check_spoofed_forwarded_headers_do_not_change_the_decision(nginx, gw)


def test_credential_route_swaps_client_key_for_backend_token(nginx, gw):
    ps.check_credential_swap(nginx, gw)


def test_post_body_reaches_backend_after_allow(nginx, gw):
    ps.check_post_body_reaches_backend(nginx, gw)


def test_original_method_decides_not_the_client_claim(nginx, gw):
    ps.check_original_method_decides(nginx, gw)


def test_sse_streams_through_and_path_binding_is_enforced(nginx, gw):
    ps.check_sse_streams_and_binding(nginx, gw)


def test_discovery_metadata_is_served_without_auth(nginx):
    ps.check_discovery_metadata_without_auth(nginx)


def test_gateway_400_becomes_500(nginx, gw):
    """Documented caveat: nginx relays only 401/403; the gateway's 400 for an encoded '/' becomes a 500."""
    reply = nginx.get("/ffmpeg/a%2Fb", [s.bearer(gw.key("alice"))])
    assert reply.status == 500, reply


def test_gateway_unreachable_fails_closed_with_500(request, gw, tmp_path_factory):
    """A second nginx whose gateway address has nothing listening: every protected request is a 500."""
    workdir = tmp_path_factory.mktemp("nginx-down")
    values = {**gw.template_values(), "GATEWAY_PORT": s.free_port()}
    proxy = ps.start_proxy(request, "nginx-down", workdir, launch_nginx(nginx_binary(), workdir, values),
                           ready=lambda reply: reply.status == 500)
    for path in ("/ffmpeg/x", "/trello/boards", "/openmemory/laptop/sse/alice"):
        reply = proxy.get(path, [s.bearer(gw.key("alice"))])
        assert reply.status == 500, (path, reply)

"""End-to-end rules of the built-in OAuth 2.1 authorization server, one test per rule, against the real authgateway
and authctl binaries (no proxy: /auth is called the way Traefik's forwardAuth calls it).

The gateway runs e2e/policy_oauth.yaml with public_url http://127.0.0.1:<its port>; the `notes` routes list the
built-in issuer. Every denial asserts the exact status and error, so a server that always said yes fails here.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

import e2e_support as s
import oauth_support as o

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the tests read the 303's Location


# ----------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def gw(request, binaries, tmp_path_factory) -> o.OAuthGateway:
    gateway_bin, authctl, _ = binaries
    o.scoped_logs(request)
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)
    notes = s.Backend("notes", s.FfmpegHandler)
    request.addfinalizer(notes.close)
    try:
        gateway = o.start_oauth_gateway(processes, gateway_bin, authctl, tmp_path_factory.mktemp("oauth-rules"),
                                        o.base_env(), notes=notes)
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    return gateway


@pytest.fixture(scope="module")
def alice(gw) -> tuple:
    return gw.add_user("alice")


@pytest.fixture
def extra_gateway(request, binaries, tmp_path):
    """Starts further gateways (path issuer, short code TTL, registration token) for one test."""
    gateway_bin, authctl, _ = binaries
    o.scoped_logs(request)
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)

    def start(name: str, **kw) -> o.OAuthGateway:
        notes = s.Backend(f"notes-{name}", s.FfmpegHandler)
        request.addfinalizer(notes.close)
        try:
            return o.start_oauth_gateway(processes, gateway_bin, authctl, tmp_path / name, o.base_env(), name=name,
                                         notes=notes, **kw)
        except RuntimeError as error:
            pytest.fail(str(error), pytrace=False)

    return start


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def public_client(gw: o.OAuthGateway, redirect_uris=(REDIRECT,), **metadata) -> dict:
    """A registered client; public with the code and refresh grants unless `metadata` says otherwise (stated
    explicitly, the way MCP clients register; the defaults have their own test)."""
    metadata.setdefault("token_endpoint_auth_method", "none")
    metadata.setdefault("grant_types", ["authorization_code", "refresh_token"])
    return o.register_client(gw.origin, list(redirect_uris), client_name=metadata.pop("client_name", "e2e public"),
                             **metadata)


def start_authorization(gw: o.OAuthGateway, client_id: str, redirect_uri: str = REDIRECT, scope="notes",
                        resource: object = "default", **overrides) -> SimpleNamespace:
    """Authorize parameters (valid unless overridden; None drops a parameter) and their PKCE verifier."""
    verifier, challenge = o.pkce_pair()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "code_challenge": challenge, "code_challenge_method": "S256",
              "resource": gw.resource if resource == "default" else resource, "scope": scope,
              "state": "st-" + secrets.token_hex(8)}
    params.update(overrides)
    return SimpleNamespace(url=o.authorize_url(gw.origin, **params), verifier=verifier, params=params)


def code_for(gw: o.OAuthGateway, user: tuple, client_id: str, redirect_uri: str = REDIRECT, scope="notes",
             **overrides) -> SimpleNamespace:
    """A code through authorize → login → consent (allow); with its verifier and the redirect parameters."""
    start = start_authorization(gw, client_id, redirect_uri, scope, **overrides)
    result = o.authorize_via_http(start.url, user[0], user[1])
    assert result.params.get("state") == start.params["state"], result.location
    return SimpleNamespace(code=result.code, verifier=start.verifier, redirect_uri=start.params["redirect_uri"],
                           result=result, start=start)


def tokens_for(gw: o.OAuthGateway, user: tuple, client: dict = None, scope="notes") -> SimpleNamespace:
    """A fresh public client (unless given), a code and its token response (asserted 200)."""
    client = client or public_client(gw)
    grant = code_for(gw, user, client["client_id"], scope=scope)
    reply = o.exchange_code(gw.origin, client["client_id"], grant.code, grant.redirect_uri, grant.verifier)
    assert reply.status == 200, reply
    body = reply.json()
    return SimpleNamespace(client=client, access=body["access_token"], refresh=body.get("refresh_token"),
                           body=body, reply=reply, grant=grant)


def assert_token_error(reply: s.Reply, status: int, *errors: str) -> None:
    assert reply.status == status, reply
    assert o.error_of(reply) in errors, reply


def assert_refused_at_auth(gw: o.OAuthGateway, access_token: str) -> None:
    reply = gw.auth(access_token)
    assert reply.status == 401, f"a revoked access token must be refused at /auth: {reply!r}"
    assert 'error="invalid_token"' in (reply.header("WWW-Authenticate") or ""), reply


def assert_allowed_at_auth(gw: o.OAuthGateway, access_token: str, subject: str, path: str = "/notes/mcp") -> s.Reply:
    reply = gw.auth(access_token, path)
    assert reply.status == 200, reply
    assert reply.header("X-Auth-Subject") == subject, reply
    return reply


def assert_error_page_without_redirect(reply: s.Reply) -> None:
    assert reply.status == 400, reply
    assert reply.header("Location") is None, f"must not redirect to an unverified redirect URI: {reply!r}"
    assert o.is_html(reply), reply


def assert_error_redirect(reply: s.Reply, redirect_uri: str, error: str, state: str) -> None:
    assert reply.status in (302, 303), reply
    location = reply.header("Location") or ""
    assert location.startswith(redirect_uri + "?"), (location, redirect_uri)
    params = o.location_params(reply)
    assert params.get("error") == error, params
    assert params.get("state") == state, params
    assert "code" not in params, params


# ----------------------------------------------------------------------------------------------------------------
# Discovery metadata


AS_ENDPOINTS = {"authorization_endpoint": "/oauth/authorize", "token_endpoint": "/oauth/token",
                "registration_endpoint": "/oauth/register", "revocation_endpoint": "/oauth/revoke",
                "introspection_endpoint": "/oauth/introspect", "jwks_uri": "/oauth/jwks.json"}


def assert_authorization_server_metadata(doc: dict, issuer: str) -> None:
    assert doc["issuer"] == issuer, f"issuer must be public_url exactly: {doc['issuer']!r} != {issuer!r}"
    for name, path in AS_ENDPOINTS.items():
        assert doc.get(name) == issuer + path, (name, doc.get(name))
    assert doc["response_types_supported"] == ["code"], doc
    assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}, doc
    assert doc["code_challenge_methods_supported"] == ["S256"], doc
    assert set(doc["token_endpoint_auth_methods_supported"]) == {"none", "client_secret_basic",
                                                                 "client_secret_post"}, doc
    assert "notes" in doc["scopes_supported"], doc
    assert doc.get("client_id_metadata_document_supported") is True, doc


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"])
def test_authorization_server_metadata_issuer_is_public_url_exactly(gw, path):
    reply = gw.get(path)
    assert reply.status == 200, reply
    assert (reply.header("Content-Type") or "").startswith("application/json"), reply
    assert not gw.public_url.endswith("/")
    assert_authorization_server_metadata(reply.json(), gw.public_url)


def test_path_issuer_metadata_is_served_at_path_forms_and_not_at_root(extra_gateway):
    tenant = extra_gateway("tenant", path="/tenant")
    issuer = tenant.public_url
    assert issuer.endswith("/tenant")
    for path in ("/.well-known/oauth-authorization-server/tenant", "/.well-known/openid-configuration/tenant",
                 "/tenant/.well-known/openid-configuration"):
        reply = tenant.get(path)
        assert reply.status == 200, (path, reply)
        assert_authorization_server_metadata(reply.json(), issuer)
    root = tenant.get("/.well-known/oauth-authorization-server")
    assert root.status == 404, f"the root form names another issuer; it must not answer for /tenant: {root!r}"


def test_path_issuer_serves_every_endpoint_its_metadata_names(extra_gateway):
    tenant = extra_gateway("tenant-endpoints", path="/tenant")
    doc = tenant.get("/.well-known/oauth-authorization-server/tenant").json()
    jwks_path = urlsplit(doc["jwks_uri"]).path
    jwks = tenant.get(jwks_path)
    problems = [] if jwks.status == 200 and "keys" in jwks.body.decode() else [f"GET {jwks_path}: {jwks.status}"]
    for name in ("token_endpoint", "registration_endpoint", "revocation_endpoint", "introspection_endpoint"):
        path = urlsplit(doc[name]).path
        reply = tenant.get(path, [("Content-Type", o.FORM_TYPE)], method="POST", body=b"")
        if reply.status in (404, 405):
            problems.append(f"POST {path}: {reply.status}")
    authorize = urlsplit(doc["authorization_endpoint"]).path
    if tenant.get(authorize).status in (404, 405):
        problems.append(f"GET {authorize}: 404/405")
    assert not problems, f"endpoints named by the metadata but not served: {problems}"


def test_path_public_url_challenge_names_rfc9728_metadata_url_that_is_served(extra_gateway):
    # RFC 9728 §3.1: the metadata of resource http://H/tenant/notes is at http://H/.well-known/oauth-protected-resource/tenant/notes
    tenant = extra_gateway("tenant-prm", path="/tenant")
    expected = f"{tenant.origin}/.well-known/oauth-protected-resource/tenant/notes"
    challenge = o.challenge_params(tenant.auth(None, "/notes/x").header("WWW-Authenticate"))
    reply = tenant.get(urlsplit(expected).path)
    assert (challenge.get("resource_metadata"), reply.status) == (expected, 200), (challenge, reply)
    assert reply.json()["resource"] == f"{tenant.public_url}/notes", reply


def test_protected_resource_metadata_names_the_builtin_server(gw):
    reply = gw.get("/.well-known/oauth-protected-resource/notes")
    assert reply.status == 200, reply
    doc = reply.json()
    assert doc["resource"] == gw.resource, doc
    assert doc["authorization_servers"] == [gw.public_url], doc
    assert "notes" in doc["scopes_supported"], doc


def test_request_without_credential_gets_401_challenge_naming_metadata_and_scope(gw):
    reply = gw.auth(None, "/notes/mcp")
    assert reply.status == 401, reply
    params = o.challenge_params(reply.header("WWW-Authenticate"))
    assert params.get("realm") == "mcp", params
    assert params.get("resource_metadata") == f"{gw.public_url}/.well-known/oauth-protected-resource/notes", params
    assert params.get("scope") == "notes", params
    assert "error" not in params, params


@pytest.mark.parametrize("path", [
    "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration",
    "/.well-known/oauth-protected-resource/notes", "/oauth/token", "/oauth/register", "/oauth/revoke"])
def test_cors_preflight_is_204_with_any_origin_and_never_401(gw, path):
    reply = gw.get(path, [("Origin", "http://localhost:6274"), ("Access-Control-Request-Method", "POST"),
                          ("Access-Control-Request-Headers", "content-type, authorization, mcp-protocol-version")],
                   method="OPTIONS")
    assert reply.status == 204, reply
    assert reply.header("Access-Control-Allow-Origin") == "*", reply
    if path.startswith("/.well-known/"):
        # A stale or foreign bearer on a discovery request must not turn it into a 401.
        with_bearer = gw.get(path, [s.bearer("not-a-token"), ("Origin", "http://localhost:6274")])
        assert with_bearer.status == 200, with_bearer
        assert with_bearer.header("Access-Control-Allow-Origin") == "*", with_bearer


# ----------------------------------------------------------------------------------------------------------------
# The happy path, looked at closely


def test_login_page_sets_csrf_cookie_and_carries_the_request(gw):
    client = public_client(gw)
    start = start_authorization(gw, client["client_id"])
    flow = o.Authorization(start.url)
    page = flow.open()
    assert page.status == 200 and o.is_html(page), page
    assert o.CSRF_COOKIE in flow.session.cookies, page.headers
    form = flow.login_form
    assert form is not None, page.body[:2000]
    assert form.method == "post", form
    assert form.action and urlsplit(form.action).path == "/oauth/authorize", form
    hidden = form.hidden()
    assert hidden.get("csrf_token"), form
    for name in ("response_type", "client_id", "redirect_uri", "code_challenge", "code_challenge_method",
                 "resource", "scope", "state"):
        assert hidden.get(name) == start.params[name], (name, hidden)
    assert form.input_types.get("username") == "text" and "password" in form.inputs and "api_key" in form.inputs, form
    assert ("action", "login", "submit") in form.buttons, form.buttons


def test_authorization_code_flow_issues_es256_at_jwt_that_passes_auth(gw, alice):
    client = public_client(gw, client_name="Flow Check Client")
    grant = code_for(gw, alice, client["client_id"])
    consent = grant.result.consent_page.body.decode()
    form = o.parse_forms(consent)["consent"]
    assert form.method == "post" and form.hidden().get("consent_ticket") and form.hidden().get("csrf_token"), form
    assert ("decision", "allow", "submit") in form.buttons and ("decision", "deny", "submit") in form.buttons, form
    text = o.visible_text(consent)
    assert "Flow Check Client" in text and gw.resource in text and "notes" in text, text
    assert grant.result.final.status == 303, grant.result.final
    assert grant.result.location.startswith(REDIRECT + "?"), grant.result.location
    assert grant.result.params.get("iss") == gw.public_url, grant.result.params

    reply = o.exchange_code(gw.origin, client["client_id"], grant.code, REDIRECT, grant.verifier)
    assert reply.status == 200, reply
    assert "no-store" in (reply.header("Cache-Control") or ""), reply
    body = reply.json()
    assert body["token_type"].lower() == "bearer" and isinstance(body["expires_in"], int), body
    assert body["refresh_token"] and body["scope"].split() == ["notes"], body

    header, claims = o.jwt_parts(body["access_token"])
    assert header["typ"].lower() == "at+jwt" and header["alg"] == "ES256", header
    jwks = gw.get("/oauth/jwks.json").json()
    assert header["kid"] in [k["kid"] for k in jwks["keys"]], (header, jwks)
    assert claims["iss"] == gw.public_url and claims["sub"] == "alice", claims
    assert claims["aud"] in (gw.resource, [gw.resource]), claims
    assert claims["client_id"] == client["client_id"] and claims["scope"] == "notes", claims
    assert claims["exp"] > claims["iat"] and claims["jti"], claims
    if s.pyjwt is not None:  # the signature verifies with the published key
        key = s.pyjwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
        s.pyjwt.decode(body["access_token"], key.key, algorithms=["ES256"], audience=gw.resource,
                       issuer=gw.public_url)

    allowed = assert_allowed_at_auth(gw, body["access_token"], "alice")
    assert allowed.header("X-Auth-Method") == "jwt", allowed
    # aud is the notes resource: the admin route (same resource) still needs its extra scope.
    assert gw.auth(body["access_token"], "/notes/admin/x").status == 403


def test_consent_deny_redirects_access_denied(gw, alice):
    client = public_client(gw)
    start = start_authorization(gw, client["client_id"])
    result = o.authorize_via_http(start.url, *alice, decision="deny")
    assert_error_redirect(result.final, REDIRECT, "access_denied", start.params["state"])


def test_error_redirects_carry_iss_too(gw, alice):
    # RFC 9207 §2: a server that advertises authorization_response_iss_parameter_supported puts iss in every
    # authorization response, error responses included (clients use it against mix-up attacks).
    metadata = gw.get("/.well-known/oauth-authorization-server").json()
    if not metadata.get("authorization_response_iss_parameter_supported"):
        pytest.skip("the server does not advertise authorization_response_iss_parameter_supported")
    client = public_client(gw)
    denied = o.authorize_via_http(start_authorization(gw, client["client_id"]).url, *alice, decision="deny")
    missing = []
    for reply in (denied.final,):
        params = o.location_params(reply)
        assert "error" in params, params
        if params.get("iss") != gw.public_url:
            missing.append(reply.header("Location"))
    assert not missing, f"error redirects without iss={gw.public_url}: {missing}"


def test_consent_ticket_is_single_use(gw, alice):
    client = public_client(gw)
    flow = o.Authorization(start_authorization(gw, client["client_id"]).url)
    assert flow.open().status == 200
    assert flow.login(*alice).status == 200
    first = flow.decide("allow")
    assert first.status == 303 and "code" in o.location_params(first), first
    replay = flow.decide("allow")
    assert replay.status in (400, 403), replay
    assert replay.header("Location") is None, f"a replayed consent must not mint another code: {replay!r}"


def test_registered_redirect_uri_keeps_its_query(gw, alice):
    redirect_uri = "http://127.0.0.1:9/callback?tenant=e2e"
    client = public_client(gw, [redirect_uri])
    grant = code_for(gw, alice, client["client_id"], redirect_uri=redirect_uri)
    assert grant.result.location.startswith(redirect_uri + "&"), grant.result.location
    assert grant.result.params.get("tenant") == "e2e", grant.result.params
    reply = o.exchange_code(gw.origin, client["client_id"], grant.code, redirect_uri, grant.verifier)
    assert reply.status == 200, reply


# ----------------------------------------------------------------------------------------------------------------
# /oauth/authorize refusals


def test_authorize_refuses_unknown_client_without_redirect(gw):
    start = start_authorization(gw, "no-such-client-" + secrets.token_hex(4))
    assert_error_page_without_redirect(o.Session().get(start.url))


@pytest.mark.parametrize("sent", [
    "http://127.0.0.1:9/other",          # another path on the registered loopback host
    "http://127.0.0.1:9/callback/x",
    "http://127.0.0.1:9/callback?x=1",   # extra query
    "https://127.0.0.1:9/callback",      # another scheme
    "http://attacker.example/callback",  # another host
    "https://app.example.com:8443/cb",   # a port change is only allowed on loopback
])
def test_authorize_refuses_unregistered_redirect_uri_without_redirect(gw, sent):
    client = public_client(gw, [REDIRECT, "https://app.example.com/cb"])
    start = start_authorization(gw, client["client_id"], redirect_uri=sent)
    assert_error_page_without_redirect(o.Session().get(start.url))


@pytest.mark.parametrize("loopback", ["127.0.0.1", "[::1]", "localhost"])
def test_loopback_redirect_uri_may_use_any_port(gw, alice, loopback):
    client = public_client(gw, [f"http://{loopback}:9/callback"])
    sent = f"http://{loopback}:54321/callback"
    grant = code_for(gw, alice, client["client_id"], redirect_uri=sent)
    assert grant.result.location.startswith(sent + "?"), grant.result.location
    reply = o.exchange_code(gw.origin, client["client_id"], grant.code, sent, grant.verifier)
    assert reply.status == 200, reply
    # Only the port may differ.
    other_path = start_authorization(gw, client["client_id"], redirect_uri=f"http://{loopback}:54321/other")
    assert_error_page_without_redirect(o.Session().get(other_path.url))


@pytest.mark.parametrize("overrides, error", [
    pytest.param({"code_challenge": None, "code_challenge_method": None}, "invalid_request", id="missing_pkce"),
    pytest.param({"code_challenge": None}, "invalid_request", id="missing_code_challenge"),
    pytest.param({"code_challenge_method": "plain"}, "invalid_request", id="plain_pkce"),
    pytest.param({"resource": None}, "invalid_target", id="missing_resource"),
    pytest.param({"resource": "OTHER"}, "invalid_target", id="unknown_resource"),
    pytest.param({"resource": "KEYS"}, "invalid_target", id="resource_without_builtin_issuer"),
    pytest.param({"scope": "notes no_such_scope"}, "invalid_scope", id="unknown_scope"),
    pytest.param({"response_type": "token"}, "unsupported_response_type", id="response_type_token"),
])
def test_authorize_request_error_shows_a_page_and_never_redirects(gw, overrides, error):
    # Issue 11 finding 9 (RFC 9700 §4.11.2): anyone can register any redirect URI, so an error found before the
    # user signed in and decided is shown, not sent there (the gateway would be an open redirector otherwise).
    client = public_client(gw)
    overrides = dict(overrides)
    if overrides.get("resource") == "OTHER":
        overrides["resource"] = f"{gw.public_url}/elsewhere"
    elif overrides.get("resource") == "KEYS":
        overrides["resource"] = f"{gw.public_url}/keys"
    start = start_authorization(gw, client["client_id"], **overrides)
    reply = o.Session().get(start.url)
    assert_error_page_without_redirect(reply)
    assert error in reply.body.decode(), reply


class _ConnectionCounter:
    """A loopback TCP listener that only counts connections (a fetch of https://127.0.0.1:<port>/ would show)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((s.LOOPBACK, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stopped = True
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.mark.parametrize("target", ["loopback", "private"])
def test_cimd_client_id_on_private_address_is_refused_without_fetch_or_redirect(gw, target):
    counter = _ConnectionCounter()
    try:
        client_id = (f"https://127.0.0.1:{counter.port}/client.json" if target == "loopback"
                     else "https://10.0.0.1/x")
        start = start_authorization(gw, client_id, redirect_uri="http://127.0.0.1:9/callback")
        reply = o.Session().get(start.url)
        assert_error_page_without_redirect(reply)
        time.sleep(0.3)
        assert counter.connections == 0, "the gateway connected to a loopback client_id URL"
    finally:
        counter.close()


# ----------------------------------------------------------------------------------------------------------------
# /oauth/token refusals


def test_token_refuses_wrong_code_verifier(gw, alice):
    client = public_client(gw)
    grant = code_for(gw, alice, client["client_id"])
    wrong, _ = o.pkce_pair()
    reply = o.exchange_code(gw.origin, client["client_id"], grant.code, REDIRECT, wrong)
    assert_token_error(reply, 400, "invalid_grant")


def test_token_refuses_redirect_uri_other_than_the_authorized_one(gw, alice):
    second = "http://127.0.0.1:9/second"
    client = public_client(gw, [REDIRECT, second])
    grant = code_for(gw, alice, client["client_id"])
    reply = o.exchange_code(gw.origin, client["client_id"], grant.code, second, grant.verifier)
    assert_token_error(reply, 400, "invalid_grant")


def test_token_refuses_resource_other_than_the_authorized_one(gw, alice):
    client = public_client(gw)
    grant = code_for(gw, alice, client["client_id"])
    reply = o.exchange_code(gw.origin, client["client_id"], grant.code, REDIRECT, grant.verifier,
                            resource=f"{gw.public_url}/elsewhere")
    assert reply.status == 400, reply
    assert o.error_of(reply) in ("invalid_target", "invalid_grant"), reply


def test_reused_code_is_refused_and_revokes_what_it_issued(gw, alice):
    first = tokens_for(gw, alice)
    assert_allowed_at_auth(gw, first.access, "alice")
    grant = first.grant
    again = o.exchange_code(gw.origin, first.client["client_id"], grant.code, REDIRECT, grant.verifier)
    assert_token_error(again, 400, "invalid_grant")
    assert_token_error(o.refresh(gw.origin, first.client["client_id"], first.refresh), 400, "invalid_grant")
    assert_refused_at_auth(gw, first.access)


def test_expired_code_is_refused(extra_gateway):
    short = extra_gateway("short-code", extra_env={"CODE_TTL": "1s"})
    user = short.add_user("dora")
    client = public_client(short)
    grant = code_for(short, user, client["client_id"])
    time.sleep(2)
    reply = o.exchange_code(short.origin, client["client_id"], grant.code, REDIRECT, grant.verifier)
    assert_token_error(reply, 400, "invalid_grant")


def test_token_refuses_unknown_client_401_invalid_client(gw, alice):
    client = public_client(gw)
    grant = code_for(gw, alice, client["client_id"])
    reply = o.exchange_code(gw.origin, "no-such-client-" + secrets.token_hex(4), grant.code, REDIRECT,
                            grant.verifier)
    assert_token_error(reply, 401, "invalid_client")


@pytest.mark.parametrize("missing", ["code", "code_verifier", "grant_type"])
def test_token_missing_parameter_is_invalid_request(gw, alice, missing):
    client = public_client(gw)
    grant = code_for(gw, alice, client["client_id"])
    form = {"grant_type": "authorization_code", "code": grant.code, "redirect_uri": REDIRECT,
            "code_verifier": grant.verifier, "client_id": client["client_id"]}
    del form[missing]
    assert_token_error(o.token(gw.origin, form), 400, "invalid_request")


def test_token_unknown_grant_type_is_unsupported_grant_type(gw):
    client = public_client(gw)
    reply = o.token(gw.origin, {"grant_type": "password", "username": "alice", "password": "x",
                                "client_id": client["client_id"]})
    assert_token_error(reply, 400, "unsupported_grant_type")


def test_code_is_bound_to_the_client_it_was_issued_to(gw, alice):
    client, other = public_client(gw), public_client(gw)
    grant = code_for(gw, alice, client["client_id"])
    stolen = o.exchange_code(gw.origin, other["client_id"], grant.code, REDIRECT, grant.verifier)
    assert_token_error(stolen, 400, "invalid_grant")


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_confidential_client_must_authenticate_at_the_token_endpoint(gw, alice, method):
    client = public_client(gw, token_endpoint_auth_method=method)
    grant = code_for(gw, alice, client["client_id"])
    bare = o.exchange_code(gw.origin, client["client_id"], grant.code, REDIRECT, grant.verifier)
    assert_token_error(bare, 401, "invalid_client")
    wrong = (o.exchange_code(gw.origin, None, grant.code, REDIRECT, grant.verifier,
                             headers=[o.basic(client["client_id"], "agcs_wrong")])
             if method == "client_secret_basic" else
             o.exchange_code(gw.origin, client["client_id"], grant.code, REDIRECT, grant.verifier,
                             client_secret="agcs_wrong"))
    assert_token_error(wrong, 401, "invalid_client")
    right = (o.exchange_code(gw.origin, None, grant.code, REDIRECT, grant.verifier,
                             headers=[o.basic(client["client_id"], client["client_secret"])])
             if method == "client_secret_basic" else
             o.exchange_code(gw.origin, client["client_id"], grant.code, REDIRECT, grant.verifier,
                             client_secret=client["client_secret"]))
    assert right.status == 200, right


def test_access_token_is_bound_to_its_resource(gw, alice):
    notes = tokens_for(gw, alice)
    client = public_client(gw)
    grant = code_for(gw, alice, client["client_id"], scope="ledger", resource=f"{gw.public_url}/ledger")
    reply = o.exchange_code(gw.origin, client["client_id"], grant.code, REDIRECT, grant.verifier)
    assert reply.status == 200, reply
    ledger = reply.json()["access_token"]
    assert_allowed_at_auth(gw, ledger, "alice", "/ledger/x")
    assert_allowed_at_auth(gw, notes.access, "alice", "/notes/x")
    for token_value, path in ((notes.access, "/ledger/x"), (ledger, "/notes/x")):
        crossed = gw.auth(token_value, path)
        assert crossed.status == 401, (path, crossed)
        assert 'error="invalid_token"' in (crossed.header("WWW-Authenticate") or ""), crossed


# ----------------------------------------------------------------------------------------------------------------
# Refresh tokens


def test_refresh_rotates_the_refresh_token(gw, alice):
    first = tokens_for(gw, alice)
    reply = o.refresh(gw.origin, first.client["client_id"], first.refresh)
    assert reply.status == 200, reply
    assert "no-store" in (reply.header("Cache-Control") or ""), reply
    second = reply.json()
    assert second["refresh_token"] and second["refresh_token"] != first.refresh, second
    assert second["access_token"] != first.access, second
    assert_allowed_at_auth(gw, second["access_token"], "alice")
    third = o.refresh(gw.origin, first.client["client_id"], second["refresh_token"])
    assert third.status == 200, third
    assert third.json()["refresh_token"] not in (first.refresh, second["refresh_token"])


def test_refresh_token_reuse_revokes_the_whole_family(gw, alice):
    first = tokens_for(gw, alice)
    client_id = first.client["client_id"]
    rotated = o.refresh(gw.origin, client_id, first.refresh)
    assert rotated.status == 200, rotated
    newest = rotated.json()
    assert_allowed_at_auth(gw, newest["access_token"], "alice")  # works (and may be cached) before the reuse

    assert_token_error(o.refresh(gw.origin, client_id, first.refresh), 400, "invalid_grant")
    assert_token_error(o.refresh(gw.origin, client_id, newest["refresh_token"]), 400, "invalid_grant")
    assert_refused_at_auth(gw, newest["access_token"])
    assert_refused_at_auth(gw, first.access)


def test_refresh_token_is_bound_to_its_client(gw, alice):
    tokens = tokens_for(gw, alice)
    other = public_client(gw)
    assert_token_error(o.refresh(gw.origin, other["client_id"], tokens.refresh), 400, "invalid_grant")


# ----------------------------------------------------------------------------------------------------------------
# Registration


@pytest.mark.parametrize("redirect_uris", [
    ["javascript:alert(1)"],
    ["data:text/html,<script>alert(1)</script>"],
    ["http://app.example.com/callback"],          # plain http off loopback
    ["http://10.0.0.5/callback"],                 # plain http to a private, not loopback, address
    ["https://app.example.com/callback#frag"],    # fragment
    ["https://app.example.com/ok", "http://evil.example/cb"],  # one bad entry spoils the lot
], ids=["javascript", "data", "http_non_loopback", "http_private", "fragment", "one_bad_of_two"])
def test_registration_refuses_unsafe_redirect_uris(gw, redirect_uris):
    reply = o.post_json(gw.url("/oauth/register"), {"client_name": "bad", "redirect_uris": redirect_uris})
    assert_token_error(reply, 400, "invalid_redirect_uri")


@pytest.mark.parametrize("metadata", [
    {"redirect_uris": [REDIRECT], "grant_types": ["password"]},
    {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"},
    {"redirect_uris": "https://app.example.com/cb"},  # not a list
], ids=["grant_password", "auth_method_private_key_jwt", "redirect_uris_not_a_list"])
def test_registration_refuses_bad_client_metadata(gw, metadata):
    reply = o.post_json(gw.url("/oauth/register"), {"client_name": "bad", **metadata})
    assert reply.status == 400, reply
    assert o.error_of(reply) in ("invalid_client_metadata", "invalid_redirect_uri"), reply


@pytest.mark.parametrize("redirect_uri", [
    "https://app.example.com/callback", "http://127.0.0.1:33418/callback", "http://[::1]:8080/cb",
    "http://localhost/callback", "cursor://anysphere.cursor-retrieval/oauth/callback"])
def test_registration_accepts_https_loopback_and_private_use_redirect_uris(gw, redirect_uri):
    body = public_client(gw, [redirect_uri], client_name="Good Client", scope="notes")
    assert body["client_id"] and isinstance(body["client_id_issued_at"], int), body
    assert body["redirect_uris"] == [redirect_uri], body
    assert body["client_name"] == "Good Client", body
    assert body.get("token_endpoint_auth_method", "none") == "none", body
    assert set(body.get("grant_types", [])) == {"authorization_code", "refresh_token"}, body
    assert "client_secret" not in body, "public clients get no secret"


def test_registration_defaults_follow_rfc7591(gw):
    # RFC 7591 §2: token_endpoint_auth_method defaults to client_secret_basic, grant_types to [authorization_code]
    # (the server's documented choice; the brief's contract said none + refresh_token, see the report).
    body = o.register_client(gw.origin, [REDIRECT], client_name="Defaults")
    assert body.get("token_endpoint_auth_method") == "client_secret_basic", body
    assert body.get("client_secret") and body.get("client_secret_expires_at") == 0, body
    assert body.get("grant_types") == ["authorization_code"], body


def test_client_without_refresh_grant_gets_no_refresh_token(gw, alice):
    client = public_client(gw, grant_types=["authorization_code"])
    grant = code_for(gw, alice, client["client_id"])
    reply = o.exchange_code(gw.origin, client["client_id"], grant.code, REDIRECT, grant.verifier)
    assert reply.status == 200, reply
    assert "refresh_token" not in reply.json(), reply


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_confidential_registration_gets_a_client_secret(gw, method):
    body = public_client(gw, token_endpoint_auth_method=method)
    assert body["token_endpoint_auth_method"] == method, body
    assert body["client_secret"] and body["client_secret_expires_at"] == 0, body


def test_registration_token_mode_requires_the_bearer(extra_gateway):
    secret = "reg-" + secrets.token_hex(16)
    text = o.POLICY_OAUTH.read_text()
    assert text.count("registration: open\n") == 1
    text = text.replace("registration: open\n",
                        "registration: token\n    registration_token_env: E2E_REGISTRATION_TOKEN\n")
    gated = extra_gateway("registration-token", policy_text=text, extra_env={"E2E_REGISTRATION_TOKEN": secret})
    payload = {"client_name": "gated", "redirect_uris": [REDIRECT]}
    for headers in ([], [s.bearer("reg-wrong")], [("Authorization", f"Basic {secret}")]):
        reply = o.post_json(gated.url("/oauth/register"), payload, headers)
        assert reply.status == 401, (headers, reply)
    ok = o.post_json(gated.url("/oauth/register"), payload, [s.bearer(secret)])
    assert ok.status == 201, ok
    assert ok.json()["client_id"]


# ----------------------------------------------------------------------------------------------------------------
# client_credentials, revocation, introspection


def confidential_client(gw: o.OAuthGateway, **metadata) -> dict:
    metadata.setdefault("token_endpoint_auth_method", "client_secret_basic")
    redirect_uris = metadata.pop("redirect_uris", None)
    body = o.register_client(gw.origin, redirect_uris, client_name=metadata.pop("client_name", "e2e confidential"),
                             **metadata)
    assert body.get("client_secret"), body
    return body


def machine_client(gw: o.OAuthGateway, *args: str) -> dict:
    """A client an operator made: `authctl clients add NAME ARGS... --json` (client_id and client_secret)."""
    done = gw.ctl("clients", "add", "e2e-" + secrets.token_hex(3), *args, "--json")
    body = json.loads(done.stdout)
    assert body["client_id"] and body["client_secret"].startswith("agcs_"), body
    return body


def test_registration_refuses_client_credentials(gw):
    """Issue 11 finding 1: a client nobody vouched for never gets a token without a user's login and consent."""
    for method in ("client_secret_basic", "client_secret_post"):
        reply = o.post_json(gw.url("/oauth/register"), {"client_name": "minter", "grant_types": ["client_credentials"],
                                                        "token_endpoint_auth_method": method})
        assert_token_error(reply, 400, "invalid_client_metadata")


def test_machine_client_from_authctl_gets_a_token_mcp_proxy_style(gw):
    """Issue 11 finding 1: `authctl clients add --grant client_credentials` with one resource; the token request
    sends no resource and authenticates with HTTP Basic, as mcp-proxy's --client-id/--client-secret/--token-url do."""
    client = machine_client(gw, "--grant", "client_credentials", "--subject", "ci-bot", "--scopes", "notes",
                            "--resource", gw.resource)
    auth = o.basic(client["client_id"], client["client_secret"])
    reply = o.token(gw.origin, {"grant_type": "client_credentials"}, [auth])
    assert reply.status == 200, reply
    body = reply.json()
    assert "refresh_token" not in body and body["scope"] == "notes", body
    _, claims = o.jwt_parts(body["access_token"])
    assert claims["sub"] == "ci-bot" and claims["client_id"] == client["client_id"], claims
    assert claims["aud"] in (gw.resource, [gw.resource]), claims
    assert_allowed_at_auth(gw, body["access_token"], "ci-bot")
    assert gw.auth(body["access_token"], "/ledger/x").status == 401  # another resource of the same server

    wider = o.token(gw.origin, {"grant_type": "client_credentials", "scope": "notes notes_admin"}, [auth])
    assert_token_error(wider, 400, "invalid_scope")
    elsewhere = o.token(gw.origin, {"grant_type": "client_credentials", "resource": gw.public_url + "/ledger"}, [auth])
    assert_token_error(elsewhere, 400, "invalid_target")
    wrong_secret = o.token(gw.origin, {"grant_type": "client_credentials"}, [o.basic(client["client_id"], "agcs_wrong")])
    assert_token_error(wrong_secret, 401, "invalid_client")

    gw.ctl("clients", "revoke", client["client_id"])
    assert_refused_at_auth(gw, body["access_token"])
    assert_token_error(o.token(gw.origin, {"grant_type": "client_credentials"}, [auth]), 401, "invalid_client")


def test_machine_client_with_several_resources_must_name_one(gw):
    client = machine_client(gw, "--grant", "client_credentials", "--subject", "ci-bot", "--scopes", "notes,ledger",
                            "--resource", gw.resource, "--resource", gw.public_url + "/ledger")
    auth = o.basic(client["client_id"], client["client_secret"])
    assert_token_error(o.token(gw.origin, {"grant_type": "client_credentials"}, [auth]), 400, "invalid_target")
    named = o.token(gw.origin, {"grant_type": "client_credentials", "resource": gw.public_url + "/ledger"}, [auth])
    assert named.status == 200, named
    assert named.json()["scope"] == "ledger", named


def test_public_client_cannot_use_client_credentials(gw):
    client = public_client(gw)
    reply = o.token(gw.origin, {"grant_type": "client_credentials", "resource": gw.resource,
                                "client_id": client["client_id"]})
    assert reply.status in (400, 401), reply
    assert o.error_of(reply) in ("unauthorized_client", "invalid_client"), reply


def test_revoking_a_refresh_token_ends_its_family(gw, alice):
    tokens = tokens_for(gw, alice)
    assert_allowed_at_auth(gw, tokens.access, "alice")
    reply = o.post_form(gw.url("/oauth/revoke"), {"token": tokens.refresh, "token_type_hint": "refresh_token",
                                                  "client_id": tokens.client["client_id"]})
    assert reply.status == 200, reply
    assert_token_error(o.refresh(gw.origin, tokens.client["client_id"], tokens.refresh), 400, "invalid_grant")
    assert_refused_at_auth(gw, tokens.access)


def test_revoking_an_access_token_stops_it_at_auth(gw, alice):
    tokens = tokens_for(gw, alice)
    assert_allowed_at_auth(gw, tokens.access, "alice")
    reply = o.post_form(gw.url("/oauth/revoke"), {"token": tokens.access, "token_type_hint": "access_token",
                                                  "client_id": tokens.client["client_id"]})
    assert reply.status == 200, reply
    assert_refused_at_auth(gw, tokens.access)


def test_revoking_an_unknown_token_is_200(gw):
    client = public_client(gw)
    reply = o.post_form(gw.url("/oauth/revoke"), {"token": "agr_" + secrets.token_hex(32),
                                                  "client_id": client["client_id"]})
    assert reply.status == 200, reply


def test_introspection_requires_confidential_client_and_reports_activity(gw, alice):
    tokens = tokens_for(gw, alice)
    resource_server = machine_client(gw, "--introspect")
    auth = o.basic(resource_server["client_id"], resource_server["client_secret"])
    url = gw.url("/oauth/introspect")

    assert o.post_form(url, {"token": tokens.access}).status == 401
    assert o.post_form(url, {"token": tokens.access, "client_id": tokens.client["client_id"]}).status == 401
    assert o.post_form(url, {"token": tokens.access},
                       [o.basic(resource_server["client_id"], "agcs_wrong")]).status == 401

    reply = o.post_form(url, {"token": tokens.access}, [auth])
    assert reply.status == 200, reply
    body = reply.json()
    assert body["active"] is True, body
    assert body["sub"] == "alice" and body["client_id"] == tokens.client["client_id"], body
    assert body["scope"] == "notes" and body["iss"] == gw.public_url, body
    assert body["aud"] in (gw.resource, [gw.resource]), body
    assert body["exp"] > body["iat"] and body.get("token_type"), body

    # Issue 11 finding 13: a confidential client without introspection rights learns nothing of others' tokens.
    other = confidential_client(gw, redirect_uris=[REDIRECT])
    nosy = o.post_form(url, {"token": tokens.access}, [o.basic(other["client_id"], other["client_secret"])])
    assert nosy.status == 200 and nosy.json() == {"active": False}, nosy

    for garbage in ("agr_" + secrets.token_hex(32), "not-a-token"):
        assert o.post_form(url, {"token": garbage}, [auth]).json() == {"active": False}
    o.post_form(gw.url("/oauth/revoke"), {"token": tokens.refresh, "client_id": tokens.client["client_id"]})
    assert o.post_form(url, {"token": tokens.access}, [auth]).json() == {"active": False}


# ----------------------------------------------------------------------------------------------------------------
# Login: CSRF, credentials, API keys


@pytest.mark.parametrize("case", ["no_cookie", "token_altered", "cookie_altered", "consent_token_altered"])
def test_csrf_mismatch_is_refused_403(gw, alice, case):
    client = public_client(gw)
    start = start_authorization(gw, client["client_id"])
    flow = o.Authorization(start.url)
    assert flow.open().status == 200
    fields = flow.login_fields(*alice)
    if case == "no_cookie":
        reply = flow.login(fields=fields, cookies=False)
    elif case == "token_altered":
        fields["csrf_token"] = secrets.token_urlsafe(24)
        reply = flow.login(fields=fields)
    elif case == "cookie_altered":
        flow.session.cookies[o.CSRF_COOKIE] = secrets.token_urlsafe(24)
        reply = flow.login(fields=fields)
    else:
        assert flow.login(fields=fields).status == 200
        flow.consent_form.inputs["csrf_token"] = secrets.token_urlsafe(24)
        reply = flow.decide("allow")
    assert reply.status == 403, reply
    assert reply.header("Location") is None, reply
    assert o.is_html(reply), reply


def test_wrong_password_and_unknown_user_get_the_same_401_page(gw, alice):
    client = public_client(gw)
    pages = {}
    for label, username in (("wrong_password", alice[0]), ("unknown_user", "nobody-" + secrets.token_hex(3))):
        flow = o.Authorization(start_authorization(gw, client["client_id"]).url)
        assert flow.open().status == 200
        reply = flow.login(username, "wrong-" + secrets.token_urlsafe(12))
        assert reply.status == 401, (label, reply)
        assert reply.header("Location") is None and o.is_html(reply), reply
        html = reply.body.decode()
        assert "login" in o.parse_forms(html), f"{label}: the login form must be shown again"
        pages[label] = o.visible_text(html)
    assert pages["wrong_password"] == pages["unknown_user"], pages
    lowered = pages["unknown_user"].lower()
    assert re.search(r"(wrong|invalid|incorrect) user ?name or password", lowered), pages
    for leak in ("no such user", "unknown user", "does not exist", "not found"):
        assert leak not in lowered, pages


def test_api_key_login_grants_at_most_the_keys_scopes(gw):
    subject = "keyholder-" + secrets.token_hex(3)
    key = gw.issue_key(subject, "notes")
    client = public_client(gw)
    start = start_authorization(gw, client["client_id"], scope="notes notes_admin")
    result = o.authorize_via_http(start.url, api_key=key["key"])
    reply = o.exchange_code(gw.origin, client["client_id"], result.code, REDIRECT, start.verifier)
    assert reply.status == 200, reply
    body = reply.json()
    assert set(body["scope"].split()) <= {"notes"}, body
    _, claims = o.jwt_parts(body["access_token"])
    assert claims["sub"] == subject and "notes_admin" not in claims["scope"].split(), claims
    assert_allowed_at_auth(gw, body["access_token"], subject, "/notes/x")
    assert gw.auth(body["access_token"], "/notes/admin/x").status == 403

    bad = o.Authorization(start_authorization(gw, client["client_id"]).url)
    assert bad.open().status == 200
    assert bad.login(api_key="agk_" + secrets.token_hex(32)).status == 401


# ----------------------------------------------------------------------------------------------------------------
# authctl: users, tokens, clients


def test_user_disable_revokes_tokens_and_blocks_login(gw):
    user = gw.add_user()
    tokens = tokens_for(gw, user)
    assert_allowed_at_auth(gw, tokens.access, user[0])
    gw.ctl("user", "disable", user[0])
    assert_refused_at_auth(gw, tokens.access)
    assert_token_error(o.refresh(gw.origin, tokens.client["client_id"], tokens.refresh), 400, "invalid_grant")
    flow = o.Authorization(start_authorization(gw, tokens.client["client_id"]).url)
    assert flow.open().status == 200
    assert flow.login(*user).status == 401


def test_tokens_revoke_subject_ends_every_token_of_the_subject(gw):
    user = gw.add_user()
    one, two = tokens_for(gw, user), tokens_for(gw, user)
    bystander = gw.add_user()
    other = tokens_for(gw, bystander)
    for t in (one, two):
        assert_allowed_at_auth(gw, t.access, user[0])
    gw.ctl("tokens", "revoke", "--subject", user[0])
    for t in (one, two):
        assert_refused_at_auth(gw, t.access)
        assert_token_error(o.refresh(gw.origin, t.client["client_id"], t.refresh), 400, "invalid_grant")
    assert_allowed_at_auth(gw, other.access, bystander[0])
    # The user is not disabled: logging in again works.
    assert tokens_for(gw, user).access


def test_clients_revoke_ends_the_client(gw, alice):
    tokens = tokens_for(gw, alice, public_client(gw, client_name="Doomed Client"))
    client_id = tokens.client["client_id"]
    survivor = tokens_for(gw, alice)
    listed = gw.ctl("clients", "list", "--json").stdout
    assert client_id in listed, listed
    json.loads(listed)  # --json prints JSON
    assert_allowed_at_auth(gw, tokens.access, "alice")

    gw.ctl("clients", "revoke", client_id)
    assert_refused_at_auth(gw, tokens.access)
    again = o.refresh(gw.origin, client_id, tokens.refresh)
    assert again.status in (400, 401), again
    assert o.error_of(again) in ("invalid_grant", "invalid_client"), again
    assert_error_page_without_redirect(o.Session().get(start_authorization(gw, client_id).url))
    assert_allowed_at_auth(gw, survivor.access, "alice")

"""End-to-end: requests to a real Traefik entrypoint, decided by the real authgateway, answered by stand-ins.

Every denial test asserts the exact denial status, so a gateway that always answered 200 fails the suite.
"""

from __future__ import annotations

import json
import secrets

import pytest

import e2e_support as s

FFMPEG_RESOURCE_METADATA = "https://mcp.example.com/.well-known/oauth-protected-resource/ffmpeg"
IDENTITY_HEADERS = ("X-Auth-Subject", "X-Auth-Method", "X-Auth-Scopes", "X-Auth-Client", "X-Auth-Issuer",
                    "X-Auth-Key-Id", "X-Auth-Route")


def echo_of(reply: s.Reply) -> dict:
    assert reply.header("Content-Type") == "application/json", reply
    return reply.json()


seen = s.seen
only = s.only


def tamper_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1:]}"


def denial_json(reply: s.Reply) -> dict:
    assert (reply.header("Content-Type") or "").startswith("application/json"), reply
    body = reply.json()
    assert isinstance(body, dict) and "error" in body, reply
    return body


# ----------------------------------------------------------------------------------------------------------------
# 1. API key allowed; identity headers emitted; the gateway key never reaches the backend


def test_api_key_allowed_backend_sees_identity_headers_and_no_client_credential(stack):
    key = stack.keys["alice"]
    reply = stack.get("/ffmpeg/x?probe=1", [s.bearer(key["key"]), ("Accept", "application/json")])
    assert reply.status == 200, reply
    echo = echo_of(reply)
    assert echo["backend"] == "ffmpeg"
    assert echo["request_line"] == "GET /ffmpeg/x?probe=1 HTTP/1.1", echo["request_line"]
    assert only(echo, "X-Auth-Subject") == "alice"
    assert only(echo, "X-Auth-Method") == "api_key"
    assert {"ffmpeg", "memory", "trello"} <= set(only(echo, "X-Auth-Scopes").split()), echo["headers"]
    assert only(echo, "X-Auth-Route") == "ffmpeg"
    assert only(echo, "X-Auth-Client") == "e2e-laptop"
    assert only(echo, "X-Auth-Key-Id") == key["id"]
    # The client's Authorization header (the gateway key) is gone, not merely rewritten.
    assert not [v for v in seen(echo, "Authorization") if v], echo["headers"]
    for name, value in echo["headers"]:
        assert key["key"] not in value and key["key"] not in name, f"gateway key leaked in {name}: {value}"


def test_api_key_in_x_api_key_header_is_accepted_and_stripped_before_backend(stack):
    key = stack.key("alice")
    reply = stack.get("/ffmpeg/tools", [("X-API-Key", key)])
    assert reply.status == 200, reply
    echo = echo_of(reply)
    assert only(echo, "X-Auth-Subject") == "alice"
    assert not [v for v in seen(echo, "X-API-Key") if v], echo["headers"]
    assert all(key not in v for _, v in echo["headers"])


def test_post_with_body_reaches_backend_unchanged(stack):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    reply = stack.get("/ffmpeg/mcp", [s.bearer(stack.key("alice")), ("Content-Type", "application/json")],
                      method="POST", body=body)
    assert reply.status == 200, reply
    echo = echo_of(reply)
    assert echo["method"] == "POST"
    assert echo["body"] == body.decode()
    assert only(echo, "X-Auth-Subject") == "alice"


# ----------------------------------------------------------------------------------------------------------------
# 2. JWT allowed


def test_jwt_allowed_backend_sees_jwt_method_and_issuer(stack):
    token = stack.issuer.token(sub="carol", aud="https://mcp.example.com/ffmpeg", scope="ffmpeg other")
    reply = stack.get("/ffmpeg/x", [s.bearer(token)])
    assert reply.status == 200, reply
    echo = echo_of(reply)
    assert only(echo, "X-Auth-Subject") == "carol"
    assert only(echo, "X-Auth-Method") == "jwt"
    assert only(echo, "X-Auth-Issuer") in (stack.issuer.issuer, "corp"), echo["headers"]
    assert "ffmpeg" in only(echo, "X-Auth-Scopes").split()
    assert only(echo, "X-Auth-Route") == "ffmpeg"
    assert only(echo, "X-Auth-Client") == "e2e-mcp-client"
    assert not [v for v in seen(echo, "Authorization") if v], "the client's JWT must not reach the backend"
    assert all(token not in v for _, v in echo["headers"])


def test_jwt_audience_list_containing_the_route_resource_is_allowed(stack):
    token = stack.issuer.token(aud=["https://other.example.com", "https://mcp.example.com/ffmpeg"])
    reply = stack.get("/ffmpeg/x", [s.bearer(token)])
    assert reply.status == 200, reply


# ----------------------------------------------------------------------------------------------------------------
# 3. Denials relayed by Traefik


def test_no_credential_is_401_with_resource_metadata_challenge_and_json_body(stack):
    reply = stack.get("/ffmpeg/x")
    assert reply.status == 401, reply
    challenge = reply.header("WWW-Authenticate")
    assert challenge is not None, reply
    assert challenge.startswith("Bearer "), challenge
    assert f'resource_metadata="{FFMPEG_RESOURCE_METADATA}"' in challenge, challenge
    assert 'realm="mcp"' in challenge, challenge
    assert "error=" not in challenge, "RFC 6750 §3.1: no error code when no credential was sent"
    body = denial_json(reply)
    assert body["error"] == "unauthorized", body
    assert "no-store" in (reply.header("Cache-Control") or ""), reply


def test_unknown_api_key_is_401_invalid_token(stack):
    reply = stack.get("/ffmpeg/x", [s.bearer("agk_" + secrets.token_hex(32))])
    assert reply.status == 401, reply
    assert 'error="invalid_token"' in (reply.header("WWW-Authenticate") or ""), reply
    assert denial_json(reply)["error"] == "invalid_token"


def test_revoked_key_is_401_invalid_token_while_gateway_runs(stack):
    key = stack.keys["alice_to_revoke"]
    before = stack.get("/ffmpeg/x", [s.bearer(key["key"])])
    assert before.status == 200, f"the key must work before revocation: {before!r}"
    s.run_checked([str(stack.authctl), "--db", str(stack.db), "revoke-key", key["id"]], env=stack.env)
    after = stack.get("/ffmpeg/x", [s.bearer(key["key"])])
    assert after.status == 401, after
    assert 'error="invalid_token"' in (after.header("WWW-Authenticate") or ""), after
    assert FFMPEG_RESOURCE_METADATA in (after.header("WWW-Authenticate") or ""), after
    assert denial_json(after)["error"] == "invalid_token"


def test_api_key_without_route_scope_is_403_insufficient_scope(stack):
    reply = stack.get("/ffmpeg/x", [s.bearer(stack.key("alice_memory_only"))])
    assert reply.status == 403, reply
    challenge = reply.header("WWW-Authenticate") or ""
    assert 'error="insufficient_scope"' in challenge, reply
    assert 'scope="ffmpeg"' in challenge, challenge
    assert denial_json(reply)["error"] == "insufficient_scope"


def test_jwt_without_route_scope_is_403_insufficient_scope(stack):
    reply = stack.get("/ffmpeg/x", [s.bearer(stack.issuer.token(scope="memory"))])
    assert reply.status == 403, reply
    assert denial_json(reply)["error"] == "insufficient_scope"


@pytest.mark.parametrize("variant", ["wrong_aud", "sibling_route_aud", "wrong_iss", "expired", "bad_signature"])
def test_bad_jwt_is_401_invalid_token(stack, variant):
    issuer = stack.issuer
    token = {
        "wrong_aud": lambda: issuer.token(aud="https://mcp.example.com/elsewhere"),
        "sibling_route_aud": lambda: issuer.token(aud="https://mcp.example.com/openmemory"),
        "wrong_iss": lambda: issuer.token(iss=issuer.issuer + "-evil"),
        "expired": lambda: issuer.token(lifetime=-3600),
        "bad_signature": lambda: tamper_signature(issuer.token()),
    }[variant]()
    reply = stack.get("/ffmpeg/x", [s.bearer(token)])
    assert reply.status == 401, reply
    assert 'error="invalid_token"' in (reply.header("WWW-Authenticate") or ""), reply
    assert denial_json(reply)["error"] == "invalid_token"


def test_jwt_on_api_key_only_route_is_401_not_passed_through(stack):
    token = stack.issuer.token(aud="https://mcp.example.com/trello", scope="trello")
    reply = stack.get("/trello/boards", [s.bearer(token)])
    assert reply.status == 401, reply
    assert denial_json(reply)["error"] == "invalid_token"


# ----------------------------------------------------------------------------------------------------------------
# 4. Spoofed identity headers (incl. alias spellings Traefik deletes with aliasHeadersStrategy: delete)


def test_spoofed_identity_headers_never_reach_backend(stack):
    spoofed = [
        ("X-Auth-Subject", "mallory"),
        ("X-Auth-Scopes", "admin"),
        ("X-Auth-Method", "mallory-method"),
        ("X-Auth-Route", "mallory-route"),
        ("X-Auth-Client", "mallory-client"),
        ("X-Auth-Issuer", "mallory-issuer"),
        ("X-Auth-Key-Id", "mallory-key"),
        ("X_Auth_Subject", "mallory"),
        ("X.Auth.Subject", "mallory"),
        ("X_Auth_Scopes", "admin"),
    ]
    reply = stack.get("/ffmpeg/x", [*spoofed, s.bearer(stack.key("alice"))])
    assert reply.status == 200, reply
    echo = echo_of(reply)
    assert only(echo, "X-Auth-Subject") == "alice"
    assert "admin" not in only(echo, "X-Auth-Scopes").split()
    for name, value in echo["headers"]:
        assert "mallory" not in name.lower() and "mallory" not in value.lower(), (
            f"spoofed value reached the backend: {name}: {value}\nall: {echo['headers']!r}")
        normalized = name.lower().replace("_", "-").replace(".", "-")
        if normalized.startswith("x-auth-"):
            assert name.lower() == normalized, f"alias spelling reached the backend: {name}: {value}"
    assert not [v for v in seen(echo, "X-Auth-Scopes") if "admin" in v.split()]


# ----------------------------------------------------------------------------------------------------------------
# 5. Credential style: the backend's own token replaces the client's


def test_trello_stand_in_refuses_requests_without_its_token(stack):
    # Sanity for the stand-in itself: without the gateway's swap it answers 401.
    direct = s.request(stack.trello.port, "/trello/boards", [s.bearer(stack.key("alice"))], host="127.0.0.1")
    assert direct.status == 401, direct


def test_credential_route_backend_gets_its_own_token_and_never_the_client_key(stack):
    key = stack.key("alice")
    reply = stack.get("/trello/boards", [s.bearer(key)])
    assert reply.status == 200, reply
    echo = echo_of(reply)
    assert seen(echo, "Authorization") == [f"Bearer {stack.trello_token}"], echo["headers"]
    assert only(echo, "X-Auth-Route") == "trello"
    for name, value in echo["headers"]:
        assert key not in value and "agk_" not in value, f"client key reached the backend in {name}: {value}"


def test_credential_route_with_x_api_key_header_strips_it(stack):
    key = stack.key("alice")
    reply = stack.get("/trello/boards", [("X-API-Key", key)])
    assert reply.status == 200, reply
    echo = echo_of(reply)
    assert seen(echo, "Authorization") == [f"Bearer {stack.trello_token}"]
    assert all("agk_" not in v for _, v in echo["headers"]), echo["headers"]


def test_credential_route_without_scope_is_403_and_backend_secret_not_leaked(stack):
    reply = stack.get("/trello/boards", [s.bearer(stack.key("alice_memory_only"))])
    assert reply.status == 403, reply
    assert stack.trello_token.encode() not in reply.body
    assert all(stack.trello_token not in v for _, v in reply.headers), reply


# ----------------------------------------------------------------------------------------------------------------
# 6. Path binding and SSE streaming through Traefik


def test_path_binding_other_users_stream_is_403(stack):
    reply = stack.get("/openmemory/claude/sse/bob", [s.bearer(stack.key("alice")), ("Accept", "text/event-stream")])
    assert reply.status == 403, reply
    assert denial_json(reply)["error"] == "access_denied"


def test_path_binding_jwt_for_other_user_is_403(stack):
    token = stack.issuer.token(sub="alice", aud="https://mcp.example.com/openmemory", scope="memory")
    reply = stack.get("/openmemory/claude/sse/bob", [s.bearer(token)])
    assert reply.status == 403, reply


def test_path_binding_own_stream_is_200_and_sse_events_arrive_one_by_one(stack):
    status, headers, events = s.read_sse(stack.traefik_port, "/openmemory/claude/sse/alice",
                                         [s.bearer(stack.key("alice"))])
    assert status == 200, (status, headers, events)
    assert (s.header_values(headers, "Content-Type") or [""])[0].startswith("text/event-stream"), headers
    assert len(events) == s.SSE_EVENTS, events
    assert all(e.event == "message" for e in events), events
    payloads = [json.loads(e.data) for e in events]
    assert [p["n"] for p in payloads] == list(range(s.SSE_EVENTS))
    assert all(p["subject"] == "alice" and p["user"] == "alice" and p["client"] == "claude" for p in payloads)
    # Streamed, not buffered: arrivals are spread over the backend's 3 × 300 ms (relative times only).
    arrivals = [e.arrived for e in events]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert arrivals[-1] - arrivals[0] >= 0.6, f"events arrived together (buffered?): gaps {gaps}"
    assert sum(1 for g in gaps if g >= 0.1) >= 2, f"events arrived in bursts (buffered?): gaps {gaps}"


def test_path_binding_own_stream_with_jwt_is_200(stack):
    token = stack.issuer.token(sub="alice", aud="https://mcp.example.com/openmemory", scope="memory")
    status, headers, events = s.read_sse(stack.traefik_port, "/openmemory/cursor/sse/alice", [s.bearer(token)])
    assert status == 200, (status, headers, events)
    assert len(events) == s.SSE_EVENTS and json.loads(events[0].data)["subject"] == "alice"


# ----------------------------------------------------------------------------------------------------------------
# 7. Encoded traversal and other path tricks on the bound segment


@pytest.mark.parametrize("path, expected", [
    ("/openmemory/claude/sse/alice%2F..%2Fbob", {400}),   # encoded slash: Traefik (or the gateway) refuses
    ("/openmemory/claude/sse/alice%2f..%2fbob", {400}),
    ("/openmemory/claude/sse/alice%5C..%5Cbob", {400}),   # encoded backslash
    ("/openmemory/claude/sse/bob%00", {400}),             # encoded NUL
    ("/openmemory/claude/sse/%2e%2e", {400, 403, 404}),   # encoded dot segment
    ("/openmemory/claude/sse/alice/../bob", {403}),       # Traefik resolves it to .../bob: binding denies
    ("/openmemory/claude/sse/%62ob", {403}),              # %62 = 'b': decoded by Traefik to bob: denied
    ("/openmemory/claude/sse/alice%252Fbob", {400, 403}), # double encoding: never alice's stream for "bob"
])
def test_encoded_traversal_on_bound_segment_is_refused(stack, path, expected):
    reply = stack.get(path, [s.bearer(stack.key("alice"))])
    assert reply.status != 200, f"{path} must not be allowed: {reply!r}"
    assert reply.status in expected, f"{path}: {reply!r}"


# ----------------------------------------------------------------------------------------------------------------
# Generated configuration and discovery


def test_static_snippet_carries_the_entrypoint_hardening(stack):
    snippet = stack.static_snippet
    assert "allowEncodedSlash: false" in snippet, snippet
    assert "allowEncodedBackSlash: false" in snippet, snippet
    assert "aliasHeadersStrategy: delete" in snippet, snippet


def test_protected_resource_metadata_is_not_behind_auth(stack):
    # MCP clients fetch this URL (from the 401 challenge) without a token; it must never answer 401.
    reply = stack.get("/.well-known/oauth-protected-resource/ffmpeg")
    assert reply.status != 401, reply


def test_gateway_paths_are_routed_only_on_the_public_host(stack):
    # Issue 11 finding 15: the generated well-known and /oauth/ router carries Host(public host), so another site
    # served by the same Traefik keeps its own discovery documents and /oauth/ paths.
    assert stack.get("/.well-known/oauth-protected-resource/ffmpeg").status == 200
    for path in ("/.well-known/oauth-protected-resource/ffmpeg", "/.well-known/oauth-authorization-server",
                 "/oauth/token"):
        reply = s.request(stack.traefik_port, path, host="other.example.com")
        assert reply.status == 404, f"{path} on another host reached a router: {reply!r}"


def test_jwks_is_cached_not_fetched_per_request(stack):
    before = stack.issuer.jwks_fetches
    for _ in range(5):
        assert stack.get("/ffmpeg/x", [s.bearer(stack.issuer.token())]).status == 200
    assert stack.issuer.jwks_fetches - before <= 1, f"JWKS fetched {stack.issuer.jwks_fetches - before}× for 5 tokens"


# ----------------------------------------------------------------------------------------------------------------
# Issue 12: the proxy-gateway boundary cases of the attack table (SECURITY.md), through real Traefik 3.7


# T3: alias spellings of the forwarded headers, each pointing at another route's path (or the public discovery
# path, or another host). Whatever Traefik does with them (aliasHeadersStrategy: delete), the gateway must decide
# on the real request Traefik forwards.
T3_ALIAS_SETS = {
    "X_Forwarded_Uri": lambda path: [("X_Forwarded_Uri", path)],
    "X.Forwarded.Uri": lambda path: [("X.Forwarded.Uri", path)],
    "X_Forwarded_Host": lambda path: [("X_Forwarded_Host", "other.example.com")],
    "all aliases at once": lambda path: [("X_Forwarded_Uri", path), ("X.Forwarded.Uri", path),
                                         ("X_Forwarded_Host", "other.example.com"),
                                         ("X.Forwarded.Host", "other.example.com"),
                                         ("X_Forwarded_Proto", "http"), ("X_Forwarded_Method", "OPTIONS")],
}


@pytest.mark.parametrize("aliases", list(T3_ALIAS_SETS), ids=list(T3_ALIAS_SETS))
def test_t3_forwarded_header_aliases_through_traefik_do_not_change_the_decision(stack, aliases):
    make = T3_ALIAS_SETS[aliases]
    # No credential, aliases naming the public discovery document: the real path (/ffmpeg/x) needs a credential.
    reply = stack.get("/ffmpeg/x", make("/.well-known/oauth-protected-resource/ffmpeg"))
    assert reply.status == 401, reply
    assert f'resource_metadata="{FFMPEG_RESOURCE_METADATA}"' in (reply.header("WWW-Authenticate") or ""), reply
    # A memory-only key, aliases naming alice's openmemory stream (which that key opens): the real route is ffmpeg.
    reply = stack.get("/ffmpeg/x", [*make("/openmemory/claude/sse/alice"),
                                    s.bearer(stack.key("alice_memory_only"))])
    assert reply.status == 403, reply
    assert 'error="insufficient_scope"' in (reply.header("WWW-Authenticate") or ""), reply
    # The same key on the real openmemory stream with aliases naming ffmpeg: decided (and bound) on the real path.
    reply = stack.get("/openmemory/claude/sse/bob", [*make("/openmemory/claude/sse/alice"),
                                                     s.bearer(stack.key("alice_memory_only"))])
    assert reply.status == 403, reply
    # A full key, aliases naming the trello route: allowed as the ffmpeg route, for the real path.
    reply = stack.get("/ffmpeg/x", [*make("/trello/boards"), s.bearer(stack.key("alice"))])
    assert reply.status == 200, reply
    echo = echo_of(reply)
    assert echo["backend"] == "ffmpeg", echo
    assert echo["request_line"] == "GET /ffmpeg/x HTTP/1.1", echo["request_line"]
    assert only(echo, "X-Auth-Route") == "ffmpeg"
    assert only(echo, "X-Auth-Subject") == "alice"


# T6: a client names the forwarded headers as hop-by-hop in Connection, hoping Traefik drops them before (or
# after) it builds the forwardAuth request, so the gateway decides on missing metadata or a default "/".
T6_CONNECTION_VALUES = ["X-Forwarded-Uri, X-Forwarded-Host", "X-Forwarded-For",
                        "X-Forwarded-Uri, X-Forwarded-Host, X-Forwarded-Method, X-Forwarded-Proto, X-Forwarded-For"]


@pytest.mark.parametrize("connection", T6_CONNECTION_VALUES)
def test_t6_connection_hop_by_hop_forwarded_headers_through_traefik(stack, connection):
    hop = ("Connection", connection)
    # No credential: the real route's challenge (never a 400 for missing metadata, never a decision for "/").
    reply = stack.get("/ffmpeg/x", [hop])
    assert reply.status == 401, reply
    assert f'resource_metadata="{FFMPEG_RESOURCE_METADATA}"' in (reply.header("WWW-Authenticate") or ""), reply
    # A key without the real route's scope: 403 for ffmpeg.
    reply = stack.get("/ffmpeg/x", [hop, s.bearer(stack.key("alice_memory_only"))])
    assert reply.status == 403, reply
    assert 'error="insufficient_scope"' in (reply.header("WWW-Authenticate") or ""), reply
    # Another user's bound stream is still refused: the real path's capture is bound.
    reply = stack.get("/openmemory/claude/sse/bob", [hop, s.bearer(stack.key("alice"))])
    assert reply.status == 403, reply
    # A valid key for the real path: allowed as the ffmpeg route, for that path.
    reply = stack.get("/ffmpeg/x?t6=1", [hop, s.bearer(stack.key("alice"))])
    assert reply.status == 200, reply
    echo = echo_of(reply)
    assert echo["request_line"] == "GET /ffmpeg/x?t6=1 HTTP/1.1", echo["request_line"]
    assert only(echo, "X-Auth-Route") == "ffmpeg"
    assert only(echo, "X-Auth-Subject") == "alice"


# T16: an encoded '?' or '#' in the bound {user_id} segment. It decodes to a character no subject equals, so the
# request is refused (by Traefik or the gateway), never allowed for alice (or as bob) on a path the backend could
# read as another stream.
@pytest.mark.parametrize("segment", ["alice%3F", "alice%3Fx", "alice%3f", "alice%23", "alice%23x", "bob%3Falice",
                                     "bob%23alice", "%3Falice", "%23alice"])
def test_t16_encoded_question_mark_and_hash_in_bound_segment_through_traefik(stack, segment):
    path = f"/openmemory/claude/sse/{segment}"
    for credential in (s.bearer(stack.key("alice")),
                       s.bearer(stack.issuer.token(sub="alice", aud="https://mcp.example.com/openmemory",
                                                   scope="memory"))):
        reply = stack.get(path, [credential])
        assert reply.status in (400, 403), f"{path}: {reply!r}"

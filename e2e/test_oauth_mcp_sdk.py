"""Done-when flow: the MCP Python SDK's own OAuth client gets into an SDK-built MCP server through real Traefik and
the gateway's built-in authorization server, refreshes, and is shut out when the user is disabled.

    SDK client ──▶ Traefik 127.0.0.1:T (config from `authctl traefik-config`)
                     ├─ /.well-known/*, /oauth/* ──▶ authgateway (public_url http://127.0.0.1:T, issuer builtin)
                     └─ /notes/** ─forwardAuth─▶ authgateway ─▶ MCP server (MCPServer, Streamable HTTP, uvicorn)

The client starts from nothing: a bare 401 → protected resource metadata → authorization server metadata → dynamic
registration → authorize with PKCE (the redirect handler logs in over HTTP with oauth_support's driver, the
callback handler returns code and state) → token → tools/list and tools/call. Run as a script
(`python3 test_oauth_mcp_sdk.py serve PORT`) this file is the MCP server.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.client.auth import OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

import e2e_support as s
import oauth_support as o

ACCESS_TOKEN_TTL = 4  # seconds: the refresh path waits this out instead of poking the SDK's internals
CALLBACK = "http://127.0.0.1:9/callback"  # never contacted: the redirect handler reads the consent's 303


# ----------------------------------------------------------------------------------------------------------------
# The MCP server (run in a subprocess)


def serve(port: int) -> None:
    import uvicorn

    server = MCPServer("notes")

    @server.tool()
    def whoami(ctx: Context) -> str:
        """Who the gateway says is calling (the identity headers this server received)."""
        headers = ctx.headers or {}
        return json.dumps({"subject": headers.get("x-auth-subject"), "method": headers.get("x-auth-method"),
                           "client": headers.get("x-auth-client"),
                           "authorization_seen": bool(headers.get("authorization"))})

    @server.tool()
    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        return a + b

    app = server.streamable_http_app(streamable_http_path="/notes/mcp", stateless_http=True, json_response=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_mcp_server(processes: s.Processes, workdir: Path) -> tuple:
    last = ""
    for attempt in range(3):
        port = s.free_port()
        log = workdir / f"mcp-server-{attempt}.log"
        child = processes.start("mcp-server", [sys.executable, str(Path(__file__).resolve()), "serve", str(port)],
                                log, env=o.base_env(), cwd=s.E2E_DIR)

        def up():
            if not child.alive():
                raise RuntimeError(f"MCP server exited with {child.popen.returncode}:\n{s.tail(log)}")
            try:
                # Any HTTP answer means uvicorn listens (a GET without the SSE Accept header is refused).
                return s.request(port, "/notes/mcp", host=f"127.0.0.1:{port}", timeout=2).status > 0
            except OSError:
                return False

        try:
            s.wait_until(up, 30, interval=0.2, what="the MCP server to listen")
            s.ACTIVE_LOGS.append(("mcp-server", log))
            return child, port
        except (RuntimeError, TimeoutError) as error:
            last = f"{error}\n{s.tail(log)}"
            processes.stop(child)
    raise RuntimeError(f"MCP server did not start: {last}")


# ----------------------------------------------------------------------------------------------------------------
# The stack


@pytest.fixture(scope="module")
def sdk_stack(request, binaries, tmp_path_factory):
    gateway_bin, authctl, traefik_bin = binaries
    workdir = tmp_path_factory.mktemp("oauth-sdk")
    o.scoped_logs(request)
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)
    try:
        mcp_child, mcp_port = start_mcp_server(processes, workdir)
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)

    class McpBackend:  # the gateway fixture only needs the backend's port
        port = mcp_port

    traefik_port = s.free_port()
    try:
        gw = o.start_oauth_gateway(processes, gateway_bin, authctl, workdir, o.base_env(), name="sdk",
                                   public_port=traefik_port, notes=McpBackend,
                                   extra_env={"ACCESS_TOKEN_TTL": f"{ACCESS_TOKEN_TTL}s"})
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)

    static_snippet = s.run_checked([str(authctl), "traefik-config", "--static"], env=gw.env)
    dynamic_dir = workdir / "dynamic"
    dynamic_dir.mkdir()
    dynamic = s.run_checked([str(authctl), "traefik-config", "--policy", str(gw.policy),
                             "--gateway-url", f"http://127.0.0.1:{gw.port}"], env=gw.env)
    (dynamic_dir / "authgateway.yaml").write_text(dynamic)
    providers = f"providers:\n  file:\n    directory: \"{dynamic_dir}\"\n    watch: false\n"
    try:
        traefik = o.start_traefik_on(processes, traefik_bin, workdir, traefik_port, static_snippet, providers,
                                     probe_path="/.well-known/oauth-protected-resource/notes")
    except RuntimeError as error:
        pytest.fail(f"traefik did not start on {traefik_port}: {error}\n--- dynamic config:\n{dynamic}",
                    pytrace=False)
    s.ACTIVE_LOGS.append(("traefik (oauth sdk)", traefik.log_path))
    return {"gw": gw, "traefik_port": traefik_port, "public_url": f"http://127.0.0.1:{traefik_port}",
            "mcp_url": f"http://127.0.0.1:{traefik_port}/notes/mcp", "dynamic": dynamic}


# ----------------------------------------------------------------------------------------------------------------
# SDK client pieces


class MemoryStorage:
    """The SDK's TokenStorage in memory; records every token set so the test can see rotations."""

    def __init__(self) -> None:
        self.tokens = None
        self.client_info = None
        self.history: list = []

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens) -> None:
        self.tokens = tokens
        self.history.append(tokens)

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info) -> None:
        self.client_info = client_info


class HttpLogin:
    """redirect_handler + callback_handler: logs in over HTTP (no browser) and hands the redirect's code back."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password
        self.authorize_urls: list = []
        self.results: list = []
        self.failures: list = []

    async def redirect_handler(self, url: str) -> None:
        self.authorize_urls.append(url)
        try:
            result = await anyio.to_thread.run_sync(
                lambda: o.authorize_via_http(url, self.username, self.password))
        except o.FlowError as error:
            self.failures.append(error)
            raise
        self.results.append(result)

    async def callback_handler(self):
        params = self.results[-1].params
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


def make_provider(mcp_url: str, storage: MemoryStorage, login: HttpLogin):
    metadata = OAuthClientMetadata(client_name="e2e SDK client", redirect_uris=[CALLBACK],
                                   grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                                   token_endpoint_auth_method="none")
    return OAuthClientProvider(server_url=mcp_url, client_metadata=metadata, storage=storage,
                               redirect_handler=login.redirect_handler, callback_handler=login.callback_handler)


async def call_tools(mcp_url: str, provider) -> dict:
    """One MCP session: initialize, tools/list, tools/call whoami and add."""
    async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30.0)) as http:
        async with streamable_http_client(mcp_url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                who = await session.call_tool("whoami", {})
                added = await session.call_tool("add", {"a": 2, "b": 40})
    def text(result) -> str:
        assert not getattr(result, "is_error", getattr(result, "isError", False)), result
        return "".join(getattr(c, "text", "") for c in result.content)
    return {"tools": sorted(t.name for t in tools.tools), "whoami": json.loads(text(who)), "add": text(added)}


def run(coro_factory, timeout: float = 90):

    async def bounded():
        with anyio.fail_after(timeout):
            return await coro_factory()
    return anyio.run(bounded)


# ----------------------------------------------------------------------------------------------------------------
# The test


def test_mcp_sdk_client_discovers_registers_logs_in_refreshes_and_is_shut_out(sdk_stack):
    gw: o.OAuthGateway = sdk_stack["gw"]
    mcp_url, public_url = sdk_stack["mcp_url"], sdk_stack["public_url"]
    traefik_port = sdk_stack["traefik_port"]
    user = gw.add_user("alice")

    # The starting point the client sees: a bare 401 naming the metadata, through Traefik.
    bare = s.request(traefik_port, "/notes/mcp", [("Content-Type", "application/json")], method="POST",
                     body=b'{"jsonrpc":"2.0","id":1,"method":"ping"}', host=f"127.0.0.1:{traefik_port}")
    assert bare.status == 401, bare
    challenge = o.challenge_params(bare.header("WWW-Authenticate"))
    assert challenge.get("resource_metadata") == f"{public_url}/.well-known/oauth-protected-resource/notes", challenge

    storage, login = MemoryStorage(), HttpLogin(*user)
    provider = make_provider(mcp_url, storage, login)

    # 1. Discovery → registration → authorize + PKCE → token → tools.
    first = run(lambda: call_tools(mcp_url, provider))
    assert first["tools"] == ["add", "whoami"], first
    assert first["whoami"]["subject"] == "alice", first
    assert first["whoami"]["method"] == "jwt", first
    assert first["whoami"]["authorization_seen"] is False, "the client's token must not reach the MCP server"
    assert first["add"] == "42", first
    assert len(login.authorize_urls) == 1, login.authorize_urls
    assert login.authorize_urls[0].startswith(f"{public_url}/oauth/authorize?"), login.authorize_urls
    assert storage.client_info is not None and storage.client_info.client_id, storage.client_info
    assert storage.tokens is not None and storage.tokens.refresh_token, storage.tokens
    _, claims = o.jwt_parts(storage.tokens.access_token)
    assert claims["iss"] == public_url and claims["sub"] == "alice", claims
    assert claims["aud"] in (f"{public_url}/notes", [f"{public_url}/notes"]), claims
    assert claims["client_id"] == storage.client_info.client_id, claims
    first_tokens = storage.tokens

    # 2. The access token expires; the provider refreshes (no new login) and gets a rotated refresh token.
    time.sleep(ACCESS_TOKEN_TTL + 1.5)
    second = run(lambda: call_tools(mcp_url, provider))
    assert second["whoami"]["subject"] == "alice", second
    assert len(login.authorize_urls) == 1, f"the provider logged in again instead of refreshing: {login.authorize_urls}"
    assert storage.tokens.access_token != first_tokens.access_token, "no new access token after expiry"
    assert storage.tokens.refresh_token and storage.tokens.refresh_token != first_tokens.refresh_token, (
        "the refresh token was not rotated")
    # The old refresh token is spent: presenting it again is reuse (which would revoke the family), so only check
    # the current one through the provider's next call below.

    # 3. `authctl user disable alice`: the next call is refused and a new login fails.
    current_access = storage.tokens.access_token
    gw.ctl("user", "disable", "alice")
    refused = s.request(traefik_port, "/notes/mcp", [s.bearer(current_access), ("Content-Type", "application/json"),
                                                     ("Accept", "application/json, text/event-stream")],
                        method="POST", body=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
                        host=f"127.0.0.1:{traefik_port}")
    assert refused.status == 401, refused
    with pytest.raises(Exception) as failure:
        run(lambda: call_tools(mcp_url, provider))
    assert login.failures, f"the SDK call failed without a refused login: {failure.value!r}"
    refused_login = login.failures[-1]
    assert refused_login.step == "POST login" and refused_login.reply.status == 401, refused_login


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        sys.exit(f"usage: {sys.argv[0]} serve PORT")

"""Helpers for the built-in OAuth 2.1 authorization server's end-to-end tests (test_oauth_*.py).

- `pkce_pair()`, `parse_forms()` (stdlib html.parser), `Session` (http.client + a cookie jar, never follows
  redirects), `register_client()`, `Authorization` / `authorize_via_http()` (authorize → login → consent → code, the
  same driver the MCP SDK test's redirect handler uses), token helpers and `auth_check()` (the gateway's /auth the way
  Traefik calls it);
- `OAuthGateway`: the real authgateway binary on a port chosen up front, so its `public_url` (the issuer) can name
  it, with e2e/policy_oauth.yaml and a stand-in `notes` backend;
- `start_traefik_on()`: Traefik on a given port (the SDK test's public URL is Traefik's, known before the gateway
  starts).

Everything listens on 127.0.0.1; every socket has a timeout; every child runs in its own process group.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Iterable, Optional
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import e2e_support as s

POLICY_OAUTH = s.E2E_DIR / "policy_oauth.yaml"
ARTIFACTS = s.E2E_DIR / "artifacts"
CSRF_COOKIE = "authgateway_csrf"
FORM_TYPE = "application/x-www-form-urlencoded"


# --------------------------------------------------------------------------------------------------------------
# PKCE


def pkce_pair() -> tuple:
    """(code_verifier, S256 code_challenge): 64 unreserved characters and base64url(SHA-256) without padding."""
    verifier = secrets.token_urlsafe(48)  # 64 characters of [A-Za-z0-9_-]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


# --------------------------------------------------------------------------------------------------------------
# HTML forms


@dataclass
class Form:
    id: str
    action: Optional[str]
    method: str
    inputs: dict = field(default_factory=dict)  # name -> value (every <input> with a name, in order)
    input_types: dict = field(default_factory=dict)  # name -> type
    buttons: list = field(default_factory=list)  # [(name, value, type)]

    def hidden(self) -> dict:
        return {k: v for k, v in self.inputs.items() if self.input_types.get(k) == "hidden"}


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: dict = {}
        self.anonymous = 0
        self.current: Optional[Form] = None
        self.text: list = []
        self._skip = 0  # inside <script>/<style>
        self._button: Optional[list] = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "form":
            form_id = a.get("id")
            if not form_id:
                self.anonymous += 1
                form_id = f"#form{self.anonymous}"
            self.current = Form(form_id, a.get("action"), (a.get("method") or "get").lower())
            self.forms[form_id] = self.current
        elif tag == "input" and self.current is not None and a.get("name"):
            kind = (a.get("type") or "text").lower()
            if kind in ("submit", "button", "image"):
                self.current.buttons.append((a["name"], a.get("value", ""), kind))
            else:
                self.current.inputs[a["name"]] = a.get("value", "")
                self.current.input_types[a["name"]] = kind
        elif tag == "button" and self.current is not None:
            self.current.buttons.append((a.get("name", ""), a.get("value", ""), (a.get("type") or "submit").lower()))

    def handle_endtag(self, tag):
        if tag == "form":
            self.current = None
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.text.append(" ".join(data.split()))


def parse_forms(html: str) -> dict:
    """{form id: Form} for every <form> in `html` (forms without an id get '#form1', '#form2', ...)."""
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


def visible_text(html: str) -> str:
    """The page's text nodes (outside script/style), whitespace collapsed, joined by ' | '."""
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return " | ".join(parser.text)


# --------------------------------------------------------------------------------------------------------------
# HTTP with cookies (never follows redirects: the tests look at every 303)


class Session:
    """http.client requests to absolute http://127.0.0.1:PORT/... URLs with one cookie jar (names → values; every
    server here is loopback, so the jar ignores domain/path). Redirects are returned, never followed."""

    def __init__(self) -> None:
        self.cookies: dict = {}

    def request(self, method: str, url: str, headers: Iterable = (), body: Optional[bytes] = None,
                form: Optional[dict] = None, cookies: bool = True, timeout: float = s.SOCKET_TIMEOUT) -> s.Reply:
        parts = urlsplit(url)
        assert parts.scheme == "http" and parts.hostname, f"only http://host:port URLs here: {url!r}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = list(headers)
        if form is not None:
            body = urlencode(form).encode()
            headers.append(("Content-Type", FORM_TYPE))
        if cookies and self.cookies:
            headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        assert parts.hostname == s.LOOPBACK, f"tests talk to loopback only, not {parts.hostname}"
        reply = s.request(parts.port or 80, path, headers, method=method, body=body, host=parts.netloc, timeout=timeout)
        for value in s.header_values(reply.headers, "Set-Cookie"):
            jar = SimpleCookie()
            jar.load(value)
            for name, morsel in jar.items():
                self.cookies[name] = morsel.value
        return reply

    def get(self, url: str, headers: Iterable = (), **kw) -> s.Reply:
        return self.request("GET", url, headers, **kw)

    def post_form(self, url: str, form: dict, headers: Iterable = (), **kw) -> s.Reply:
        return self.request("POST", url, headers, form=form, **kw)


def post_form(url: str, form: dict, headers: Iterable = ()) -> s.Reply:
    return Session().post_form(url, form, headers)


def post_json(url: str, payload, headers: Iterable = ()) -> s.Reply:
    return Session().request("POST", url, [("Content-Type", "application/json"), *headers],
                             body=json.dumps(payload).encode())


def basic(client_id: str, secret: str) -> tuple:
    from urllib.parse import quote
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return ("Authorization", "Basic " + base64.b64encode(raw).decode())


def location_params(reply: s.Reply) -> dict:
    """The query parameters of a redirect's Location (single values)."""
    location = reply.header("Location")
    assert location, f"expected a redirect with Location, got {reply!r}"
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query, keep_blank_values=True).items()}


def is_html(reply: s.Reply) -> bool:
    return (reply.header("Content-Type") or "").lower().startswith("text/html")


def error_of(reply: s.Reply) -> str:
    """The `error` member of a JSON error body (asserting the {error, error_description} shape)."""
    assert (reply.header("Content-Type") or "").lower().startswith("application/json"), reply
    body = reply.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), reply
    return body["error"]


# --------------------------------------------------------------------------------------------------------------
# Client registration and the authorization-code flow


def register_client(base: str, redirect_uris: Optional[list] = None, client_name: str = "e2e client",
                    expect: int = 201, headers: Iterable = (), **metadata) -> dict:
    """POST /oauth/register (RFC 7591). Returns the response JSON (asserting status `expect`)."""
    payload = {"client_name": client_name, **metadata}
    if redirect_uris is not None:
        payload["redirect_uris"] = redirect_uris
    reply = post_json(f"{base}/oauth/register", payload, headers)
    assert reply.status == expect, f"registration {payload!r}: {reply!r}"
    return reply.json()


def authorize_url(base: str, **params) -> str:
    """`base`/oauth/authorize?... with the given parameters (None values left out)."""
    return f"{base}/oauth/authorize?" + urlencode({k: v for k, v in params.items() if v is not None})


@dataclass
class AuthorizeResult:
    """Where the flow ended: the final redirect's parameters plus every page on the way (for assertions)."""
    params: dict
    location: str
    login_page: s.Reply
    consent_page: Optional[s.Reply]
    final: s.Reply

    @property
    def code(self) -> str:
        assert "code" in self.params, f"no code in {self.location!r}"
        return self.params["code"]


class FlowError(AssertionError):
    """A step of the HTTP login driver answered something other than the next page."""

    def __init__(self, step: str, reply: s.Reply):
        super().__init__(f"{step}: {reply!r}")
        self.step = step
        self.reply = reply


class Authorization:
    """One pass through /oauth/authorize driven over HTTP, step by step (tests of single steps use the pieces)."""

    def __init__(self, url: str, session: Optional[Session] = None) -> None:
        self.url = url
        self.session = session or Session()
        self.login_page: Optional[s.Reply] = None
        self.login_form: Optional[Form] = None
        self.consent_page: Optional[s.Reply] = None
        self.consent_form: Optional[Form] = None

    def open(self) -> s.Reply:
        reply = self.session.get(self.url, [("Accept", "text/html")])
        self.login_page = reply
        if reply.status == 200:
            forms = parse_forms(reply.body.decode("utf-8", "replace"))
            self.login_form = forms.get("login")
        return reply

    def login_fields(self, username: Optional[str] = None, password: Optional[str] = None,
                     api_key: Optional[str] = None) -> dict:
        if self.login_form is None:
            raise FlowError("authorize page has no <form id=\"login\">", self.login_page)
        fields = dict(self.login_form.hidden())
        # The other visible fields as rendered (normally empty), then ours.
        for name, value in self.login_form.inputs.items():
            fields.setdefault(name, value)
        if username is not None:
            fields["username"] = username
        if password is not None:
            fields["password"] = password
        if api_key is not None:
            fields["api_key"] = api_key
        fields["action"] = "login"
        return fields

    def action_url(self, form: Form) -> str:
        return urljoin(self.url, form.action) if form.action else self.url

    def login(self, username: Optional[str] = None, password: Optional[str] = None, api_key: Optional[str] = None,
              fields: Optional[dict] = None, cookies: bool = True) -> s.Reply:
        if fields is None:
            fields = self.login_fields(username, password, api_key)
        reply = self.session.post_form(self.action_url(self.login_form), fields, [("Accept", "text/html")],
                                       cookies=cookies)
        if reply.status == 200:
            self.consent_page = reply
            self.consent_form = parse_forms(reply.body.decode("utf-8", "replace")).get("consent")
        return reply

    def decide(self, decision: str = "allow") -> s.Reply:
        if self.consent_form is None:
            raise FlowError("login answer has no <form id=\"consent\">", self.consent_page)
        fields = dict(self.consent_form.hidden())
        fields["decision"] = decision
        return self.session.post_form(self.action_url(self.consent_form), fields, [("Accept", "text/html")])


def authorize_via_http(url: str, username: Optional[str] = None, password: Optional[str] = None,
                       api_key: Optional[str] = None, decision: str = "allow",
                       session: Optional[Session] = None) -> AuthorizeResult:
    """authorize (200 login page) → login (200 consent page) → decision (303 to the redirect URI)."""
    flow = Authorization(url, session)
    page = flow.open()
    if page.status != 200:
        raise FlowError("GET authorize", page)
    reply = flow.login(username, password, api_key)
    if reply.status != 200:
        raise FlowError("POST login", reply)
    final = flow.decide(decision)
    if final.status not in (302, 303) or not final.header("Location"):
        raise FlowError(f"POST consent ({decision})", final)
    return AuthorizeResult(location_params(final), final.header("Location"), page, reply, final)


# --------------------------------------------------------------------------------------------------------------
# Tokens


def token(base: str, form: dict, headers: Iterable = ()) -> s.Reply:
    return post_form(f"{base}/oauth/token", {k: v for k, v in form.items() if v is not None}, headers)


def exchange_code(base: str, client_id: Optional[str], code: str, redirect_uri: str, verifier: str,
                  headers: Iterable = (), **extra) -> s.Reply:
    return token(base, {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                        "code_verifier": verifier, "client_id": client_id, **extra}, headers)


def refresh(base: str, client_id: Optional[str], refresh_token: str, headers: Iterable = (), **extra) -> s.Reply:
    return token(base, {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id,
                        **extra}, headers)


def jwt_parts(token_value: str) -> tuple:
    """(header, claims) of a compact JWS, without verifying it."""
    def part(segment: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    head, payload, _ = token_value.split(".")
    return part(head), part(payload)


def auth_check(port: int, host: str, credential: Optional[str], path: str = "/notes/mcp",
               method: str = "POST") -> s.Reply:
    """The gateway's /auth exactly as Traefik's forwardAuth calls it (X-Forwarded-* from a trusted peer)."""
    headers = [("X-Forwarded-Method", method), ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", host),
               ("X-Forwarded-Uri", path), ("X-Forwarded-For", "127.0.0.1")]
    if credential is not None:
        headers.append(s.bearer(credential))
    return s.request(port, "/auth", headers, host=f"127.0.0.1:{port}")


# --------------------------------------------------------------------------------------------------------------
# The gateway with the built-in authorization server


def ctl(authctl: Path, db: Path, env: dict, *args: str, stdin: Optional[str] = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Runs `authctl --db DB ARGS...` (with `stdin` as its standard input); raises on a non-zero exit if `check`."""
    argv = [str(authctl), "--db", str(db), *args]
    result = subprocess.run(argv, env=env, input=stdin if stdin is not None else "", capture_output=True,
                            text=True, timeout=60, cwd=str(s.REPO_ROOT))
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}\nstdout:\n{result.stdout}\n"
                           f"stderr:\n{result.stderr}")
    return result


@dataclass
class OAuthGateway:
    """A running authgateway whose public_url is http://127.0.0.1:<its port><path>."""
    port: int
    public_url: str
    db: Path
    env: dict
    authctl: Path
    policy: Path
    child: s.Child
    notes: s.Backend

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def resource(self) -> str:
        return f"{self.public_url}/notes"

    def url(self, path: str) -> str:
        return self.origin + path

    def get(self, path: str, headers: Iterable = (), method: str = "GET", body=None) -> s.Reply:
        return s.request(self.port, path, headers, method=method, body=body, host=self.host)

    def auth(self, credential: Optional[str], path: str = "/notes/mcp", method: str = "POST") -> s.Reply:
        return auth_check(self.port, self.host, credential, path, method)

    def ctl(self, *args: str, stdin: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
        return ctl(self.authctl, self.db, self.env, *args, stdin=stdin, check=check)

    def add_user(self, name: Optional[str] = None, password: Optional[str] = None, scopes: Optional[str] = "notes,ledger",
                 groups: Optional[str] = None) -> tuple:
        """A new user through `authctl user add NAME --password-stdin [--scopes S] [--groups G]`; returns (name,
        password). Users are granted no scopes unless given some: by default the scopes these tests sign in for."""
        name = name or "u" + secrets.token_hex(4)
        password = password or "pw-" + secrets.token_urlsafe(18)
        extra = (["--scopes", scopes] if scopes is not None else []) + (["--groups", groups] if groups is not None else [])
        self.ctl("user", "add", name, "--password-stdin", *extra, stdin=password + "\n")
        return name, password

    def issue_key(self, subject: str, scopes: str, name: Optional[str] = None) -> dict:
        return s.issue_key(self.authctl, self.db, subject, scopes, name=name or "e2e-" + secrets.token_hex(3))


def oauth_env(base_env: dict, public_url: str, notes_port: int, extra: Optional[dict] = None) -> dict:
    env = dict(base_env)
    env.update({"PUBLIC_URL": public_url, "NOTES_PORT": str(notes_port)})
    env.update(extra or {})
    return env


def start_oauth_gateway(processes: s.Processes, gateway_bin: Path, authctl: Path, workdir: Path, base_env: dict,
                        name: str = "oauth", path: str = "", extra_env: Optional[dict] = None,
                        policy_text: Optional[str] = None, public_port: Optional[int] = None,
                        notes: Optional[s.Backend] = None) -> OAuthGateway:
    """Starts authgateway with e2e/policy_oauth.yaml (or `policy_text`) on a port picked up front.

    public_url is http://127.0.0.1:<gateway port><path>, or http://127.0.0.1:<public_port><path> when the gateway
    sits behind a proxy listening on `public_port` (Traefik in the SDK test)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if notes is None:
        notes = s.Backend("notes", s.FfmpegHandler)
    policy = workdir / f"policy-{name}.yaml"
    policy.write_text(policy_text if policy_text is not None else POLICY_OAUTH.read_text())
    db = workdir / f"authgateway-{name}.sqlite"
    last_error = None
    for attempt in range(3):
        log = workdir / f"authgateway-{name}-{attempt}.log"  # fresh per attempt: the port is read from the log
        port = s.free_port()
        public_url = f"http://127.0.0.1:{public_port or port}{path}"
        env = oauth_env(base_env, public_url, notes.port, extra_env)
        if attempt == 0:
            # The policy must load as the gateway will read it (same environment).
            s.run_checked([str(authctl), "policy", "check", str(policy)], env=env)
        before = list(processes.children)
        try:
            child, port = s.start_gateway(processes, gateway_bin, policy, db, env, log,
                                          listen=f"127.0.0.1:{port}")
        except RuntimeError as error:  # most likely the port was taken meanwhile: stop this attempt, retry
            last_error = error
            for started in [c for c in list(processes.children) if c not in before]:
                processes.stop(started)
            continue
        s.ACTIVE_LOGS.append((f"authgateway ({name})", log))
        return OAuthGateway(port=port, public_url=public_url, db=db, env=env, authctl=authctl, policy=policy,
                            child=child, notes=notes)
    raise RuntimeError(f"authgateway ({name}) did not start: {last_error}")


def start_traefik_on(processes: s.Processes, traefik_bin: Path, workdir: Path, port: int, static_snippet: str,
                     providers_yaml: str, probe_path: str, timeout: float = 20) -> s.Child:
    """Traefik with its entrypoint on 127.0.0.1:`port`, waiting until `probe_path` stops answering 404."""
    config = workdir / "traefik-static.yaml"
    config.write_text(s.traefik_static_config(static_snippet, port, providers_yaml))
    log_path = workdir / "traefik.log"
    child = processes.start("traefik", [str(traefik_bin), f"--configFile={config}"], log_path, cwd=workdir,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)})

    def routed():
        if not child.alive():
            raise RuntimeError(f"traefik exited with {child.popen.returncode}:\n{s.tail(log_path)}")
        try:
            return s.request(port, probe_path, host=f"127.0.0.1:{port}", timeout=2).status != 404
        except OSError:
            return False

    try:
        s.wait_until(routed, timeout, interval=0.2, what=f"Traefik to route {probe_path}")
    except (TimeoutError, RuntimeError) as error:
        raise RuntimeError(f"{error}\n--- static config:\n{config.read_text()}\n--- traefik log:\n"
                           f"{s.tail(log_path)}") from None
    return child


def scoped_logs(request) -> None:
    """Log tails registered from now on (s.ACTIVE_LOGS) are attached to failures only until `request`'s scope ends."""
    before = list(s.ACTIVE_LOGS)

    def forget():
        s.ACTIVE_LOGS[:] = [entry for entry in s.ACTIVE_LOGS if entry in before]

    request.addfinalizer(forget)


def base_env(extra: Optional[dict] = None) -> dict:
    """Environment for the gateway and authctl: ours without proxy settings (loopback only), no AUTHGATEWAY_DB."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("AUTHGATEWAY_DB", None)
    env.update(extra or {})
    return env


def challenge_params(value: Optional[str]) -> dict:
    """The auth-params of a `Bearer k="v", k2="v2"` challenge."""
    import re
    assert value and value.startswith("Bearer "), f"not a Bearer challenge: {value!r}"
    return dict(re.findall(r'([A-Za-z_]+)="([^"]*)"', value))

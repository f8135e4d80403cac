"""The crash loops' gateway (e2e/test_crash_safety.py): the real authgateway on a fixed port, started, stopped and
killed by its PID, with the sign-in flow and /auth the way Traefik calls it."""

from __future__ import annotations

import errno
import json
import random
import signal
import time
from datetime import datetime, timezone

import crash_support as c
import e2e_support as s
import oauth_support as o

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the flow reads the 303's Location


class Site:
    """One gateway on a fixed port: its public_url is the issuer and the resource, so it must not change across
    restarts."""

    def __init__(self, request, binaries, workdir, name: str) -> None:
        self.gateway_bin, self.authctl, _ = binaries
        self.workdir = workdir
        self.processes = s.Processes()
        request.addfinalizer(self.processes.stop_all)
        self.notes = s.Backend(f"notes-{name}", s.FfmpegHandler)
        request.addfinalizer(self.notes.close)
        self.port = s.free_port()
        self.public_url = f"http://127.0.0.1:{self.port}"
        self.env = o.oauth_env(o.base_env(), self.public_url, self.notes.port)
        self.policy = workdir / "policy.yaml"
        self.policy.write_text(o.POLICY_OAUTH.read_text())
        self.db = workdir / f"{name}.sqlite"
        self.child = None
        self.starts = 0
        self.sources = 0
        self.host = f"127.0.0.1:{self.port}"
        o.scoped_logs(request)

    @property
    def origin(self) -> str:
        return self.public_url

    @property
    def resource(self) -> str:
        return f"{self.public_url}/notes"

    def start(self) -> None:
        for attempt in range(5):
            self.starts += 1
            log = self.workdir / f"gateway-{self.starts}.log"
            try:
                self.child, _ = s.start_gateway(self.processes, self.gateway_bin, self.policy, self.db, self.env, log,
                                                listen=f"127.0.0.1:{self.port}")
                break
            except OSError as error:  # ETXTBSY: a build is relinking the binary this moment (shared tree)
                if error.errno != errno.ETXTBSY or attempt == 4:
                    raise
                time.sleep(1)
        # Only the newest gateway's log is attached to a failure.
        s.ACTIVE_LOGS[:] = [entry for entry in s.ACTIVE_LOGS if entry[0] != "authgateway (crash loop)"]
        s.ACTIVE_LOGS.append(("authgateway (crash loop)", log))

    def spawn(self) -> s.Child:
        """Starts the gateway without waiting for it (to kill it during start-up)."""
        argv = [str(self.gateway_bin), "--policy", str(self.policy), "--db", str(self.db), "--listen",
                f"127.0.0.1:{self.port}"]
        for attempt in range(5):
            self.starts += 1
            try:
                self.child = self.processes.start("authgateway", argv, self.workdir / f"gateway-{self.starts}.log",
                                                  env=self.env, cwd=s.REPO_ROOT)
                return self.child
            except OSError as error:  # ETXTBSY, as in start()
                if error.errno != errno.ETXTBSY or attempt == 4:
                    raise
                time.sleep(1)

    def stop(self) -> None:
        """SIGTERM (graceful: pending last-used times are written)."""
        if self.child is not None:
            self.processes.stop(self.child)
            self.child = None

    def kill(self, rng: random.Random) -> str:
        """SIGKILL to our gateway's PID, at once or a few milliseconds after a SIGTERM (during its shutdown writes)."""
        child, self.child = self.child, None
        mode = "kill"
        if rng.random() < 0.35:
            mode = "term+kill"
            child.popen.send_signal(signal.SIGTERM)
            time.sleep(rng.uniform(0, 0.005))
        child.popen.send_signal(signal.SIGKILL)
        child.popen.wait(timeout=30)
        self.processes.stop(child)
        return mode

    def ctl(self, *args: str, stdin=None):
        return o.ctl(self.authctl, self.db, self.env, *args, stdin=stdin)

    def ctl_argv(self, *args: str) -> list:
        return [str(self.authctl), "--db", str(self.db), *args]

    def auth(self, credential, path: str = "/notes/mcp") -> s.Reply:
        """/auth as Traefik calls it, each call from another client address (X-Forwarded-For): the checks present
        many revoked keys, which the failed-credential throttle would otherwise answer with 429."""
        self.sources += 1
        client = f"10.{(self.sources >> 16) & 255}.{(self.sources >> 8) & 255}.{self.sources & 255}"
        headers = [("X-Forwarded-Method", "POST"), ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", self.host),
                   ("X-Forwarded-Uri", path), ("X-Forwarded-For", client)]
        if credential is not None:
            headers.append(s.bearer(credential))
        return s.request(self.port, "/auth", headers, host=self.host)

    def public_client(self) -> dict:
        return o.register_client(self.origin, [REDIRECT], client_name="crash loop", token_endpoint_auth_method="none",
                                 grant_types=["authorization_code", "refresh_token"])

    def sign_in(self, client_id: str, username=None, password=None, api_key=None) -> dict:
        """authorize → login (password or API key) → consent → code → tokens; the token response."""
        verifier, challenge = o.pkce_pair()
        url = o.authorize_url(self.origin, response_type="code", client_id=client_id, redirect_uri=REDIRECT,
                              code_challenge=challenge, code_challenge_method="S256", resource=self.resource,
                              scope="notes", state="st")
        result = o.authorize_via_http(url, username, password, api_key)
        reply = o.exchange_code(self.origin, client_id, result.code, REDIRECT, verifier)
        assert reply.status == 200, reply
        return reply.json()


def now_text() -> str:
    """Now as the store writes dates (GRDB: UTC 'YYYY-MM-DD HH:MM:SS.SSS'), for comparisons in SQL rows."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def assert_store_whole(db, label: str) -> None:
    assert c.integrity(db) == ["ok"], f"{label}: PRAGMA integrity_check"
    broken = c.half_written_rows(db)
    assert broken == {}, f"{label}: half-written rows: {json.dumps(broken, indent=1, default=str)}"


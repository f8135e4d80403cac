"""Crash safety (issue 12 item 5): `kill -9` the real authctl and authgateway at random moments, hundreds of times,
and prove afterwards that nothing was lost or half written.

- authctl is killed during issue-key, rotate-key (with and without --overlap), revoke-key, user add/set/passwd/
  disable/enable, clients add/revoke, tokens revoke and signing-key rotate;
- authgateway is killed while clients rotate refresh tokens, sign in, register, get client-credentials tokens and
  have API keys decided (whose last-used times it writes at shutdown: some kills come just after a SIGTERM).

After each batch of kills: `PRAGMA integrity_check` is ok, no row is half written (e2e/crash_support.py lists the
checks), every key and client secret that authctl printed works at a gateway started on that store (and every
revocation it printed is in force), every refresh token the gateway answered with was committed, no refresh token
was accepted twice, and a refresh family never has two live branches.

Short loop (default, part of `scripts/test`): 150 authctl kills and 60 gateway kills, each loop at most
CRASH_LOOP_SECONDS (30), about 80 s in all. Long loop: `CRASH_LOOP_ITERATIONS=2000 python3 -m pytest e2e/test_crash_safety.py -s`
(N authctl kills, N/4 gateway kills, up to an hour each). CRASH_LOOP_SEED=<n> replays a run's random choices.
"""

from __future__ import annotations

import errno
import json
import random
import secrets
import signal
import threading
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

import crash_support as c
import e2e_support as s
import oauth_support as o

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the flow reads the 303's Location
SCOPE_SETS = ["notes", "notes,ledger", "ledger", ""]
GROUP_SETS = ["ops", "ops,dev", "dev", ""]


# ----------------------------------------------------------------------------------------------------------------
# One gateway on a fixed port (its public_url is the issuer and the resource: it must not change across restarts)


class Site:
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


@pytest.fixture(scope="module")
def budget() -> c.Budget:
    return c.Budget.from_environment()


# ----------------------------------------------------------------------------------------------------------------
# authctl


class CtlLedger:
    """What authctl printed (complete stdout of each run, killed or not) and which records each run aimed at."""

    def __init__(self) -> None:
        self.keys: dict = {}  # plaintext -> printed by (argv)
        self.targeted: set = set()  # key ids a revoke or rotate was started on (killed or not)
        self.revoked: set = set()  # key ids whose revocation authctl printed (revoke-key, rotate-key --overlap 0)
        self.clients: dict = {}  # client_id -> secret
        self.clients_revoked: set = set()
        self.clients_targeted: set = set()
        self.users: set = set()
        self.subjects_revoked: dict = {}  # subject -> time the revocation was printed
        self.outcomes: dict = {}  # op -> {"completed": n, "killed": n, "killed after printing": n}

    def count(self, op: str, run: c.Run, changed: bool) -> None:
        tally = self.outcomes.setdefault(op, {"completed": 0, "killed before commit": 0, "killed after commit": 0,
                                              "killed after printing": 0})
        if run.completed:
            tally["completed"] += 1
        elif run.killed:
            tally["killed after commit" if changed else "killed before commit"] += 1
            if run.stdout:
                tally["killed after printing"] += 1
        else:
            raise AssertionError(f"{run.argv} exited {run.returncode} without being killed:\n{run.stderr}")


def choose_ctl_op(rng: random.Random, site: Site, seq: int) -> tuple:
    """(op name, argv, stdin, target) for one authctl run on the current state of the store."""
    keys = [r["id"] for r in c.rows(site.db, "SELECT id FROM api_key WHERE revokedAt IS NULL AND subject LIKE 'svc%'")]
    users = [r["username"] for r in c.rows(site.db, "SELECT username FROM user")]
    clients = [r["id"] for r in c.rows(site.db, "SELECT id FROM oauth_client WHERE source = 'operator'"
                                                " AND revokedAt IS NULL")]
    ops = ["issue-key", "issue-key --json", "rotate-key", "rotate-key --overlap 0", "rotate-key --overlap 1h",
           "revoke-key", "user add", "user set", "user set", "user disable", "user enable", "user passwd",
           "clients add", "clients revoke", "tokens revoke", "signing-key rotate"]
    op = rng.choice(ops)
    if op.startswith(("rotate-key", "revoke-key")) and not keys:
        op = "issue-key --json"
    if op.startswith("user ") and op != "user add" and not users:
        op = "user add"
    if op == "clients revoke" and not clients:
        op = "clients add"
    password = "pw-" + secrets.token_urlsafe(12) + "\n"
    if op.startswith("issue-key"):
        args = ["issue-key", "--subject", f"svc-{seq}", "--scopes", "notes", "--name", f"crash-{seq}"]
        return op, args + (["--json"] if op.endswith("--json") else []), None, None
    if op.startswith("rotate-key"):
        target = rng.choice(keys)
        overlap = op.split("--overlap ")[1:] or []
        return op, ["rotate-key", target, "--json"] + (["--overlap", overlap[0]] if overlap else []), None, target
    if op == "revoke-key":
        target = rng.choice(keys)
        return op, ["revoke-key", target], None, target
    if op == "user add":
        return op, ["user", "add", f"u{seq}", "--password-stdin", "--scopes", "notes,ledger", "--groups", "ops,dev"], \
            password, f"u{seq}"
    if op == "user set":
        target = rng.choice(users)
        return op, ["user", "set", target, "--scopes", rng.choice(SCOPE_SETS), "--groups", rng.choice(GROUP_SETS)], \
            None, target
    if op in ("user disable", "user enable"):
        target = rng.choice(users)
        return op, ["user", op.split()[1], target], None, target
    if op == "user passwd":
        target = rng.choice(users)
        return op, ["user", "passwd", target, "--password-stdin"], password, target
    if op == "clients add":
        return op, ["clients", "add", f"machine-{seq}", "--grant", "client_credentials", "--subject", f"bot-{seq}",
                    "--scopes", "notes", "--resource", site.resource, "--json"], None, None
    if op == "clients revoke":
        target = rng.choice(clients)
        return op, ["clients", "revoke", target], None, target
    if op == "tokens revoke":
        target = rng.choice(users)
        return op, ["tokens", "revoke", "--subject", target], None, target
    return op, ["signing-key", "rotate"], None, None


def record_ctl_output(ledger: CtlLedger, op: str, run: c.Run, target) -> None:
    """Reads what a run printed; a complete run printed everything, a killed one possibly nothing (never a part)."""
    out = run.stdout
    if run.completed:
        assert out.strip(), f"{run.argv} printed nothing"
    if not out:
        return
    assert out.endswith("\n"), f"{run.argv} printed a partial line: {out!r}"
    if op.startswith("issue-key --json") or op.startswith("rotate-key"):
        printed = json.loads(out)
        ledger.keys[printed["key"]] = run.argv
        if op == "rotate-key --overlap 0":
            ledger.revoked.add(printed["replaces"])
    elif op == "issue-key":
        ledger.keys[out.strip()] = run.argv
    elif op == "revoke-key":
        assert out.strip() == f"revoked {target}", out
        ledger.revoked.add(target)
    elif op == "user add":
        ledger.users.add(target)
    elif op == "clients add":
        printed = json.loads(out)
        ledger.clients[printed["client_id"]] = printed["client_secret"]
    elif op == "clients revoke":
        ledger.clients_revoked.add(target)
    elif op == "tokens revoke":
        ledger.subjects_revoked[target] = now_text()


def seed_grants(site: Site, client_id: str, limit: int = 2) -> int:
    """Password sign-ins (grants the user commands must end) for up to `limit` enabled users who hold `notes`."""
    made = 0
    for user in c.rows(site.db, "SELECT username FROM user WHERE NOT disabled AND (' ' || scopes || ' ')"
                                " LIKE '% notes %' ORDER BY random()"):
        if made >= limit:
            break
        password = "pw-seed-" + user["username"]
        site.ctl("user", "passwd", user["username"], "--password-stdin", stdin=password + "\n")
        site.sign_in(client_id, user["username"], password)
        made += 1
    return made


def check_ctl_batch(site: Site, ledger: CtlLedger, client_id: str, label: str) -> None:
    assert_store_whole(site.db, label)
    site.start()
    try:
        now = now_text()
        for key, argv in ledger.keys.items():
            row = c.key_state(site.db, key)
            assert row is not None, f"{label}: authctl printed a key that is not in the store ({argv})"
            active = row["revokedAt"] is None and (row["expiresAt"] is None or row["expiresAt"] > now)
            if row["id"] not in ledger.targeted:
                assert active, f"{label}: printed key {row['id']} was never revoked but is not active"
            if row["id"] in ledger.revoked:
                assert row["revokedAt"] is not None, f"{label}: authctl printed the revocation of {row['id']}"
            reply = site.auth(key)
            assert reply.status == (200 if active else 401), f"{label}: key {row['id']} (active={active}): {reply!r}"
        for key_id in ledger.revoked:
            assert c.rows(site.db, "SELECT 1 FROM api_key WHERE id = ? AND revokedAt IS NOT NULL", (key_id,)), \
                f"{label}: authctl printed the revocation of {key_id}, which the store does not hold"
        for client_id_printed, secret in ledger.clients.items():
            revoked = c.rows(site.db, "SELECT revokedAt FROM oauth_client WHERE id = ?", (client_id_printed,))
            assert revoked, f"{label}: authctl printed client {client_id_printed}, which is not in the store"
            reply = o.token(site.origin, {"grant_type": "client_credentials"}, [o.basic(client_id_printed, secret)])
            if client_id_printed in ledger.clients_revoked:
                assert revoked[0]["revokedAt"] is not None, f"{label}: printed revocation of {client_id_printed}"
            if revoked[0]["revokedAt"] is not None:
                assert reply.status == 401, f"{label}: revoked client {client_id_printed}: {reply!r}"
                continue
            assert reply.status == 200, f"{label}: printed client {client_id_printed}: {reply!r}"
            decided = site.auth(reply.json()["access_token"])  # signed by the current signing key
            assert decided.status == 200, f"{label}: token of {client_id_printed} at /auth: {decided!r}"
        for user in ledger.users:
            assert c.rows(site.db, "SELECT 1 FROM user WHERE username = ?", (user,)), f"{label}: user {user}"
        for subject, printed_at in ledger.subjects_revoked.items():
            left = c.rows(site.db, "SELECT id FROM oauth_grant WHERE subject = ? AND revokedAt IS NULL"
                                   " AND createdAt <= ?", (subject, printed_at))
            assert not left, f"{label}: `tokens revoke --subject {subject}` printed, grants left: {left}"
        ledger.subjects_revoked.clear()  # later sign-ins make new grants for the same subjects
        seed_grants(site, client_id)
    finally:
        site.stop()
    assert_store_whole(site.db, label + " (after the check's own writes)")


def test_kill_9_authctl_at_random_moments_loses_nothing_it_printed(request, binaries, tmp_path, budget):
    rng = random.Random(budget.seed)
    site = Site(request, binaries, tmp_path, "ctl")
    ledger = CtlLedger()
    site.start()
    client_id = site.public_client()["client_id"]
    for n in range(3):
        site.ctl("user", "add", f"seed{n}", "--password-stdin", "--scopes", "notes,ledger", "--groups", "ops,dev",
                 stdin=f"pw-seed-seed{n}\n")
    seed_grants(site, client_id, limit=3)
    site.stop()

    typical: dict = {}
    durations: dict = {}
    started = time.monotonic()
    kills = seq = 0
    while kills < budget.ctl_kills and time.monotonic() - started < budget.seconds:
        batch_end = min(budget.ctl_kills, kills + budget.ctl_batch)
        while kills < batch_end and time.monotonic() - started < budget.seconds:
            seq += 1
            op, args, stdin, target = choose_ctl_op(rng, site, seq)
            if op.startswith(("rotate-key", "revoke-key")):
                ledger.targeted.add(target)
            if op == "clients revoke":
                ledger.clients_targeted.add(target)
            # The first run of each kind is not killed: it measures how long the kind takes.
            delay = c.kill_delay(rng, typical[op]) if op in typical else 120.0
            at_commit = None
            if op in typical and rng.random() < 0.3:  # a third of the kills: microseconds from the commit
                delay, at_commit = rng.uniform(0, 0.0015), site.db
            before = c.fingerprint(site.db)
            began = time.monotonic()
            run = c.run_and_kill(site.ctl_argv(*args), site.env, delay, stdin=stdin, cwd=s.REPO_ROOT,
                                 at_commit=at_commit)
            if run.completed:  # the median of the kind's complete runs so far
                durations.setdefault(op, []).append(time.monotonic() - began)
                typical[op] = sorted(durations[op])[len(durations[op]) // 2]
            if not run.completed and not run.killed and run.returncode == 1 and op in (
                    "user add", "rotate-key", "rotate-key --overlap 0", "rotate-key --overlap 1h", "revoke-key",
                    "clients revoke"):
                continue  # refused (the target changed under a killed run, or a name repeated): not a kill
            ledger.count(op, run, changed=c.fingerprint(site.db) != before)
            record_ctl_output(ledger, op, run, target)
            kills += run.killed
        check_ctl_batch(site, ledger, client_id, f"authctl batch ending at kill {kills} (seed {budget.seed})")
    totals = {name: sum(tally[name] for tally in ledger.outcomes.values()) for name in
              ("completed", "killed before commit", "killed after commit", "killed after printing")}
    print(f"\ncrash loop authctl: {kills} kills in {seq} runs, {time.monotonic() - started:.0f}s, seed {budget.seed}, "
          f"{len(ledger.keys)} printed keys and {len(ledger.clients)} printed client secrets checked; "
          f"{json.dumps(totals)}; by command: {json.dumps(ledger.outcomes)}")
    assert kills >= min(budget.ctl_kills, 20), f"only {kills} kills happened in {budget.seconds}s"


# ----------------------------------------------------------------------------------------------------------------
# authgateway


class Family:
    """One refresh-token family as its client sees it: every token received, in order."""

    def __init__(self, kind: str, response: dict) -> None:
        self.kind = kind
        self.tokens = [response["refresh_token"]]
        self.ended = None  # why the client stopped using it

    @property
    def current(self) -> str:
        return self.tokens[-1]


class GatewayLedger:
    def __init__(self) -> None:
        self.accepted: dict = {}  # refresh token -> how many times it was exchanged (must stay <= 1)
        self.rotations = 0
        self.lost = 0  # families ended because a rotation committed but its answer died with the gateway
        self.decisions = 0
        self.writes = 0  # registrations and client-credentials grants answered
        self.modes: dict = {}
        self.lock = threading.Lock()


def refresh_worker(site: Site, family: Family, ledger: GatewayLedger, client_id: str, stop: threading.Event):
    while not stop.is_set() and family.ended is None:
        presented = family.current
        try:
            reply = o.refresh(site.origin, client_id, presented)
        except OSError:
            return  # the gateway died: whether this rotation committed is checked after the restart
        if reply.status == 200:
            body = reply.json()
            with ledger.lock:
                ledger.accepted[presented] = ledger.accepted.get(presented, 0) + 1
                ledger.rotations += 1
            family.tokens.append(body["refresh_token"])
            try:
                decided = site.auth(body["access_token"])
            except OSError:
                return
            assert decided.status == 200, decided
        elif reply.status == 400 and o.error_of(reply) == "invalid_grant":
            family.ended = "invalid_grant"
            return
        else:
            raise AssertionError(f"refresh answered {reply!r}")


def busy_worker(site: Site, ledger: GatewayLedger, api_key: str, machine: tuple, stop: threading.Event):
    """API-key decisions (last-used times, written at shutdown), registrations and client-credentials grants."""
    while not stop.is_set():
        try:
            assert site.auth(api_key).status == 200
            registered = o.post_json(f"{site.origin}/oauth/register",
                                     {"client_name": "crash", "redirect_uris": [REDIRECT],
                                      "token_endpoint_auth_method": "none"})
            minted = o.token(site.origin, {"grant_type": "client_credentials"}, [o.basic(*machine)])
        except OSError:
            return
        assert registered.status == 201 and minted.status == 200, (registered, minted)
        with ledger.lock:
            ledger.decisions += 1
            ledger.writes += 2


def catching(errors: list, target, *args) -> None:
    """Runs a client thread, keeping its failure for the test (an assert in a thread fails nothing by itself)."""
    try:
        target(*args)
    except BaseException as error:  # noqa: BLE001 - reported by the test
        errors.append(error)


def check_gateway_batch(site: Site, ledger: GatewayLedger, families: list, client_id: str, label: str) -> None:
    assert_store_whole(site.db, label)
    twice = {t[:12]: n for t, n in ledger.accepted.items() if n > 1}
    assert not twice, f"{label}: refresh tokens accepted more than once: {twice}"
    for family in families:
        for token in family.tokens:
            assert c.rows(site.db, "SELECT 1 FROM oauth_refresh_token WHERE digest = ?", (c.digest(token),)), \
                f"{label}: the gateway answered with a refresh token it had not committed"
        # Every token the client holds but the newest is spent; at most the newest is live.
        for token in family.tokens[:-1]:
            assert c.rows(site.db, "SELECT usedAt FROM oauth_refresh_token WHERE digest = ?",
                          (c.digest(token),))[0]["usedAt"] is not None, f"{label}: an exchanged token is unused"


def test_kill_9_gateway_during_refresh_rotation_never_splits_a_family(request, binaries, tmp_path, budget):
    rng = random.Random(budget.seed + 1)
    site = Site(request, binaries, tmp_path, "gateway")
    ledger = GatewayLedger()
    site.start()
    client_id = site.public_client()["client_id"]
    site.ctl("user", "add", "carol", "--password-stdin", "--scopes", "notes", stdin="pw-carol-crash\n")
    login_key = site.ctl("issue-key", "--subject", "svc-login", "--scopes", "notes", "--json").stdout
    login_key = json.loads(login_key)["key"]
    decide_key = json.loads(site.ctl("issue-key", "--subject", "svc-decide", "--scopes", "notes", "--json").stdout)["key"]
    machine = json.loads(site.ctl("clients", "add", "crash-bot", "--grant", "client_credentials", "--subject", "bot",
                                  "--scopes", "notes", "--resource", site.resource, "--json").stdout)
    machine = (machine["client_id"], machine["client_secret"])
    slots: list = [None, None, None]
    all_families: list = []

    def new_family(slot: int) -> Family:
        if slot == 0:
            family = Family("password", site.sign_in(client_id, "carol", "pw-carol-crash"))
        else:
            family = Family("api key", site.sign_in(client_id, api_key=login_key))
        all_families.append(family)
        return family

    started = time.monotonic()
    kills = 0
    while kills < budget.gateway_kills and time.monotonic() - started < budget.seconds:
        batch_end = min(budget.gateway_kills, kills + budget.gateway_batch)
        while kills < batch_end and time.monotonic() - started < budget.seconds:
            if rng.random() < 0.1:  # during start-up: opening the store, migrations, the first signing key
                site.stop()  # the one started for the set-up, if still running
                child = site.spawn()
                time.sleep(rng.uniform(0, 0.3))
                site.child = child
                mode = "start-up " + site.kill(rng)
            else:
                if site.child is None:
                    site.start()
                for slot, family in enumerate(slots):
                    if family is None or family.ended is not None:
                        if family is not None and family.ended is not None:
                            grant = c.rows(site.db, "SELECT g.revokedAt FROM oauth_refresh_token t JOIN oauth_grant g"
                                                    " ON g.id = t.grantID WHERE t.digest = ?",
                                           (c.digest(family.current),))
                            assert grant and grant[0]["revokedAt"] is not None, \
                                "a refused refresh token must have ended its whole family"
                            ledger.lost += 1
                        slots[slot] = new_family(slot)
                stop = threading.Event()
                errors: list = []
                threads = [threading.Thread(target=catching, args=(errors, refresh_worker, site, f, ledger, client_id,
                                                                   stop), daemon=True) for f in slots]
                threads.append(threading.Thread(target=catching, args=(errors, busy_worker, site, ledger, decide_key,
                                                                       machine, stop), daemon=True))
                for thread in threads:
                    thread.start()
                time.sleep(rng.uniform(0.0, 0.25))
                mode = site.kill(rng)
                stop.set()
                for thread in threads:
                    thread.join(timeout=30)
                    assert not thread.is_alive(), "a client thread hung after the kill"
                assert not errors, f"a client saw a wrong answer: {errors[0]!r}"
            ledger.modes[mode] = ledger.modes.get(mode, 0) + 1
            kills += 1
            site.child = None
        check_gateway_batch(site, ledger, all_families, client_id, f"gateway batch ending at kill {kills} "
                                                                   f"(seed {budget.seed})")

    # After all the kills: a spent token never works again, and presenting one ends its family (reuse detection
    # survived every crash); the newest token of a family still in use works exactly once.
    site.start()
    try:
        for family in [f for f in slots if f is not None and f.ended is None and len(f.tokens) > 1]:
            reply = o.refresh(site.origin, client_id, family.tokens[-2])
            assert reply.status == 400 and o.error_of(reply) == "invalid_grant", reply
            reply = o.refresh(site.origin, client_id, family.current)
            assert reply.status == 400 and o.error_of(reply) == "invalid_grant", \
                f"the family must be revoked after its spent token came back: {reply!r}"
    finally:
        site.stop()
    assert_store_whole(site.db, "after the gateway loop")
    print(f"\ncrash loop gateway: {kills} kills ({json.dumps(ledger.modes)}) in {time.monotonic() - started:.0f}s, "
          f"seed {budget.seed}; {ledger.rotations} refresh rotations, {len(all_families)} families, {ledger.lost} "
          f"ended by a rotation whose answer died with the gateway, {ledger.decisions} decision rounds, "
          f"{ledger.writes} registrations/client-credentials grants")
    assert kills >= min(budget.gateway_kills, 5), f"only {kills} gateway kills happened in {budget.seconds}s"


# ----------------------------------------------------------------------------------------------------------------
# A store being created


def test_kill_9_authctl_while_it_creates_a_new_store_leaves_one_that_opens(binaries, tmp_path, budget):
    """The first command on a new path makes the directory (0700), the file (0600), WAL mode and every migration;
    killed anywhere in that, the next command opens the store, finishes the migrations and works."""
    _, authctl, _ = binaries
    rng = random.Random(budget.seed + 2)
    env = o.base_env()
    typical = None
    kills = 0
    for n in range(max(16, budget.ctl_kills // 10)):
        db = tmp_path / f"new-{n}" / "store.sqlite"
        argv = [str(authctl), "--db", str(db), "issue-key", "--subject", "svc", "--scopes", "notes", "--json"]
        delay = 120.0 if typical is None else rng.uniform(0, 1.05 * typical)
        began = time.monotonic()
        run = c.run_and_kill(argv, env, delay, cwd=s.REPO_ROOT)
        if typical is None:
            assert run.completed, run.stderr
            typical = time.monotonic() - began
        kills += run.killed
        again = c.run_and_kill(argv, env, 120.0, cwd=s.REPO_ROOT)
        assert again.completed, f"a store whose creation was killed after {delay * 1000:.1f} ms: {again.stderr}"
        for path in (db, db.parent / (db.name + "-wal"), db.parent / (db.name + "-shm")):
            if path.exists():
                assert path.stat().st_mode & 0o077 == 0, f"{path} is open to group or others"
        assert db.parent.stat().st_mode & 0o077 == 0
        assert c.integrity(db) == ["ok"]
        for printed in (run, again):
            if printed.stdout:
                assert c.key_state(db, json.loads(printed.stdout)["key"]) is not None, "a printed key is missing"
    print(f"\ncrash loop new store: {kills} kills during store creation")
    assert kills >= 5


# ----------------------------------------------------------------------------------------------------------------
# The worst moment, made certain


def test_a_user_change_and_the_grant_revocations_it_implies_are_one_write(request, binaries, tmp_path):
    """`user set` taking a scope or group away and `user disable` end the user's grants in the same transaction as the
    change. A trigger makes the revocation fail, as if authctl died right before it: the user must be left as it
    was (written in two transactions, the change stayed and the old grants kept working)."""
    site = Site(request, binaries, tmp_path, "worst-moment")
    site.start()
    client_id = site.public_client()["client_id"]
    site.ctl("user", "add", "dave", "--password-stdin", "--scopes", "notes,ledger", "--groups", "ops",
             stdin="pw-dave-crash\n")
    site.sign_in(client_id, "dave", "pw-dave-crash")
    site.stop()
    with c.connect(site.db) as connection:
        connection.execute("CREATE TRIGGER crash_before_revocation BEFORE UPDATE OF revokedAt ON oauth_grant"
                           " BEGIN SELECT RAISE(ABORT, 'simulated crash before the grant revocation'); END")
    for change in (["user", "set", "dave", "--scopes", "ledger"], ["user", "set", "dave", "--groups", ""],
                   ["user", "disable", "dave"]):
        run = c.run_and_kill(site.ctl_argv(*change), site.env, 120.0, cwd=s.REPO_ROOT)
        assert not run.completed, f"{change}: the revocation failed, so the command must fail: {run.stdout}"
        user = c.rows(site.db, "SELECT scopes, groups, disabled FROM user WHERE username = 'dave'")[0]
        assert (user["scopes"], user["groups"], user["disabled"]) == ("notes ledger", "ops", 0), \
            f"{change} was written without the revocation of dave's grants: {dict(user)}"
    assert c.half_written_rows(site.db) == {}

"""The authctl crash loop's bookkeeping (e2e/test_crash_safety.py): which command to run next on the store's current
state, what each run printed, and the check after each batch that everything printed is in force."""

from __future__ import annotations

import json
import random
import secrets

import crash_support as c
import oauth_support as o
from crash_site import Site, assert_store_whole, now_text

SCOPE_SETS = ["notes", "notes,ledger", "ledger", ""]
GROUP_SETS = ["ops", "ops,dev", "dev", ""]


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


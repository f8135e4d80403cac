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

import json
import random
import threading
import time

import pytest

import crash_support as c
import e2e_support as s
import oauth_support as o
from crash_authctl import CtlLedger, check_ctl_batch, choose_ctl_op, record_ctl_output, seed_grants
from crash_gateway import Family, GatewayLedger, busy_worker, catching, check_gateway_batch, refresh_worker
from crash_site import Site, assert_store_whole


@pytest.fixture(scope="module")
def budget() -> c.Budget:
    return c.Budget.from_environment()


# ----------------------------------------------------------------------------------------------------------------
# authctl


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

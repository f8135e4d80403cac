"""End-to-end: faults of the SQLite token store never open the gate (issue 12, item 4).

Each test runs its own authgateway (the real binary, e2e/policy_oauth.yaml: API keys on /keys/**, the built-in
authorization server for client-credentials tokens) on its own temporary store, makes one fault happen to the
store while the gateway runs, and checks, for every request it sends:

- a key that must be refused (revoked, unknown) is never allowed;
- where the gateway cannot decide, the answer is 503 with Retry-After, never a plain 500;
- once the fault clears, the same process decides correctly again (no restart).

Faults: another writer holding the lock, a read-only store, a full disk, the file removed, the file replaced by a
restored copy (a new inode at the same path). Run: `python3 -m pytest e2e/test_store_faults.py -q`.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import sqlite3
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import pytest

import e2e_support as s
import oauth_support as o
from conftest import child_env

POLICY = s.E2E_DIR / "policy_oauth.yaml"
KEY_PATH = "/keys/mcp"
# The gateway looks at its store path every 250 ms; a revocation on a restored file must count within 1 s.
WITHIN = 1.0


# --------------------------------------------------------------------------------------------------------------
# One gateway on one store


class GatewayExited(Exception):
    """The gateway process ended (or never answered /healthz) instead of serving."""

    def __init__(self, code: Optional[int], log: str) -> None:
        super().__init__(f"authgateway exited with {code}:\n{log}")
        self.code = code


@dataclass
class StoreGateway:
    gateway_bin: Path
    authctl: Path
    directory: Path
    env: dict
    port: int = 0
    child: Optional[s.Child] = None
    log: Optional[Path] = None
    answers: list = field(default_factory=list)  # (key label, status) of every decision, for the report

    @property
    def db(self) -> Path:
        return self.directory / "store.sqlite"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, argv_prefix: Iterable[str] = (), preexec=None, name: str = "gateway",
              public_url: Optional[str] = None) -> None:
        """Starts authgateway on `db` (through `argv_prefix`, e.g. setpriv) and waits for /healthz; raises
        GatewayExited when it exits instead (a port race is retried)."""
        self.log = self.directory.parent / f"{name}.log"
        s.ACTIVE_LOGS.append((f"authgateway ({name})", self.log))
        for attempt in range(3):
            self.port = s.free_port()
            self.env = {**self.env, "PUBLIC_URL": public_url or self.origin}
            argv = [*argv_prefix, str(self.gateway_bin), "--policy", str(POLICY), "--db", str(self.db),
                    "--listen", f"127.0.0.1:{self.port}", "--reload-interval", "0"]
            with open(self.log, "ab") as log:
                popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=str(s.REPO_ROOT), start_new_session=True,
                                         preexec_fn=preexec)
            self.child = s.Child("authgateway", popen, self.log)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.child.alive():
                try:
                    if s.request(self.port, "/healthz", host=f"127.0.0.1:{self.port}", timeout=2).status == 200:
                        return
                except OSError:
                    pass
                time.sleep(0.05)
            s.stop_child(self.child)
            code = self.child.popen.returncode
            if "address already in use" not in self.child.log().lower() or attempt == 2:
                raise GatewayExited(code, s.tail(self.log))

    def stop(self) -> None:
        if self.child is not None:
            s.stop_child(self.child)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return o.ctl(self.authctl, self.db, self.env, *args, check=check)

    def issue(self, name: str) -> dict:
        return json.loads(self.ctl("issue-key", "--subject", "alice", "--scopes", "notes", "--name", name,
                                   "--json").stdout)

    def machine_client(self) -> tuple:
        body = json.loads(self.ctl("clients", "add", "fault-bot", "--grant", "client_credentials", "--subject",
                                   "ci-bot", "--scopes", "notes", "--resource", self.origin + "/notes",
                                   "--json").stdout)
        return o.basic(body["client_id"], body["client_secret"])

    def token(self, basic: tuple) -> s.Reply:
        """A client-credentials token: a write to the store (the grant)."""
        return o.token(self.origin, {"grant_type": "client_credentials"}, [basic])

    def decide(self, label: str, key: str) -> int:
        """/auth as Traefik's forwardAuth calls it, for KEY_PATH with `key`. Each request names another client
        address, so that the throttling of failed credentials (429 per address) never hides the decision."""
        host = f"127.0.0.1:{self.port}"
        client = f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
        headers = [("X-Forwarded-Method", "POST"), ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", host),
                   ("X-Forwarded-Uri", KEY_PATH), ("X-Forwarded-For", client), s.bearer(key)]
        reply = s.request(self.port, "/auth", headers, host=host)
        assert reply.status != 500, f"{label}: a plain 500 where the gateway cannot decide: {reply!r}"
        if reply.status == 503:
            assert reply.header("Retry-After"), f"{label}: 503 without Retry-After: {reply!r}"
        self.answers.append((label, reply.status))
        return reply.status


def never_allowed(gw: StoreGateway, refused: dict) -> None:
    """Every key in `refused` (label → key) is refused: 401, or 503 while the gateway cannot decide."""
    for label, key in refused.items():
        status = gw.decide(label, key)
        assert status in (401, 403, 503), f"{label} must never be allowed, got {status}"


def allowed_or_unavailable(gw: StoreGateway, label: str, key: str) -> int:
    status = gw.decide(label, key)
    assert status in (200, 503), f"{label} is a valid key: 200, or 503 while undecidable; got {status}"
    return status


def wait_for_status(gw: StoreGateway, label: str, key: str, wanted: int, within: float, refused: dict) -> float:
    """Polls until `key` gets `wanted`, checking the refused keys on every round; returns the seconds it took."""
    started = time.monotonic()
    while True:
        never_allowed(gw, refused)
        status = gw.decide(label, key)
        if status == wanted:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"{label}: still {status} {within:.1f}s later, wanted {wanted}; "
                                 f"answers: {gw.answers[-12:]}\n{s.tail(gw.log, 20)}")
        time.sleep(0.02)


def unknown_key(key: str) -> str:
    """A well-formed key that the store has never seen (last hex digit changed)."""
    return key[:-1] + ("0" if key[-1] != "0" else "1")


def backup(db: Path, to: Path) -> None:
    """A self-contained copy made through SQLite's backup API (what `sqlite3 store.db .backup` makes), 0600."""
    source, target = sqlite3.connect(db), sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    os.chmod(to, 0o600)


def restore(backup_file: Path, db: Path) -> None:
    """`cp backup.db new && mv new store.db`: a new inode at the store's path."""
    new = db.with_name("store.sqlite.new")
    shutil.copyfile(backup_file, new)
    os.chmod(new, 0o600)
    os.replace(new, db)


@pytest.fixture
def store_gateway(tmp_path):
    try:
        gateway_bin, authctl = s.gateway_binaries()
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)
    directory = tmp_path / "store"
    directory.mkdir(mode=0o700)
    gw = StoreGateway(gateway_bin, authctl, directory, child_env({"NOTES_PORT": "9", "PUBLIC_URL": ""}))
    yield gw
    gw.stop()
    if gw.log is not None:
        s.ACTIVE_LOGS[:] = [entry for entry in s.ACTIVE_LOGS if entry[1] != gw.log]
    for path in (directory, *directory.iterdir()) if directory.exists() else ():
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


def keys(gw: StoreGateway) -> tuple:
    """(valid key, refused keys by label): a valid key, a revoked one and a never-issued one."""
    valid = gw.issue("valid")
    revoked = gw.issue("revoked")
    gw.ctl("revoke-key", revoked["id"])
    return valid["key"], {"revoked": revoked["key"], "unknown": unknown_key(valid["key"])}


# --------------------------------------------------------------------------------------------------------------
# Another writer holds the lock


def test_store_locked_by_another_writer_never_opens_and_recovers(store_gateway):
    gw = store_gateway
    gw.start()
    valid, refused = keys(gw)
    to_revoke = gw.issue("to-revoke")
    client = gw.machine_client()
    assert gw.decide("valid", valid) == 200

    locker = sqlite3.connect(gw.db, isolation_level=None, timeout=0)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        # Writes wait out the 5 s busy timeout, side by side: authctl issue and revoke, and a token issuance.
        results: dict = {}
        jobs = {
            "issue": lambda: gw.ctl("issue-key", "--subject", "alice", "--scopes", "notes", "--name", "locked",
                                    check=False),
            "revoke": lambda: gw.ctl("revoke-key", to_revoke["id"], check=False),
            "token": lambda: gw.token(client),
        }
        threads = [threading.Thread(target=lambda n=n, j=j: results.__setitem__(n, j())) for n, j in jobs.items()]
        for thread in threads:
            thread.start()
        # Reads are not blocked by a writer in WAL mode: decisions go on, correctly, meanwhile.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            never_allowed(gw, refused)
            assert allowed_or_unavailable(gw, "valid", valid) == 200
            time.sleep(0.1)
        for thread in threads:
            thread.join(30)
        assert results["issue"].returncode != 0 and "locked" in results["issue"].stderr, results["issue"]
        assert results["revoke"].returncode != 0, results["revoke"]
        token = results["token"]
        assert token.status == 503 and token.header("Retry-After"), f"token issuance while locked: {token!r}"
        # The revocation did not happen, and authctl said so: the key is still valid, as the store says.
        assert gw.decide("to-revoke (revocation failed)", to_revoke["key"]) == 200
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    gw.ctl("revoke-key", to_revoke["id"])
    refused["revoked after the lock"] = to_revoke["key"]
    wait_for_status(gw, "revoked after the lock", to_revoke["key"], 401, WITHIN, refused)
    assert gw.token(client).status == 200
    assert gw.decide("issued after the lock", gw.issue("after")["key"]) == 200


# --------------------------------------------------------------------------------------------------------------
# The store made read-only


def without_file_capabilities() -> list:
    """As root, file modes bind only without CAP_DAC_OVERRIDE: run the gateway through setpriv dropping it."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is missing: a read-only mode would not bind the gateway")
    return [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def make_read_only(gw: StoreGateway) -> None:
    for path in gw.directory.iterdir():
        os.chmod(path, 0o400)
    os.chmod(gw.directory, 0o500)


def make_writable(gw: StoreGateway) -> None:
    os.chmod(gw.directory, 0o700)
    for path in gw.directory.iterdir():
        os.chmod(path, 0o600)


def test_store_made_read_only_keeps_deciding_and_writes_fail_closed(store_gateway):
    gw = store_gateway
    prefix = without_file_capabilities()
    gw.start(argv_prefix=prefix)
    valid, refused = keys(gw)
    client = gw.machine_client()
    assert gw.decide("valid", valid) == 200
    first = gw.child

    make_read_only(gw)
    try:
        # The running gateway's open files stay writable (modes are checked at open): it decides as before, and
        # a token issuance either succeeds through those files or fails closed.
        never_allowed(gw, refused)
        assert gw.decide("valid (read-only, running)", valid) == 200
        running_token = gw.token(client)
        assert running_token.status in (200, 503), running_token
        if running_token.status == 503:
            assert running_token.header("Retry-After"), running_token
        print(f"running gateway, store read-only: token issuance {running_token.status}")

        # A gateway started on the read-only store must not open the gate either: it refuses to start (exit 66,
        # nothing answered), or it decides by reading and refuses writes with 503 + Retry-After.
        second = StoreGateway(gw.gateway_bin, gw.authctl, gw.directory, dict(gw.env))
        try:
            second.start(argv_prefix=prefix, name="gateway-on-read-only-store", public_url=gw.origin)
            never_allowed(second, refused)
            allowed_or_unavailable(second, "valid (read-only, new process)", valid)
            token = second.token(client)
            assert token.status in (503,), f"a write on a read-only store: {token!r}"
            assert token.header("Retry-After"), token
            print(f"a gateway started on the read-only store decides: {second.answers}; token: {token.status}")
        except GatewayExited as exited:
            assert exited.code == 66, str(exited)
            print(f"a gateway started on the read-only store refuses to start: {exited}")
        finally:
            second.stop()
    finally:
        make_writable(gw)

    assert gw.child is first and first.alive()
    never_allowed(gw, refused)
    assert gw.decide("valid (writable again)", valid) == 200
    assert gw.token(client).status == 200
    assert gw.decide("issued after", gw.issue("after")["key"]) == 200


# --------------------------------------------------------------------------------------------------------------
# A full disk


@pytest.fixture
def small_disk(store_gateway):
    """The store's directory on a 4 MiB tmpfs; None when this machine cannot mount one."""
    gw = store_gateway
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(gw.directory)],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=20)
    if result.returncode != 0:
        yield None
        return
    try:
        yield gw.directory
    finally:
        gw.stop()
        subprocess.run(["umount", "-l", str(gw.directory)], capture_output=True, timeout=20,
                       stdin=subprocess.DEVNULL)


def fill(directory: Path) -> Path:
    """Writes a file until the file system has no space left (unbuffered: the last short write is the end)."""
    filler = directory / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1):
            while True:
                try:
                    if os.write(descriptor, b"\0" * size) < size:
                        break
                except OSError:
                    break
    finally:
        os.close(descriptor)
    return filler


def ignore_sigxfsz() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_full_disk_fails_writes_closed_and_decisions_never_open(store_gateway, small_disk):
    gw = store_gateway
    gw.start(preexec=ignore_sigxfsz)
    valid, refused = keys(gw)
    client = gw.machine_client()
    assert gw.decide("valid", valid) == 200
    assert gw.token(client).status == 200
    # Empty the -wal into the main file and truncate it, so that the next write has to grow a file.
    with sqlite3.connect(gw.db, timeout=10) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    if small_disk is not None:
        filler = fill(small_disk)
        clear = filler.unlink
    else:  # no tmpfs here: no file of the gateway may grow any more (RLIMIT_FSIZE, SIGXFSZ ignored)
        limit = max(os.path.getsize(path) for path in gw.directory.iterdir())
        resource.prlimit(gw.child.pid, resource.RLIMIT_FSIZE, (limit, limit))
        clear = lambda: resource.prlimit(gw.child.pid, resource.RLIMIT_FSIZE,  # noqa: E731
                                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    try:
        for _ in range(3):
            never_allowed(gw, refused)
            assert allowed_or_unavailable(gw, "valid (disk full)", valid) == 200
            token = gw.token(client)
            assert token.status == 503 and token.header("Retry-After"), f"token issuance on a full disk: {token!r}"
        if small_disk is not None:
            issued = gw.ctl("issue-key", "--subject", "alice", "--scopes", "notes", "--name", "full", check=False)
            assert issued.returncode != 0, issued
        assert gw.child.alive()
    finally:
        clear()

    never_allowed(gw, refused)
    assert gw.token(client).status == 200
    assert gw.decide("issued after", gw.issue("after")["key"]) == 200
    with sqlite3.connect(gw.db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --------------------------------------------------------------------------------------------------------------
# The file removed, and a restored copy moved over it


def test_store_deleted_under_the_gateway_answers_503_then_reopens_a_restored_file(store_gateway, tmp_path):
    gw = store_gateway
    gw.start()
    valid, refused = keys(gw)
    client = gw.machine_client()
    saved = tmp_path / "backup.sqlite"
    backup(gw.db, saved)
    assert gw.decide("valid", valid) == 200

    os.unlink(gw.db)
    took = wait_for_status(gw, "valid (file removed)", valid, 503, WITHIN, refused)
    for _ in range(3):
        never_allowed(gw, refused)
        assert gw.decide("valid (file still removed)", valid) == 503
    token = gw.token(client)
    assert token.status == 503 and token.header("Retry-After"), f"token issuance without a store file: {token!r}"
    assert gw.child.alive()

    restore(saved, gw.db)
    wait_for_status(gw, "valid (file restored)", valid, 200, WITHIN, refused)
    never_allowed(gw, refused)
    assert gw.token(client).status == 200
    print(f"store removed: 503 after {took:.3f}s; answers: {gw.answers}")


def test_store_replaced_by_a_restored_copy_is_reopened_and_a_revocation_on_it_counts_within_1s(store_gateway, tmp_path):
    gw = store_gateway
    gw.start()
    valid, refused = keys(gw)
    to_revoke = gw.issue("revoked-on-the-restored-file")
    saved = tmp_path / "backup.sqlite"
    backup(gw.db, saved)
    # Only in the file that is about to be replaced (and in its -wal: the gateway keeps the file open).
    newer = gw.issue("issued-after-the-backup")
    for label, key in (("valid", valid), ("to revoke", to_revoke["key"]), ("newer", newer["key"])):
        assert gw.decide(label, key) == 200

    restore(saved, gw.db)
    # The restored file has no such key: once the gateway reads the new file, it is refused.
    refused_meanwhile = dict(refused)
    noticed = wait_for_status(gw, "issued after the backup (file restored)", newer["key"], 401, WITHIN,
                              refused_meanwhile)

    gw.ctl("revoke-key", to_revoke["id"])
    refused["revoked on the restored file"] = to_revoke["key"]
    counted = wait_for_status(gw, "revoked on the restored file", to_revoke["key"], 401, WITHIN, refused)
    refused["issued after the backup"] = newer["key"]
    never_allowed(gw, refused)
    assert gw.decide("valid", valid) == 200

    # Nothing of the old file's -wal was read into the restored one: it is intact and holds no newer key.
    listed = gw.ctl("list-keys", "--json").stdout
    assert newer["id"] not in listed and to_revoke["id"] in listed
    with sqlite3.connect(gw.db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    print(f"restored copy: read after {noticed:.3f}s; revocation counted after {counted:.3f}s")


def test_store_restored_in_place_through_sqlite_is_seen_like_any_change(store_gateway, tmp_path):
    """The restore that needs no reopen: `sqlite3 store.db ".restore backup.db"` writes the copy into the open file
    through SQLite's locks (same inode, same -wal), so the gateway sees it as a change like authctl's."""
    gw = store_gateway
    gw.start()
    valid, refused = keys(gw)
    to_revoke = gw.issue("revoked-after-the-restore")
    saved = tmp_path / "backup.sqlite"
    backup(gw.db, saved)
    newer = gw.issue("issued-after-the-backup")
    assert gw.decide("newer", newer["key"]) == 200

    target = sqlite3.connect(gw.db, timeout=10)
    source = sqlite3.connect(saved)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    refused["issued after the backup"] = newer["key"]
    never_allowed(gw, refused)
    gw.ctl("revoke-key", to_revoke["id"])
    refused["revoked after the restore"] = to_revoke["key"]
    never_allowed(gw, refused)
    assert gw.decide("valid", valid) == 200

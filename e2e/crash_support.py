"""Helpers for the crash-safety loops (e2e/test_crash_safety.py): kill a process at a random moment, and read a
store after the kills to prove it whole.

- `Budget`: how many kills and how long, from CRASH_LOOP_* (the short default runs in `scripts/test`);
- `run_and_kill()`: starts a command, sends SIGKILL to it (by its PID) after a chosen delay, and returns everything it
  printed up to that moment;
- `integrity()`, `half_written_rows()`: `PRAGMA integrity_check` and every row the schema allows to be half written
  (read with python's sqlite3, while no process of ours writes to the store);
- `digest()`: SHA-256 of a key, client secret or refresh token, as the store keeps it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from cryptography.hazmat.primitives.serialization import load_pem_private_key


@dataclass
class Budget:
    """Kills per loop, bounded by count and by time (whichever ends first), and how many kills make one batch
    (the store is checked after each batch)."""
    ctl_kills: int
    gateway_kills: int
    seconds: float
    ctl_batch: int
    gateway_batch: int
    seed: int

    @staticmethod
    def from_environment() -> "Budget":
        # CRASH_LOOP_ITERATIONS=N: the long run (N authctl kills, N/4 gateway kills, up to CRASH_LOOP_SECONDS
        # each, default one hour). Without it: the short loop scripts/test runs (about 80 s in all).
        iterations = int(os.environ.get("CRASH_LOOP_ITERATIONS", "0") or 0)
        seed = int(os.environ.get("CRASH_LOOP_SEED", "0") or 0) or random.SystemRandom().randrange(1, 2**31)
        if iterations > 0:
            seconds = float(os.environ.get("CRASH_LOOP_SECONDS", "3600"))
            return Budget(ctl_kills=iterations, gateway_kills=max(1, iterations // 4), seconds=seconds,
                          ctl_batch=100, gateway_batch=25, seed=seed)
        seconds = float(os.environ.get("CRASH_LOOP_SECONDS", "30"))
        return Budget(ctl_kills=150, gateway_kills=60, seconds=seconds, ctl_batch=50, gateway_batch=20, seed=seed)


@dataclass
class Run:
    """One command run that may have been killed: everything it wrote to stdout/stderr, and how it ended."""
    argv: list
    delay: float
    stdout: str
    stderr: str
    returncode: int

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def completed(self) -> bool:
        return self.returncode == 0


def wal_state(db: Path) -> tuple:
    try:
        status = os.stat(str(db) + "-wal")
        return status.st_size, status.st_mtime_ns
    except FileNotFoundError:
        return 0, 0


def run_and_kill(argv: list, env: dict, delay: float, stdin: Optional[str] = None, cwd: Optional[Path] = None,
                 at_commit: Optional[Path] = None) -> Run:
    """Runs `argv`, SIGKILLs it `delay` seconds after it was spawned (unless it ended before), and collects its
    complete output. The PID is our own child's: nothing else is signalled.

    With `at_commit` (a store path), the clock starts when the store's write-ahead log first grows (the command is
    writing its transaction's pages, i.e. committing): `delay` is then counted from that moment, so microseconds land
    in the middle of the commit and a millisecond after it."""
    for attempt in range(5):
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd=str(cwd) if cwd else None, start_new_session=True)
            break
        except OSError as error:  # ETXTBSY: a build is relinking the binary this moment (shared tree)
            if error.errno != errno.ETXTBSY or attempt == 4:
                raise
            time.sleep(1)
    try:
        if stdin is not None:
            try:
                popen.stdin.write(stdin.encode())
            except BrokenPipeError:
                pass
        try:
            popen.stdin.close()
        except BrokenPipeError:
            pass
        popen.stdin = None  # closed: communicate() must not flush it
        if at_commit is not None:
            initial = wal_state(at_commit)
            limit = time.monotonic() + 60
            while popen.poll() is None and time.monotonic() < limit:
                state = wal_state(at_commit)
                if state != initial and state[0] > 0:
                    break
        deadline = time.monotonic() + delay
        while popen.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                popen.send_signal(signal.SIGKILL)  # a zombie not yet reaped ignores it: the exit status tells
                break
            if left > 0.002:
                time.sleep(min(left, 0.002))
        out, err = popen.communicate(timeout=60)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(timeout=10)
    return Run(argv, delay, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), popen.returncode)


def kill_delay(rng: random.Random, typical: float) -> float:
    """A random moment in a command's life: a fifth in its first 2 ms (start-up), a fifth in its first 30 ms
    (opening the store), the rest in the second half of its typical run time, more of it in the last 15 % (where
    its write, its commit and its output are)."""
    roll = rng.random()
    if roll < 0.2:
        return rng.uniform(0, 0.002)
    if roll < 0.4:
        return rng.uniform(0, 0.030)
    if roll < 0.7:
        return rng.uniform(0.5 * typical, 1.05 * typical)
    return rng.uniform(0.85 * typical, 1.02 * typical)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def connect(db: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(str(db), timeout=10)
    connection.row_factory = sqlite3.Row
    return connection


def integrity(db: Path) -> list:
    """The rows of `PRAGMA integrity_check` (["ok"] for a sound file)."""
    with connect(db) as connection:
        return [row[0] for row in connection.execute("PRAGMA integrity_check")]


# Each query returns the rows that would be half written: a key, user, client, grant, code or refresh token whose
# other half is missing, or a change whose consequence (revoking grants, retiring the old key) was not written.
HALF_WRITTEN = {
    "api key without a 32-byte digest, prefix or subject":
        "SELECT id FROM api_key WHERE digest IS NULL OR length(digest) != 32 OR displayPrefix = '' OR subject = ''",
    "rotated key whose old key was neither revoked nor given an end":
        "SELECT n.id FROM api_key n LEFT JOIN api_key o ON o.id = n.rotatedFrom WHERE n.rotatedFrom IS NOT NULL"
        " AND (o.id IS NULL OR (o.revokedAt IS NULL AND o.expiresAt IS NULL))",
    "user without a bcrypt password hash":
        "SELECT username FROM user WHERE passwordHash NOT LIKE '$2%' OR length(passwordHash) != 60",
    "operator client without a secret digest or subject":
        "SELECT id FROM oauth_client WHERE source = 'operator' AND (secretDigest IS NULL OR length(secretDigest) != 32"
        " OR subject IS NULL)",
    "grant without its client": "SELECT g.id FROM oauth_grant g LEFT JOIN oauth_client c ON c.id = g.clientID"
                                " WHERE c.id IS NULL",
    "grant without the API key it names": "SELECT g.id FROM oauth_grant g LEFT JOIN api_key k ON k.id = g.apiKeyID"
                                          " WHERE g.apiKeyID IS NOT NULL AND k.id IS NULL",
    "code without its grant": "SELECT hex(c.digest) FROM oauth_code c LEFT JOIN oauth_grant g ON g.id = c.grantID"
                              " WHERE g.id IS NULL",
    "refresh token without its grant": "SELECT hex(t.digest) FROM oauth_refresh_token t LEFT JOIN oauth_grant g"
                                       " ON g.id = t.grantID WHERE g.id IS NULL",
    "refresh family split in two live branches (two unused tokens in one grant)":
        "SELECT grantID || ' x' || count(*) FROM oauth_refresh_token WHERE usedAt IS NULL GROUP BY grantID"
        " HAVING count(*) > 1",
    "active grant of a revoked client": "SELECT g.id FROM oauth_grant g JOIN oauth_client c ON c.id = g.clientID"
                                        " WHERE c.revokedAt IS NOT NULL AND g.revokedAt IS NULL",
    "active grant of a disabled user": "SELECT g.id FROM oauth_grant g JOIN user u ON u.username = g.subject"
                                       " WHERE u.disabled AND g.revokedAt IS NULL",
    "more than one current signing key": "SELECT count(*) FROM signing_key WHERE retiredAt IS NULL HAVING count(*) > 1",
    "gateway secret without 32 bytes": "SELECT name FROM gateway_secret WHERE length(value) != 32",
}


def half_written_rows(db: Path) -> dict:
    """{what: [offending rows]} for every check that found something; {} when the store is whole."""
    found = {}
    with connect(db) as connection:
        for what, query in HALF_WRITTEN.items():
            rows = [row[0] for row in connection.execute(query)]
            if rows:
                found[what] = rows
        # A password grant keeps at most the scopes and groups its user has now: `user set` that takes one away
        # revokes the user's grants in the same write.
        users = {row["username"]: row for row in connection.execute("SELECT username, scopes, groups FROM user")}
        for grant in connection.execute("SELECT id, subject, scope, groups FROM oauth_grant"
                                        " WHERE revokedAt IS NULL AND apiKeyID IS NULL"):
            user = users.get(grant["subject"])
            if user is None:
                continue
            if not set(grant["scope"].split()) <= set(user["scopes"].split()) \
                    or not set(grant["groups"].split()) <= set(user["groups"].split()):
                found.setdefault("active grant wider than its user's current scopes or groups", []).append(grant["id"])
        for row in connection.execute("SELECT kid, privateKeyPEM FROM signing_key"):
            try:
                load_pem_private_key(row["privateKeyPEM"].encode(), password=None)
            except ValueError:
                found.setdefault("signing key whose private key does not load", []).append(row["kid"])
    return found


def fingerprint(db: Path) -> str:
    """A hash of every row of every table: equal before and after a killed run when it committed nothing."""
    h = hashlib.sha256()
    with connect(db) as connection:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            h.update(table.encode())
            for row in connection.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
                h.update(repr(tuple(row)).encode())
    return h.hexdigest()


def key_state(db: Path, secret: str) -> Optional[sqlite3.Row]:
    """The api_key row of a plaintext key (by digest), or None."""
    with connect(db) as connection:
        return connection.execute("SELECT * FROM api_key WHERE digest = ?", (digest(secret),)).fetchone()


def rows(db: Path, query: str, arguments: tuple = ()) -> list:
    with connect(db) as connection:
        return list(connection.execute(query, arguments))

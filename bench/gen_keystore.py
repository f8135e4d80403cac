#!/usr/bin/env python3
"""Fills an AuthGateway token store with API keys, straight into SQLite (authctl would take hours for a million).

    gen_keystore.py DB --count N [--sample K --sample-out FILE] [--scopes "ffmpeg memory"]

DB must already hold the gateway's schema (start authgateway once on an empty file: its migrations create it).
Rows are written the way the gateway's own code writes them: `digest` is the SHA-256 of the key string as BLOB,
dates are GRDB's 'YYYY-MM-DD HH:MM:SS.SSS' UTC text, scopes space-separated, route NULL (any route).
Key i is agk_ + sha256("authgateway-bench-key-<i>") in hex, so the plaintext of any row can be recomputed; with
--sample K, K keys spread evenly over the whole table are written to FILE (one per line) for the wrk script.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import time
from pathlib import Path

EXPECTED = ["id", "digest", "displayPrefix", "name", "subject", "scopes", "route", "createdAt", "expiresAt",
            "revokedAt", "lastUsedAt", "rotatedFrom"]


def plaintext(i: int) -> str:
    return "agk_" + hashlib.sha256(f"authgateway-bench-key-{i}".encode()).hexdigest()


def check_schema(db: sqlite3.Connection) -> None:
    columns = db.execute("PRAGMA table_info(api_key)").fetchall()  # cid, name, type, notnull, default, pk
    if not columns:
        raise SystemExit("gen_keystore: the store has no api_key table (start authgateway once to migrate it)")
    names = [c[1] for c in columns]
    required_unknown = [c[1] for c in columns if c[1] not in EXPECTED and c[3] and c[4] is None]
    if required_unknown:
        raise SystemExit(f"gen_keystore: api_key has NOT NULL columns this script does not know: {required_unknown}"
                         f" (schema: {names}); update bench/gen_keystore.py")
    missing = [name for name in EXPECTED if name not in names]
    if missing:
        raise SystemExit(f"gen_keystore: api_key lacks columns {missing} (schema: {names}); update bench/gen_keystore.py")


def fill(path: Path, count: int, scopes: str, sample: int = 0, sample_out: Path | None = None) -> float:
    started = time.monotonic()
    # The gateway refuses a store group or others can read (it holds the signing key); a copied file is 0644.
    path.chmod(0o600)
    db = sqlite3.connect(path)
    check_schema(db)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")  # 256 MB: the digest index stays in memory while it grows
    created = time.strftime("%Y-%m-%d %H:%M:%S.000", time.gmtime())

    def rows():
        for i in range(count):
            key = plaintext(i)
            yield (f"key_b{i:015x}", hashlib.sha256(key.encode()).digest(), key[:12], f"bench-{i % 97}",
                   f"user-{i}", scopes, None, created, None, None, None, None)

    with db:
        db.executemany(f"INSERT INTO api_key ({', '.join(EXPECTED)}) VALUES ({', '.join('?' * len(EXPECTED))})",
                       rows())
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    if sample and sample_out:
        stride = max(1, count // sample)
        with open(sample_out, "w") as out:
            for i in range(0, count, stride)[:sample]:
                out.write(plaintext(i) + "\n")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", type=Path)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--scopes", default="ffmpeg memory")
    parser.add_argument("--sample", type=int, default=0)
    parser.add_argument("--sample-out", type=Path)
    args = parser.parse_args()
    seconds = fill(args.db, args.count, args.scopes, args.sample, args.sample_out)
    print(f"gen_keystore: {args.count} keys in {seconds:.1f}s")


if __name__ == "__main__":
    main()

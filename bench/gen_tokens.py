#!/usr/bin/env python3
"""The benchmark's JWT issuer: an ES256 (P-256) and an RS256 (2048-bit) signing key, their JWKS, and tokens.

    gen_tokens.py OUTDIR --issuer ISS --audience AUD [--unique N]

writes OUTDIR/jwks.json, OUTDIR/es256.jwt, OUTDIR/rs256.jwt (one token each, reused for every request: the warm
case) and, with --unique N, OUTDIR/unique-es256.txt with N distinct ES256 tokens (distinct jti and sub), one per
line, so a run that cycles through them gives no cache anything to hit.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
import uuid
from pathlib import Path

import jwt  # PyJWT
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SCOPE = "ffmpeg memory"
LIFETIME = 6 * 3600  # tokens outlive any run


def _b64(number: int, length: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(length, "big")).rstrip(b"=").decode()


class Issuer:
    def __init__(self, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self.es_key = ec.generate_private_key(ec.SECP256R1())
        self.rs_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.now = int(time.time())

    def jwks(self) -> dict:
        es = self.es_key.public_key().public_numbers()
        rs = self.rs_key.public_key().public_numbers()
        return {"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "bench-es256", "alg": "ES256", "use": "sig",
             "x": _b64(es.x, 32), "y": _b64(es.y, 32)},
            {"kty": "RSA", "kid": "bench-rs256", "alg": "RS256", "use": "sig",
             "n": _b64(rs.n, (rs.n.bit_length() + 7) // 8), "e": _b64(rs.e, 3)},
        ]}

    def claims(self, subject: str = "alice") -> dict:
        return {"iss": self.issuer, "sub": subject, "aud": self.audience, "scope": SCOPE, "azp": "bench-client",
                "iat": self.now, "exp": self.now + LIFETIME, "jti": uuid.uuid4().hex}

    def es256(self, subject: str = "alice") -> str:
        return jwt.encode(self.claims(subject), self.es_key, algorithm="ES256", headers={"kid": "bench-es256"})

    def rs256(self, subject: str = "alice") -> str:
        return jwt.encode(self.claims(subject), self.rs_key, algorithm="RS256", headers={"kid": "bench-rs256"})


def write_all(outdir: Path, issuer: str, audience: str, unique: int) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    source = Issuer(issuer, audience)
    (outdir / "jwks.json").write_text(json.dumps(source.jwks(), separators=(",", ":")))
    (outdir / "es256.jwt").write_text(source.es256() + "\n")
    (outdir / "rs256.jwt").write_text(source.rs256() + "\n")
    if unique > 0:
        with open(outdir / "unique-es256.txt", "w") as out:
            for i in range(unique):
                out.write(source.es256(subject=f"user-{i}") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--unique", type=int, default=0)
    args = parser.parse_args()
    write_all(args.outdir, args.issuer, args.audience, args.unique)


if __name__ == "__main__":
    main()

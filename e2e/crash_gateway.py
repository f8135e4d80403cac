"""The gateway crash loop's clients (e2e/test_crash_safety.py): refresh-token families as their clients see them,
the threads that rotate them and keep the gateway writing, and the check after each batch."""

from __future__ import annotations

import threading

import crash_support as c
import oauth_support as o
from crash_site import REDIRECT, Site, assert_store_whole


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


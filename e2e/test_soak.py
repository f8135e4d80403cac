"""The short soak (issue 12 item 6) in the default test command: real Traefik + the real gateway + a stand-in backend
at about 80 % of the capacity measured at the start, 20 s of mixed good and bad credentials from several client
addresses. `scripts/soak [seconds]` runs the long one (default 600 s). The soak and its checks are in e2e/soak.py."""

from __future__ import annotations

import json

import pytest

import e2e_support as s
import soak


def test_short_soak_has_no_wrong_decision_no_unexpected_5xx_and_flat_rss_and_fds(binaries, tmp_path):
    report = soak.soak(20, tmp_path, capacity_seconds=4, log=lambda line: None)
    shown = json.dumps(report, indent=2)
    assert report["wrong_decisions"] == 0, shown
    assert report["unexpected_5xx"] == 0, shown
    assert report["transport_errors"] == 0, shown
    assert report["gateway_alive"], shown
    assert report["expected_503"] > 0, shown
    assert report["hammer_throttled"] > 0, "the hammer address was never throttled\n" + shown
    assert report["flat"], shown
    assert report["ok"], shown

"""Restarts: SIGKILL one ravenvpn-wg mid-stream and bring it back from its config (``wg setconf``), and a
restarted peer whose clock stepped back (its TAI64N timestamp is behind what the survivor accepted).

Bounds follow the protocol's timers: a restarted side with traffic or a persistent keepalive initiates at
once (5 s allowed); a passive one is only found by the survivor's new-handshake timer, KEEPALIVE_TIMEOUT +
REKEY_TIMEOUT = 15 s after it last heard from the peer, plus one retry (5 s + 1/3 s jitter) if that
initiation is lost.
"""
from __future__ import annotations

import time

import pytest

from benchmarks import reliability as R
from tools.process import wait_for
from tools.traffic import capture, ping
from tools.tunnel import Tunnel


@pytest.mark.parametrize("case", ["traffic", "keepalive"])
def test_sigkill_restart_active_side_back_within_5s(node_factory, case: str) -> None:
    r = R.restart_recovery(node_factory, case)
    assert r["recovered_s"] is not None and r["recovered_s"] <= 5.0, r
    assert not r["log_problems"], r["log_problems"]


def test_sigkill_restart_passive_side_back_within_new_handshake_timeout(node_factory) -> None:
    r = R.restart_recovery(node_factory, "passive")
    assert r["recovered_s"] is not None and r["recovered_s"] <= 15.0 + 5.34 + 2.0, r
    assert not r["log_problems"], r["log_problems"]


REFUSAL = "handshake initiation refused: its timestamp is not newer than the last one accepted"


def refusal_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if REFUSAL in line]


def test_clock_stepped_back_restart_is_refused_logged_once_and_cured_by_readding_the_peer(node_factory) -> None:
    """Whitepaper 5.1: a responder keeps the greatest TAI64N timestamp it accepted per peer and drops an
    initiation whose timestamp is not greater (replay protection). B, restarted with its clock an hour
    behind (ravenvpn-wg's test-only ``--test-clock wall-offset=-3600``; the host clock is untouched),
    sends exactly that. The survivor A refuses every retry, and says so in its log once (rate-limited
    per peer), naming the peer as wireguard-go does and the remedy; the remedy (remove and re-add the
    peer on A) lets B's next retry in."""
    a, b = node_factory("cka"), node_factory("ckb")
    t = Tunnel(a, b, impl_a="ravenvpn", impl_b="ravenvpn", inner6=False).up()
    assert ping(b, t.a.inner4, count=2, interval=0.2, wait=3).ok  # A accepted B's current timestamp
    real_clock = t.b.impl_cmd
    t.stop(t.b)
    t.b.impl_cmd = real_clock + ["--test-clock", "wall-offset=-3600"]
    t.start(t.b)
    with capture(a, t.link.name_a, "udp") as under:
        # B retries its initiation every REKEY_TIMEOUT (5 s): three refused in about 11 s
        late = ping(b, t.a.inner4, count=22, interval=0.5, wait=1)
    assert late.received == 0, f"A accepted an initiation from an hour ago: {late}"
    initiations = [p for src, _, p in R.udp_payloads(under.path)
                   if src == t.b.underlay_ip and len(p) == 148 and p[0] == 1]
    assert len(initiations) >= 2, f"B sent {len(initiations)} initiations: too few to show the rate limit"
    lines = wait_for(lambda: refusal_lines(t.a.wg.log_text()), timeout=5, message="A to log the refusal")
    time.sleep(1.5)                                 # housekeeping runs every second: nothing more comes
    lines = refusal_lines(t.a.wg.log_text())
    assert len(lines) == 1, f"{len(initiations)} refusals, expected one line:\n" + "\n".join(lines)
    short = f"peer({t.b.public_key[:4]}…{t.b.public_key[39:43]})"
    assert short in lines[0] and t.b.public_key not in lines[0], lines[0]
    assert "the peer's clock went back after a restart" in lines[0]
    assert f"wg set {t.ifname} peer KEY remove" in lines[0] and "or restart this side" in lines[0], lines[0]
    assert not refusal_lines(t.b.wg.log_text())
    # the remedy: A forgets B's greatest timestamp by removing the peer and adding it again
    a.run("wg", "set", t.ifname, "peer", t.b.public_key, "remove")
    t.a.wg.set_peer(t.peer_config(t.b))
    back = ping(b, t.a.inner4, count=1, deadline=15)
    assert back.ok, f"after remove + re-add, B's next initiation must be accepted: {back}"
    assert ping(a, t.b.inner4, count=3, interval=0.2, wait=2).ok
    assert len(refusal_lines(t.a.wg.log_text())) == 1

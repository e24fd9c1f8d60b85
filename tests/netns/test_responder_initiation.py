"""Field case F01 (issue 14 kind 1) on real daemons: a responder whose new session is not yet confirmed sends no handshake
initiation of its own, though it has packets for the initiator.

B (wireguard-go) pings A, so B initiates and A responds. A drops B's transport messages for a while
(iptables u32 on the message type), so A's new session stays unconfirmed, and A pings B meanwhile.
wireguard-go and the kernel stage A's packets and send nothing until B's first transport message
confirms the session; wireguard-go as A is the control that proves the test right.
"""
from __future__ import annotations

import time

import pytest

from tools import wgcraft
from tools.traffic import capture, ping
from tools.tunnel import Tunnel

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("impl_a", ["ravenvpn", "wireguard-go"])
def test_responder_sends_no_initiation_before_key_confirmation(node_factory, impl_a: str) -> None:
    a, b = node_factory("a"), node_factory("b")
    t = Tunnel(a, b, impl_a, "wireguard-go", inner6=False).up()
    # Transport data (type 4, the first byte of the UDP payload) from B never reaches A's daemon.
    drop_data = ["INPUT", "-p", "udp", "--dport", str(t.a.listen_port),
                 "-m", "u32", "--u32", "0>>22&0x3C@8>>24=4", "-j", "DROP"]
    a.run("iptables", "-I", *drop_data)
    with capture(a, t.link.name_a, "udp and (udp[8] = 1 or udp[8] = 2)") as cap:
        ping(b, t.a.inner4, count=1, wait=1)                       # B initiates, A responds
        started = time.monotonic()
        ping(a, t.b.inner4, count=3, interval=0.2, wait=1)         # A has packets, session unconfirmed
        a.run("iptables", "-D", *drop_data)
        unconfirmed_for = time.monotonic() - started
        back = ping(b, t.a.inner4, count=3, interval=0.2, wait=2)  # B's data confirms A's session
        time.sleep(1)
    udp, _ = wgcraft.split_capture(cap.packets())
    from_a = [d.msg_type for d in udp if d.src == t.a.underlay_ip]
    assert from_a.count(wgcraft.MSG_RESPONSE) >= 1, f"A never responded: {udp}"
    assert unconfirmed_for < 4.5, f"too slow to test the REKEY_TIMEOUT window ({unconfirmed_for:.1f} s)"
    assert from_a.count(wgcraft.MSG_INITIATION) == 0, f"{impl_a} as responder initiated: {from_a}"
    assert back.received >= 1, back.output

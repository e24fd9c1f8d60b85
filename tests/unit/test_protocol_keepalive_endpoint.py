"""Persistent keepalive on a peer whose endpoint is only known later (issue 14, kinds 7 and 8).

An edge gateway whose cloud peer has no endpoint yet (a publicIP hostname that did not resolve, then
resolves on reload) must call in as soon as the endpoint is set, with no traffic of its own. In
wireguard-go and the kernel the keepalive keeps re-arming through its handshake attempts even without
an endpoint; ravenvpn dropped it on the first tick without one and never sent it again.
"""
from __future__ import annotations

from tests.unit.protocol_harness import Net


def test_a_persistent_keepalive_waiting_for_an_endpoint_goes_out_once_one_is_set() -> None:
    net = Net()
    endpoint, net.pa.endpoint = net.pa.endpoint, None
    net.pa.persistent_keepalive_interval = 5
    net.advance(12)                       # nothing can be sent: no endpoint
    assert not [d for who, d in net.wire if who == "a"]
    net.pa.endpoint = endpoint            # the name resolved on a reload
    net.advance(5 + 0.5)                  # within one keepalive interval, with no data to send
    assert net.pa.current is not None and net.pb.current is not None, "no handshake after the endpoint was set"

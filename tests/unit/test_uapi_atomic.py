"""A UAPI request is atomic toward other requests, as in wireguard-go (its ipcMutex): F10's kind
(scale), found by running `wg show` while a `wg setconf` of 20,000 peers was being applied. ravenvpn
answered with the 2,633 peers applied so far; wireguard-go waited and printed all 20,001 lines.
A `wg syncconf` diffing against such a half view removes and re-adds peers at random."""
from __future__ import annotations

import os
import threading
import time

from benchmarks import control_scale
from ravenvpn.device.uapi import Uapi
from ravenvpn.protocol.tunnel import Tunnel

from tests.unit.test_uapi import FakeControl


def test_a_get_during_a_long_set_waits_for_it_and_sees_all_of_it() -> None:
    uapi = Uapi(Tunnel(), FakeControl(), threading.Lock())
    n = 8_000
    request = ["private_key=" + os.urandom(32).hex()] + control_scale.set_request(n).decode().split("\n")[1:-2]
    setter = threading.Thread(target=uapi.set, args=(request,))
    setter.start()
    try:
        deadline = time.monotonic() + 30
        while not uapi.tunnel.peers and time.monotonic() < deadline:    # the set has begun
            time.sleep(0.0005)
        assert 0 < len(uapi.tunnel.peers) < n, "the set ended before the get could race it"
        text = uapi.get()
    finally:
        setter.join(60)
    assert text.count("public_key=") == n

"""Cookie replies on the real UDP transport, over loopback: they leave from the address the handshake
message was sent to (as the kernel answers one), and an endpoint never seen before costs no route
query: under a handshake flood from ever new (spoofed) endpoints that query was most of a reply's cost.

127.0.0.2 is a second local address on every Linux loopback: sent to it, a reply from the routing
table's choice would come from 127.0.0.1, so the source shows the sticky path was taken."""
from __future__ import annotations

import select
import socket

import pytest

from ravenvpn.device.udp import UdpTransport


@pytest.fixture()
def transport():
    t = UdpTransport()
    t.bind(0)
    yield t
    t.close()


def _receive(t: UdpTransport) -> list:
    assert t.v4 is not None
    select.select([t.v4], [], [], 2.0)
    return t.recv_batch(t.v4, 8)


def _count_route_queries(t: UdpTransport) -> list[int]:
    routes = t._route_watch()
    if routes is None:
        pytest.skip("no netlink route socket here")
    calls = [0]
    real = routes.route_oif

    def counting(*args, **kw):
        calls[0] += 1
        return real(*args, **kw)

    routes.route_oif = counting  # a spy on the real lookup, not a replacement
    return calls


def test_cookie_reply_to_a_new_endpoint_is_sticky_without_a_route_query(transport: UdpTransport) -> None:
    calls = _count_route_queries(transport)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as initiator:
        initiator.bind(("127.0.0.1", 0))
        initiator.settimeout(2.0)
        initiator.sendto(b"\x01\x00\x00\x00" + bytes(144), ("127.0.0.2", transport.port))
        (_, endpoint), = _receive(transport)
        reply = b"\x03\x00\x00\x00" + bytes(60)
        transport.send_batch([(reply, endpoint)])
        data, source = initiator.recvfrom(2048)
        assert data == reply
        assert source == ("127.0.0.2", transport.port)   # from where the initiation was sent to
        assert calls[0] == 0                               # no route query for it
        assert endpoint not in transport._cmsgs            # nor a cache entry the flood would fill
        # Anything else to that endpoint (a peer's traffic) still gets the checked, cached source.
        transport.send_batch([(b"\x04\x00\x00\x00" + bytes(28), endpoint)])
        data, source = initiator.recvfrom(2048)
        assert source == ("127.0.0.2", transport.port) and calls[0] == 1 and endpoint in transport._cmsgs


def test_cookie_reply_without_a_learned_source_leaves_from_the_routing_table_choice(
        transport: UdpTransport) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as initiator:
        initiator.bind(("127.0.0.1", 0))
        initiator.settimeout(2.0)
        endpoint = initiator.getsockname()
        transport.send_batch([(b"\x03\x00\x00\x00" + bytes(60), endpoint)])
        data, source = initiator.recvfrom(2048)
        assert data[0] == 3 and source == ("127.0.0.1", transport.port)

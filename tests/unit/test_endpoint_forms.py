"""Issue 14 kind 8: every endpoint form `wg` hands the UAPI (it resolves hostnames itself and sends
getnameinfo's numeric form) round-trips, and a link-local one keeps the link it is on.

`wg set ... endpoint [fe80::2%veth0]:51820` sends ``endpoint=[fe80::2%veth0]:51820``; `wg show`
must print that back, and the packets must leave on veth0 (the scope id of the socket address).
No root: the loopback interface stands in for a named link.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import threading

import pytest

from ravenvpn.device.uapi import Uapi, format_endpoint, parse_endpoint
from ravenvpn.device.udp import normalise_endpoint
from ravenvpn.errors import UapiError
from ravenvpn.protocol import keys
from ravenvpn.protocol.cookie import endpoint_bytes
from ravenvpn.protocol.tunnel import Tunnel
from tests.unit.protocol_harness import icmp
from tests.unit.test_uapi import FakeControl

LO = socket.if_nametoindex("lo")


@pytest.mark.parametrize("text", [
    "192.0.2.1:51820",
    "[2001:db8::1]:51820",
    "[fe80::2%lo]:51820",
    "[fe80::2]:1",                  # link-local without a zone: accepted as wireguard-go does
])
def test_each_form_wg_sends_round_trips(text: str) -> None:
    assert format_endpoint(parse_endpoint(text)) == text


def test_a_link_local_zone_becomes_the_scope_id_of_the_socket_address() -> None:
    assert parse_endpoint("[fe80::2%lo]:51820") == ("fe80::2", 51820, 0, LO)
    # by index (getnameinfo with NI_NUMERICSCOPE); printed by name, as `wg show` prints it
    assert format_endpoint(parse_endpoint(f"[fe80::2%{LO}]:51820")) == "[fe80::2%lo]:51820"


def test_a_zone_naming_no_interface_is_one_clear_error() -> None:
    with pytest.raises(UapiError) as exc:
        parse_endpoint("[fe80::2%nosuchlink0]:51820")
    assert exc.value.errno == errno.EINVAL and "nosuchlink0" in str(exc.value)


@pytest.mark.parametrize("text", ["192.0.2.1%lo:51820", "[192.0.2.1%lo]:51820", "[fe80::2%]:1"])
def test_zones_where_none_belongs_are_rejected(text: str) -> None:
    with pytest.raises(UapiError):
        parse_endpoint(text)


def test_received_sources_keep_the_scope_of_link_local_addresses_only() -> None:
    """recvmsg on the IPv6 socket gives (host, port, flowinfo, scope id)."""
    assert normalise_endpoint("fe80::1", 5, 0, 7) == ("fe80::1", 5, 0, 7)
    assert normalise_endpoint("fe80::1", 5, 0, 0) == ("fe80::1", 5)
    assert normalise_endpoint("2001:db8::1", 5, 3, 7) == ("2001:db8::1", 5)
    assert normalise_endpoint("::ffff:192.0.2.1", 5, 0, 0) == ("192.0.2.1", 5)


def test_uapi_set_then_get_prints_the_link_local_endpoint_as_set() -> None:
    uapi = Uapi(Tunnel(), FakeControl(), threading.Lock())
    peer = keys.public_from_private(keys.generate_private())
    uapi.set([f"public_key={peer.hex()}", "endpoint=[fe80::2%lo]:51820"])
    assert "endpoint=[fe80::2%lo]:51820" in uapi.get().splitlines()
    assert uapi.tunnel.peers[peer].endpoint == ("fe80::2", 51820, 0, LO)


def test_the_core_sends_to_the_scoped_endpoint_and_roaming_keeps_it() -> None:
    """A handshake initiation goes to the socket address with its scope; the peer's answer from the
    same link-local source leaves the endpoint as it was (equal tuples, no flapping)."""
    a, b = Tunnel(), Tunnel()
    a.private_key, b.private_key = keys.generate_private(), keys.generate_private()
    pa, pb = a.add_peer(b.public_key), b.add_peer(a.public_key)
    ep_b, ep_a = ("fe80::b", 51820, 0, LO), ("fe80::a", 51820, 0, LO)
    pa.endpoint = ep_b
    a.add_allowed_ip(pa, ipaddress.ip_network("10.9.0.2/32"))
    b.add_allowed_ip(pb, ipaddress.ip_network("10.9.0.1/32"))
    ((init, to),) = a.send_packets([icmp("10.9.0.1", "10.9.0.2")], 1.0).datagrams()
    assert to == ep_b
    ((resp, back),) = b.receive_datagrams([(init, ep_a)], 1.0).datagrams()
    assert back == ep_a and pb.endpoint == ep_a
    data = a.receive_datagrams([(resp, ep_b)], 1.0).datagrams()
    assert [d[1] for d in data] == [ep_b] and pa.endpoint == ep_b
    assert len(b.receive_datagrams([(d, ep_a) for d, _ in data], 1.0).tun) == 1


def test_cookies_bind_to_a_scoped_source_too() -> None:
    assert endpoint_bytes(("fe80::1", 5, 0, LO)) == endpoint_bytes(("fe80::1", 5))

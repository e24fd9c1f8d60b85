"""Byte-level conformance of the handshake and transport against an independent Noise
implementation (the `noiseprotocol` library), with WireGuard's prologue, MACs and framing
added around it."""
from __future__ import annotations

import os
import struct
import time

import pytest
from noise.connection import Keypair as NoiseKey
from noise.connection import NoiseConnection

from ravenvpn.protocol import crypto, keys
from ravenvpn.protocol.constants import IDENTIFIER, LABEL_MAC1
from ravenvpn.protocol.tai64n import tai64n
from ravenvpn.protocol.tunnel import Tunnel
from tests.unit.protocol_harness import icmp

ENDPOINT = ("192.0.2.9", 4500)


def noise(initiator: bool, own_private: bytes, remote_public: bytes | None, psk: bytes) -> NoiseConnection:
    conn = NoiseConnection.from_name(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_prologue(IDENTIFIER)
    conn.set_psks(psk)
    conn.set_keypair_from_private_bytes(NoiseKey.STATIC, own_private)
    if remote_public is not None:
        conn.set_keypair_from_public_bytes(NoiseKey.REMOTE_STATIC, remote_public)
    conn.start_handshake()
    return conn


def with_mac1(msg: bytearray, receiver_public: bytes) -> bytes:
    off = len(msg) - 32
    msg[off:off + 16] = crypto.mac(crypto.hash_(LABEL_MAC1, receiver_public), bytes(msg[:off]))
    return bytes(msg)


@pytest.mark.parametrize("psk", [bytes(32), os.urandom(32)], ids=["no-psk", "psk"])
def test_reference_initiator_against_our_responder(psk: bytes) -> None:
    ours, theirs = keys.generate_private(), keys.generate_private()
    tunnel = Tunnel()
    tunnel.private_key = ours
    peer = tunnel.add_peer(keys.public_from_private(theirs))
    peer.preshared_key = psk
    import ipaddress
    tunnel.add_allowed_ip(peer, ipaddress.ip_network("10.1.0.0/24"))

    ref = noise(True, theirs, tunnel.public_key, psk)
    body = ref.write_message(tai64n(time.time_ns()))
    assert len(body) == 108
    msg = bytearray(148)
    msg[0] = 1
    struct.pack_into("<I", msg, 4, 0x11223344)
    msg[8:116] = body
    out = tunnel.receive_datagrams([(with_mac1(msg, tunnel.public_key), ENDPOINT)], 10.0)
    (response, dest), = out.datagrams()
    assert dest == ENDPOINT and len(response) == 92 and response[0] == 2
    sender, receiver = struct.unpack_from("<II", response, 4)
    assert receiver == 0x11223344
    # mac1 of the response is keyed with the initiator's public key
    assert response[60:76] == crypto.mac(crypto.hash_(LABEL_MAC1, keys.public_from_private(theirs)), response[:60])
    assert response[76:92] == bytes(16)
    ref.read_message(response[12:60])
    assert ref.handshake_finished

    # transport from the reference initiator (nonce = counter) decrypts on our side
    packet = icmp("10.1.0.5", "10.2.0.1", b"conformance")
    padded = packet + bytes(-len(packet) % 16)
    wire = struct.pack("<IIQ", 4, sender, 0) + ref.encrypt(padded)
    got = tunnel.receive_datagrams([(wire, ENDPOINT)], 10.1)
    assert got.tun == [packet]
    assert peer.current is not None and peer.next is None  # key confirmed by the first data packet

    # and what we send back decrypts with the reference's receiving cipher
    reply = tunnel.send_packets([icmp("10.2.0.1", "10.1.0.5", b"back")], 10.2)
    (data, _), = reply.datagrams()
    assert struct.unpack_from("<IIQ", data) == (4, 0x11223344, 0)
    assert ref.decrypt(data[16:]).startswith(icmp("10.2.0.1", "10.1.0.5", b"back"))


def test_our_initiator_against_reference_responder() -> None:
    ours, theirs = keys.generate_private(), keys.generate_private()
    psk = os.urandom(32)
    tunnel = Tunnel()
    tunnel.private_key = ours
    peer = tunnel.add_peer(keys.public_from_private(theirs))
    peer.preshared_key = psk
    peer.endpoint = ENDPOINT
    import ipaddress
    tunnel.add_allowed_ip(peer, ipaddress.ip_network("0.0.0.0/0"))

    before = time.time_ns()
    out = tunnel.send_packets([icmp("10.2.0.1", "10.1.0.5")], 5.0)
    (init, _), = out.datagrams()
    assert len(init) == 148 and init[:4] == b"\x01\x00\x00\x00"
    assert init[116:132] == crypto.mac(crypto.hash_(LABEL_MAC1, keys.public_from_private(theirs)), init[:116])
    ref = noise(False, theirs, None, psk)
    timestamp = ref.read_message(init[8:116])
    secs, = struct.unpack(">Q", timestamp[:8])
    assert abs(secs - (1 << 62) - 10 - before // 10**9) <= 1  # TAI64N label

    body = ref.write_message(b"")
    assert len(body) == 48
    resp = bytearray(92)
    resp[0] = 2
    struct.pack_into("<II", resp, 4, 0xAABBCCDD, struct.unpack_from("<I", init, 4)[0])
    resp[12:60] = body
    got = tunnel.receive_datagrams([(with_mac1(resp, tunnel.public_key), ENDPOINT)], 5.1)
    # the staged packet goes out at once under the new session
    (data, _), = got.datagrams()
    assert struct.unpack_from("<IIQ", data) == (4, 0xAABBCCDD, 0)
    assert ref.decrypt(data[16:]).startswith(icmp("10.2.0.1", "10.1.0.5"))
    assert peer.last_handshake_time_ns >= before

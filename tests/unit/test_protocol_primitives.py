"""Unit tests of the protocol's building blocks: KDF, replay window, allowed IPs, padding, framing."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random

import pytest

from ravenvpn.protocol import crypto, keys
from ravenvpn.protocol.allowedips import AllowedIPs
from ravenvpn.protocol.messages import MalformedMessage, message_type
from ravenvpn.protocol.replay import WINDOW_SIZE, ReplayWindow
from ravenvpn.protocol.constants import REJECT_AFTER_MESSAGES
from ravenvpn.protocol.tunnel import padding_for


def test_kdf_is_hkdf_over_hmac_blake2s() -> None:
    key, data = b"k" * 32, b"input"
    prk = hmac.new(key, data, hashlib.blake2s).digest()
    t1 = hmac.new(prk, b"\x01", hashlib.blake2s).digest()
    t2 = hmac.new(prk, t1 + b"\x02", hashlib.blake2s).digest()
    t3 = hmac.new(prk, t2 + b"\x03", hashlib.blake2s).digest()
    assert crypto.kdf1(key, data) == t1
    assert crypto.kdf2(key, data) == (t1, t2)
    assert crypto.kdf3(key, data) == (t1, t2, t3)


def test_initial_chaining_key_matches_the_protocol() -> None:
    from ravenvpn.protocol.handshake import INITIAL_CHAINING_KEY, INITIAL_HASH
    # Known values (wireguard-go noise-protocol.go initialises them the same way).
    assert INITIAL_CHAINING_KEY.hex() == "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
    assert INITIAL_HASH == crypto.hash_(INITIAL_CHAINING_KEY, b"WireGuard v1 zx2c4 Jason@zx2c4.com")


def test_low_order_points_are_rejected() -> None:
    priv = keys.generate_private()
    for point in (bytes(32), (1).to_bytes(32, "little"),
                  bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")):
        with pytest.raises(ValueError):
            crypto.dh(priv, point)


def test_keys_round_trip_like_wg() -> None:
    priv = keys.generate_private()
    assert priv[0] & 7 == 0 and priv[31] & 0x80 == 0 and priv[31] & 0x40
    assert keys.b64decode(keys.b64encode(priv)) == priv
    for bad in ("", "abc", "A" * 44, keys.b64encode(priv)[:-2] + "!="):
        with pytest.raises(ValueError):
            keys.b64decode(bad)


def test_replay_window_in_order_duplicates_and_reordering() -> None:
    w = ReplayWindow()
    assert all(w.accept(i) for i in range(100))
    assert not w.accept(50)
    assert w.accept(200)
    assert w.accept(150)  # late but inside the window
    assert not w.accept(150)
    assert not w.accept(REJECT_AFTER_MESSAGES)


def test_replay_window_size_is_8128() -> None:
    w = ReplayWindow()
    top = 100_000
    assert w.accept(top)
    assert w.accept(top - WINDOW_SIZE + 1)
    assert w.accept(top - WINDOW_SIZE)          # exactly a window behind: still inside (as the kernel)
    assert not w.accept(top - WINDOW_SIZE)      # ...once
    assert not w.accept(top - WINDOW_SIZE - 1)
    assert WINDOW_SIZE == 8128


def test_replay_window_against_a_model() -> None:
    rng = random.Random(7)
    w, seen, greatest = ReplayWindow(), set(), -1
    for _ in range(20000):
        c = max(0, (greatest if greatest >= 0 else 0) + rng.randint(-9000, 300))
        expected = c not in seen and (greatest < 0 or c >= greatest - WINDOW_SIZE)
        assert w.accept(c) == expected, c
        if expected:
            seen.add(c)
            greatest = max(greatest, c)


def test_replay_window_big_jump_clears_old_bits() -> None:
    w = ReplayWindow()
    for i in range(64 * 130):
        w.accept(i)
    assert w.accept(10**9)
    assert w.accept(10**9 - 64 * 3)


def test_allowed_ips_longest_prefix_match_v4_v6() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert(ipaddress.ip_network("0.0.0.0/0"), "default")
    t.insert(ipaddress.ip_network("10.0.0.0/8"), "ten")
    t.insert(ipaddress.ip_network("10.1.2.0/24"), "net")
    t.insert(ipaddress.ip_network("10.1.2.3/32"), "host")
    t.insert(ipaddress.ip_network("fd00::/8"), "ula")
    t.insert(ipaddress.ip_network("fd00:1::/64"), "v6net")
    assert t.lookup("10.1.2.3") == "host"
    assert t.lookup("10.1.2.4") == "net"
    assert t.lookup("10.9.9.9") == "ten"
    assert t.lookup("192.0.2.1") == "default"
    assert t.lookup("fd00:1::5") == "v6net"
    assert t.lookup("fd99::1") == "ula"
    assert t.lookup("2001:db8::1") is None
    # re-inserting moves ownership; removal falls back to the shorter prefix
    t.insert(ipaddress.ip_network("10.1.2.0/24"), "other")
    assert t.lookup("10.1.2.4") == "other"
    assert t.remove(ipaddress.ip_network("10.1.2.3/32"))
    assert t.lookup("10.1.2.3") == "other"
    assert not t.remove(ipaddress.ip_network("10.1.2.0/24"), "net")  # not its owner any more
    t.remove_owner("other")
    assert t.lookup("10.1.2.3") == "ten"
    assert sorted(map(str, t.networks("ten"))) == ["10.0.0.0/8"]


def test_padding_rounds_to_16_but_not_past_mtu() -> None:
    assert padding_for(0, 1420) == 0
    assert padding_for(1, 1420) == 15
    assert padding_for(84, 1420) == 12
    assert padding_for(1419, 1420) == 1
    assert padding_for(1420, 1420) == 0


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x00\x00\x00" + bytes(100), b"\x02\x00\x00\x00" + bytes(10),
                                  b"\x03\x00\x00\x00" + bytes(63), b"\x04\x00\x00\x00" + bytes(20),
                                  b"\x05\x00\x00\x00" + bytes(60), b"\x01\x01\x00\x00" + bytes(144)])
def test_malformed_framing_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        message_type(data)


@pytest.mark.parametrize("host", ["192.0.2.1", "::1", "2001:db8::7", "fe80::1%lo", "::ffff:192.0.2.1"])
def test_cookie_endpoint_bytes_are_the_packed_address_and_port(host: str) -> None:
    import ipaddress

    from ravenvpn.protocol.cookie import endpoint_bytes
    assert endpoint_bytes((host, 51820)) == ipaddress.ip_address(host).packed + (51820).to_bytes(2, "big")
    with pytest.raises(ValueError):
        endpoint_bytes(("not-an-address", 1))

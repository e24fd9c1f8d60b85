"""UAPI parser/serialiser against the real core (no sockets to the outside, no root needed)."""
from __future__ import annotations

import errno
import ipaddress
import socket
import threading

import pytest

from ravenvpn.device.uapi import Uapi, format_endpoint, parse_allowed_ip, parse_endpoint
from ravenvpn.errors import UapiError
from ravenvpn.protocol import keys
from ravenvpn.protocol.tunnel import Tunnel


class FakeControl:
    """Stands in for the daemon's sockets: records port/fwmark, can refuse a port."""

    def __init__(self) -> None:
        self.listen_port = 4500
        self.fwmark = 0
        self.busy_ports: set[int] = set()
        self.changes = 0

    def set_listen_port(self, port: int) -> None:
        if port in self.busy_ports:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        self.listen_port = port

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark

    def config_changed(self) -> None:
        self.changes += 1


@pytest.fixture
def uapi() -> Uapi:
    return Uapi(Tunnel(mtu=1420), FakeControl(), threading.Lock())


def net(text: str):
    return ipaddress.ip_network(text)


def pub() -> bytes:
    return keys.public_from_private(keys.generate_private())


def do_set(u: Uapi, text: str) -> None:
    u.set([line for line in text.strip("\n").split("\n")])


def get_pairs(u: Uapi) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in u.get().splitlines()]  # type: ignore[misc]


# ---- device keys -------------------------------------------------------------------------

def test_empty_device_get(uapi: Uapi) -> None:
    assert uapi.get() == "listen_port=4500\n"


def test_private_key_listen_port_fwmark_round_trip(uapi: Uapi) -> None:
    private = keys.generate_private()
    do_set(uapi, f"private_key={private.hex()}\nlisten_port=51820\nfwmark=1234")
    assert uapi.get() == f"private_key={private.hex()}\nlisten_port=51820\nfwmark=1234\n"
    assert uapi.tunnel.public_key == keys.public_from_private(private)
    do_set(uapi, "fwmark=0")
    assert "fwmark" not in uapi.get()


def test_private_key_is_clamped_and_uppercase_hex_accepted(uapi: Uapi) -> None:
    do_set(uapi, "private_key=" + "FF" * 32)
    assert uapi.tunnel.private_key == keys.clamp(b"\xff" * 32)


@pytest.mark.parametrize("clear", ["", "0" * 64])
def test_private_key_cleared_by_empty_or_zero(uapi: Uapi, clear: str) -> None:
    do_set(uapi, f"private_key={keys.generate_private().hex()}")
    do_set(uapi, f"private_key={clear}")
    assert uapi.tunnel.private_key is None
    assert "private_key" not in uapi.get()


def test_setting_own_key_drops_peer_with_that_public_key(uapi: Uapi) -> None:
    private = keys.generate_private()
    own = keys.public_from_private(private)
    do_set(uapi, f"public_key={own.hex()}")
    assert own in uapi.tunnel.peers
    do_set(uapi, f"private_key={private.hex()}")
    assert own not in uapi.tunnel.peers


def test_peer_with_own_public_key_is_ignored(uapi: Uapi) -> None:
    private = keys.generate_private()
    do_set(uapi, f"private_key={private.hex()}\npublic_key={keys.public_from_private(private).hex()}\n"
                 "allowed_ip=10.0.0.0/8")
    assert uapi.tunnel.peers == {}


def test_busy_listen_port_is_eaddrinuse(uapi: Uapi) -> None:
    uapi.control.busy_ports.add(51820)
    with pytest.raises(UapiError) as exc:
        do_set(uapi, "listen_port=51820")
    assert exc.value.errno == errno.EADDRINUSE
    assert uapi.control.listen_port == 4500


def test_replace_peers(uapi: Uapi) -> None:
    a, b, c = pub(), pub(), pub()
    do_set(uapi, f"public_key={a.hex()}\npublic_key={b.hex()}")
    do_set(uapi, f"replace_peers=true\npublic_key={c.hex()}")
    assert list(uapi.tunnel.peers) == [c]


# ---- peer keys ---------------------------------------------------------------------------

def test_full_peer_round_trip(uapi: Uapi) -> None:
    key, psk = pub(), keys.generate_psk()
    do_set(uapi, f"""public_key={key.hex()}
preshared_key={psk.hex()}
endpoint=[fd00::1]:51820
persistent_keepalive_interval=25
protocol_version=1
allowed_ip=10.1.0.0/16
allowed_ip=fd01::/64""")
    assert get_pairs(uapi) == [
        ("listen_port", "4500"),
        ("public_key", key.hex()),
        ("preshared_key", psk.hex()),
        ("protocol_version", "1"),
        ("endpoint", "[fd00::1]:51820"),
        ("last_handshake_time_sec", "0"),
        ("last_handshake_time_nsec", "0"),
        ("tx_bytes", "0"),
        ("rx_bytes", "0"),
        ("persistent_keepalive_interval", "25"),
        ("allowed_ip", "10.1.0.0/16"),
        ("allowed_ip", "fd01::/64"),
    ]


def test_peer_without_psk_reports_zero_psk_like_wireguard_go(uapi: Uapi) -> None:
    do_set(uapi, f"public_key={pub().hex()}")
    assert ("preshared_key", "0" * 64) in get_pairs(uapi)


def test_peers_listed_in_insertion_order(uapi: Uapi) -> None:
    peers = [pub() for _ in range(5)]
    do_set(uapi, "\n".join(f"public_key={p.hex()}" for p in peers))
    assert [v for k, v in get_pairs(uapi) if k == "public_key"] == [p.hex() for p in peers]


def test_handshake_time_split_into_sec_and_nsec(uapi: Uapi) -> None:
    key = pub()
    do_set(uapi, f"public_key={key.hex()}")
    uapi.tunnel.peers[key].last_handshake_time_ns = 1_700_000_000_123_456_789
    pairs = get_pairs(uapi)
    assert ("last_handshake_time_sec", "1700000000") in pairs
    assert ("last_handshake_time_nsec", "123456789") in pairs


def test_allowed_ip_host_bits_cleared_and_minus_removes(uapi: Uapi) -> None:
    key = pub()
    do_set(uapi, f"public_key={key.hex()}\nallowed_ip=10.1.2.3/24\nallowed_ip=10.2.0.0/16\nallowed_ip=fd00::/8")
    peer = uapi.tunnel.peers[key]
    assert set(uapi.tunnel.allowed_ips(peer)) == {net("10.1.2.0/24"), net("10.2.0.0/16"), net("fd00::/8")}
    do_set(uapi, f"public_key={key.hex()}\nallowed_ip=-10.2.0.0/16\nallowed_ip=-fd00::/8")
    assert uapi.tunnel.allowed_ips(peer) == [net("10.1.2.0/24")]


def test_allowed_ip_moves_between_peers(uapi: Uapi) -> None:
    a, b = pub(), pub()
    do_set(uapi, f"public_key={a.hex()}\nallowed_ip=10.0.0.0/24\npublic_key={b.hex()}\nallowed_ip=10.0.0.0/24")
    assert uapi.tunnel.allowed_ips(uapi.tunnel.peers[a]) == []
    assert uapi.tunnel.allowed_ips(uapi.tunnel.peers[b]) == [net("10.0.0.0/24")]


def test_replace_allowed_ips(uapi: Uapi) -> None:
    key = pub()
    do_set(uapi, f"public_key={key.hex()}\nallowed_ip=10.0.0.0/24\nallowed_ip=10.0.1.0/24")
    do_set(uapi, f"public_key={key.hex()}\nreplace_allowed_ips=true\nallowed_ip=192.0.2.0/24")
    assert uapi.tunnel.allowed_ips(uapi.tunnel.peers[key]) == [net("192.0.2.0/24")]


def test_remove_peer(uapi: Uapi) -> None:
    a, b = pub(), pub()
    do_set(uapi, f"public_key={a.hex()}\nallowed_ip=10.0.0.0/24\npublic_key={b.hex()}")
    do_set(uapi, f"public_key={a.hex()}\nremove=true\nallowed_ip=10.9.0.0/24")   # lines after remove: ignored
    assert list(uapi.tunnel.peers) == [b]
    assert uapi.tunnel.peer_for_address("10.0.0.1") is None


def test_update_only_does_not_create(uapi: Uapi) -> None:
    a, b = pub(), pub()
    do_set(uapi, f"public_key={a.hex()}")
    do_set(uapi, f"public_key={a.hex()}\nupdate_only=true\nendpoint=127.0.0.1:1\n"
                 f"public_key={b.hex()}\nupdate_only=true\nendpoint=127.0.0.1:2")
    assert list(uapi.tunnel.peers) == [a]
    assert uapi.tunnel.peers[a].endpoint == ("127.0.0.1", 1)


def test_keepalive_and_psk_clearing(uapi: Uapi) -> None:
    key = pub()
    do_set(uapi, f"public_key={key.hex()}\npersistent_keepalive_interval=10\npreshared_key={keys.generate_psk().hex()}")
    do_set(uapi, f"public_key={key.hex()}\npersistent_keepalive_interval=0\npreshared_key={'0' * 64}")
    peer = uapi.tunnel.peers[key]
    assert peer.persistent_keepalive_interval == 0
    assert peer.preshared_key == bytes(32)


def test_config_changed_called_even_on_error(uapi: Uapi) -> None:
    do_set(uapi, "listen_port=1")
    with pytest.raises(UapiError):
        do_set(uapi, "bogus=1")
    assert uapi.control.changes == 2


# ---- endpoints ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:51820", ("127.0.0.1", 51820)),
    ("[::1]:1", ("::1", 1)),
    ("[FD00:0:0::1]:65535", ("fd00::1", 65535)),
    ("[fe80::1%1]:5", ("fe80::1", 5, 0, 1)),    # a link-local address keeps its scope (issue 14 kind 8)
    ("[fd00::1%1]:5", ("fd00::1", 5)),          # on any other address a zone means nothing
    ("[::ffff:192.0.2.1]:7", ("192.0.2.1", 7)),
])
def test_parse_endpoint(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text", ["", "127.0.0.1", "127.0.0.1:", ":80", "::1:80", "[::1]80", "[::1]:",
                                  "127.0.0.1:65536", "127.0.0.1:-1", "example.com:80", "[127.0.0.1]:80",
                                  "1.2.3.4:+80", "01.2.3.4:80"])
def test_parse_endpoint_rejects(text: str) -> None:
    with pytest.raises(UapiError) as exc:
        parse_endpoint(text)
    assert exc.value.errno == errno.EINVAL


def test_format_endpoint() -> None:
    assert format_endpoint(("::1", 5)) == "[::1]:5"
    assert format_endpoint(("192.0.2.1", 5)) == "192.0.2.1:5"


@pytest.mark.parametrize("text", ["10.0.0.0", "10.0.0.0/33", "fd00::/129", "10.0.0.0/x", "10.0.0.0/ 8",
                                  "fe80::%eth0/64", "10.0.0.0/255.0.0.0", "--10.0.0.0/8", "bogus/8"])
def test_parse_allowed_ip_rejects(text: str) -> None:
    with pytest.raises(UapiError):
        parse_allowed_ip(text)


# ---- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("request_text, code", [
    ("listen_port", errno.EPROTO),                       # no '='
    ("bogus=1", errno.EINVAL),                          # unknown device key
    ("listen_port=65536", errno.EINVAL),
    ("listen_port=-1", errno.EINVAL),
    ("listen_port= 1", errno.EINVAL),
    ("fwmark=4294967296", errno.EINVAL),
    ("private_key=abcd", errno.EINVAL),
    ("private_key=" + "g" * 64, errno.EINVAL),
    ("replace_peers=false", errno.EINVAL),
    ("public_key=xyz", errno.EINVAL),
    (f"public_key={'11' * 32}\nbogus=1", errno.EINVAL),      # unknown peer key
    (f"public_key={'11' * 32}\nlisten_port=1", errno.EINVAL),  # device key inside a peer section
    (f"public_key={'11' * 32}\nprotocol_version=2", errno.EINVAL),
    (f"public_key={'11' * 32}\npersistent_keepalive_interval=65536", errno.EINVAL),
    (f"public_key={'11' * 32}\npreshared_key=00", errno.EINVAL),
    (f"public_key={'11' * 32}\nendpoint=nowhere", errno.EINVAL),
    (f"public_key={'11' * 32}\nallowed_ip=10.0.0.0", errno.EINVAL),
    (f"public_key={'11' * 32}\nremove=yes", errno.EINVAL),
    (f"public_key={'11' * 32}\nupdate_only=1", errno.EINVAL),
    (f"public_key={'11' * 32}\nreplace_allowed_ips=1", errno.EINVAL),
])
def test_errors(uapi: Uapi, request_text: str, code: int) -> None:
    with pytest.raises(UapiError) as exc:
        do_set(uapi, request_text)
    assert exc.value.errno == code


def test_error_messages_never_echo_key_material(uapi: Uapi) -> None:
    secret = "a" * 63 + "z"
    for line in (f"private_key={secret}", f"public_key={'11' * 32}\npreshared_key={secret}", secret):
        with pytest.raises(UapiError) as exc:
            do_set(uapi, line)
        assert secret not in str(exc.value)


def test_lines_before_an_error_stay_applied(uapi: Uapi) -> None:
    """wireguard-go applies line by line; so do we."""
    with pytest.raises(UapiError):
        do_set(uapi, "fwmark=7\nlisten_port=x\nfwmark=9")
    assert uapi.control.fwmark == 7


# ---- the wire: several requests on one connection ---------------------------------------

@pytest.fixture
def wire(uapi: Uapi):
    ours, theirs = socket.socketpair()

    def serve() -> None:
        try:
            uapi.serve(ours)
        finally:
            ours.close()     # what UapiServer does after serve() returns

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    reader = theirs.makefile("rb")

    def request(text: str) -> str:
        theirs.sendall(text.encode())
        lines = []
        while True:
            line = reader.readline()
            if not line:
                return "".join(lines) + "<EOF>"
            lines.append(line.decode())
            if line == b"\n" and lines[-2].startswith("errno="):
                return "".join(lines)

    yield request, theirs, thread
    reader.close()      # the makefile holds the fd open too
    theirs.close()
    thread.join(5)
    assert not thread.is_alive()


def test_wire_get_set_errors_on_one_connection(wire) -> None:
    request, _, _ = wire
    assert request("get=1\n\n") == "listen_port=4500\nerrno=0\n\n"
    assert request("set=1\nfwmark=5\n\n") == "errno=0\n\n"
    # errors are negative errnos, as wireguard-go sends them and `wg` expects
    assert request("set=1\nbogus=1\nfwmark=6\n\n") == f"errno={-errno.EINVAL}\n\n"
    assert request("set=1\nnot a pair\n\n") == f"errno={-errno.EPROTO}\n\n"
    assert request("get=1\nx") == f"errno={-errno.EINVAL}\n\n"
    assert request("get=1\n\n") == "listen_port=4500\nfwmark=5\nerrno=0\n\n"


def test_wire_overlong_line_is_rejected_and_connection_survives(wire) -> None:
    request, _, _ = wire
    assert request("set=1\nfwmark=" + "1" * 10000 + "\n\n") == f"errno={-errno.EPROTO}\n\n"
    assert request("get=1\n\n").endswith("errno=0\n\n")


def test_wire_unknown_operation_closes(wire) -> None:
    request, _, thread = wire
    assert request("frobnicate=1\n") == "<EOF>"
    thread.join(5)
    assert not thread.is_alive()


# ---- the socket file (in a temporary directory instead of /var/run/wireguard) ------------

def test_socket_server_modes_stale_and_live(tmp_path, monkeypatch, uapi: Uapi) -> None:
    import os
    import stat

    from ravenvpn.device import uapi_server
    from ravenvpn.errors import StartupError

    monkeypatch.setattr(uapi_server, "SOCKET_DIR", str(tmp_path / "wireguard"))
    path = uapi_server.socket_path("rvdtest0")
    os.makedirs(os.path.dirname(path), mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)            # bound but never listening: what a killed daemon leaves
    stale.close()

    server = uapi_server.UapiServer("rvdtest0", uapi)
    server.open()
    server.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            client.sendall(b"get=1\n\n")
            client.shutdown(socket.SHUT_WR)      # the server answers, sees EOF and closes
            assert client.makefile("rb").read() == b"listen_port=4500\nerrno=0\n\n"
        with pytest.raises(StartupError, match="already handled by another daemon"):
            uapi_server.UapiServer("rvdtest0", uapi).open()
        assert server.still_ours()
    finally:
        server.close()
    assert not os.path.exists(path)


def test_socket_dir_created_0700(tmp_path, monkeypatch, uapi: Uapi) -> None:
    import os
    import stat

    from ravenvpn.device import uapi_server

    monkeypatch.setattr(uapi_server, "SOCKET_DIR", str(tmp_path / "wg"))
    server = uapi_server.UapiServer("rvdtest1", uapi)
    server.open()
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "wg").st_mode) == 0o700
    finally:
        server.close()

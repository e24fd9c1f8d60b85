"""Sans-I/O state of one WireGuard interface: keys, peers, sessions, timers.

The device layer feeds it batches (IP packets read from the TUN, datagrams read from
UDP) together with the current monotonic time, and gets back an `Output`: datagrams
to send and packets to write to the TUN. Nothing here touches a socket or a clock,
so every behaviour can be driven byte for byte in tests.
"""
from __future__ import annotations

import ipaddress
import os
import random
import struct
from collections import defaultdict
from typing import Callable, Sequence

from cryptography.exceptions import InvalidTag

from . import handshake as hsm
from . import timers
from .allowedips import AllowedIPs, Network
from .clock import Clock
from .constants import (
    INITIATION_SIZE, MSG_INITIATION, MSG_RESPONSE, MSG_TRANSPORT, REKEY_AFTER_MESSAGES, TRANSPORT_MIN_SIZE,
)
from .cookie import CookieChecker
from .counters import Counter
from .index import IndexTable
from .ipheader import IPV4_MIN_HEADER, IPV6_HEADER, V4_DST, V4_SRC, V6_DST, parse
from .keypair import Keypair
from .output import Output
from .messages import (
    MalformedMessage, message_type, parse_cookie_reply, parse_initiation, parse_response,
)
from .peer import REFUSED_OLD_TIMESTAMP, Endpoint, Peer
from .ratelimit import HandshakeRateLimiter
from .timers import Timers

__all__ = ["Tunnel", "Output", "Endpoint", "Peer", "Counter", "padding_for", "parse_network"]

_TRANSPORT_HEADER = struct.Struct("<IIQ")
_RECEIVER = struct.Struct("<I")
_NONCE = struct.Struct("<4xQ")
_TRANSPORT_PREFIX = bytes([MSG_TRANSPORT, 0, 0, 0])
_INITIATION_PREFIX = bytes([MSG_INITIATION, 0, 0, 0])
_HANDSHAKE_TYPES = (bytes([MSG_INITIATION]), bytes([MSG_RESPONSE]))
_ZERO_PAD = bytes(16)
_TRANSPORT_OVERHEAD = 32  # header + Poly1305 tag
#: Handshake messages in one receive batch that mean we are falling behind ("under load"):
#: then initiations must carry a valid mac2, a cookie proving the source address (§5.3).
DEFAULT_LOAD_THRESHOLD = 64
#: Handshake messages with a valid mac1 per second (each would cost a Diffie-Hellman, ~80 us in
#: Python, so about 4 % of a core at this rate) above which the interface is "under load" too,
#: however they are spread over batches: a flood the pump keeps up with never leaves 64 in one
#: batch, yet without cookies it costs a DH per message (40 % of a core at 5,000/s, measured).
#: One second's worth may come at once (a gateway's peers all rekeying after a restart).
DEFAULT_LOAD_RATE = 500.0
#: Seconds the "under load" state lasts after the last batch (or message over the rate) that caused it.
UNDER_LOAD_HOLD = 1.0
# Initiations from keys not (yet) configured are kept briefly: when a control plane adds that
# peer a moment later (a gateway failover), the waiting initiator is answered at once instead
# of after its 5 s retry. Bounded, and only for messages whose static key decrypted.
_PENDING_UNKNOWN_MAX = 64


def padding_for(length: int, mtu: int) -> int:
    """Zero bytes to append to a `length`-byte packet before encryption: round up to a multiple of
    16 but never past `mtu` bytes (whitepaper §5.4.6; wireguard-go's calculatePaddingSize)."""
    last_unit = length
    if mtu and length > mtu:
        last_unit %= mtu
    padded = (last_unit + 15) & ~15
    if mtu and padded > mtu:
        padded = mtu
    return max(padded - last_unit, 0)


class Tunnel:
    """The sans-I/O state of one WireGuard interface: private key, peers, sessions, timers.

    Three verbs, each taking a batch and `now` (monotonic seconds on the caller's clock, never
    going backwards) and returning an `Output` to carry out:

    * `send_packets(packets, now)`: IP packets read from the TUN -> encrypted datagrams;
    * `receive_datagrams(datagrams, now)`: UDP payloads -> IP packets for the TUN, handshake
      answers, and packets relayed to other peers;
    * `tick(now)`: fires due timers (handshake retries, keepalives, rekeys, key erasure). Call it
      every 0.1 s or so, and after configuration changes.

    Configuration (`private_key`, `add_peer`, `add_allowed_ip`, ... and the `Peer` attributes)
    takes effect at once. Not thread-safe: a `Device` serialises every call with its lock
    (use `Device.configure()`).

    Args:
        mtu: bytes; the TUN MTU, which caps the padding of encrypted packets.
        rng: returns n random bytes; used for indices and cookie secrets (os.urandom).
        clock: only its wall clock is read here, for handshake timestamps (TAI64N, §5.4.2) and
            `Peer.last_handshake_time_ns`; timers use the `now` passed in. See protocol/clock.py.
        timer_scale: multiplies every protocol timer (`Timers.scaled`); 1.0 = the protocol's
            values. Anything else is for tests only (e.g. 0.05: rekey after 6 s instead of 120).
        jitter: random source of the handshake retry jitter (a seeded one makes tests repeatable).

    Raises:
        ValueError: `timer_scale` is not a positive number.

    Attributes:
        mtu: as above; the device updates it when the link's MTU changes.
        peers: public key (32 bytes) -> `Peer`. Read-only: use `add_peer`/`remove_peer`.
        relay: forward decrypted packets addressed to another peer straight back into the tunnel
            (a Raven relay gateway) instead of handing them to the TUN.
        load_threshold: handshake messages in one receive batch that switch on "under load" (§5.3).
        load_rate: handshake messages with a valid mac1 per second (bursts of as many) over which
            the interface is "under load" as well (§5.3 leaves the measure to the implementation).
        timers: the protocol durations in seconds in force (`Timers`).
        stats: `Counter` -> count: drop reasons and a few events.
    """

    def __init__(self, *, mtu: int = 1420, rng: Callable[[int], bytes] = os.urandom,
                 clock: Clock | None = None, timer_scale: float = 1.0,
                 jitter: random.Random | None = None) -> None:
        self.mtu = mtu
        self._rng = rng
        self.clock = clock or Clock()
        self.timers = Timers.scaled(timer_scale)
        self._jitter = jitter or random.Random()
        self._identity: hsm.StaticIdentity | None = None
        self._checker: CookieChecker | None = None
        self.peers: dict[bytes, Peer] = {}
        self._allowed: AllowedIPs[Peer] = AllowedIPs()
        self._index: IndexTable[Peer | Keypair] = IndexTable(rng)  # handshake owner or session
        self.relay = False
        self._relay_queue: dict[Peer, list[bytes]] = {}    # relayed packets of the batch being received
        # Prefixes more than one peer may send from (receive side only; sending follows allowed IPs):
        # a remote domain reached either through the relay or directly, while the route moves between
        # them (make-before-break). Empty unless a control plane sets it: the data path never looks.
        self._shared_sources: AllowedIPs[frozenset[Peer]] = AllowedIPs()
        self._has_shared_sources = False
        self.load_threshold = DEFAULT_LOAD_THRESHOLD
        self.load_rate = DEFAULT_LOAD_RATE
        self._under_load_until = float("-inf")
        self._load_tokens = DEFAULT_LOAD_RATE       # token bucket of mac1-valid handshake messages
        self._load_refilled = 0.0
        self._limiter = HandshakeRateLimiter()
        self._pending_unknown: dict[bytes, tuple[bytes, Endpoint, float]] = {}
        self._replay_pending: list[tuple[bytes, Endpoint]] = []
        self.stats: defaultdict[Counter, int] = defaultdict(int)

    # ------------------------------------------------------------------ config
    @property
    def private_key(self) -> bytes | None:
        """The interface's Curve25519 private key (32 bytes), None when unset.

        Setting it (None or all zeros clears it) ends every session, since they were derived
        from the old key, and removes a peer that has the new public key, as `wg` does.

        Raises:
            ValueError: the key is not 32 bytes (on setting).
        """
        return self._identity.private if self._identity else None

    @private_key.setter
    def private_key(self, key: bytes | None) -> None:
        if key is not None and len(key) != 32:
            raise ValueError("private key must be 32 bytes")
        if key is not None and not any(key):
            key = None
        if key is not None and self._identity and self._identity.private == key:
            return
        self._identity = hsm.StaticIdentity(key) if key is not None else None
        self._checker = (CookieChecker(self._identity.public, self._rng, refresh=self.timers.cookie_refresh_time)
                         if self._identity else None)
        if self._identity is not None:
            # A peer with our own public key would be talking to ourselves: wg drops it too
            # (with its sessions and allowed IPs, or packets would still be routed to it).
            self.remove_peer(self._identity.public)
        for peer in self.peers.values():
            self._expire_sessions(peer)
            peer.handshake.precomputed_static_static = hsm.precompute_static_static(self._identity, peer.public_key)
            # Under the new key nothing is in flight: the next packet may start a handshake at
            # once (the kernel and wireguard-go's ExpireCurrentKeypairs reset it too).
            peer.initiation_allowed_at = None
            if self._identity is not None and peer.persistent_keepalive_interval:
                # The key makes the peer usable: with persistent keepalive on, start now (a keepalive,
                # so a handshake), as the kernel and wireguard-go do; the next tick sends it.
                peer.persistent_keepalive_at = float("-inf")

    @property
    def public_key(self) -> bytes | None:
        """The public key (32 bytes) of `private_key`, None when no private key is set."""
        return self._identity.public if self._identity else None

    def add_peer(self, public_key: bytes) -> Peer:
        """The peer with this public key (32 bytes), created (with no endpoint and no allowed IPs)
        if it does not exist yet. An initiation from this key that arrived in the last
        REKEY_TIMEOUT seconds is answered at the next `tick`.

        Raises:
            ValueError: the key is not 32 bytes, or is the interface's own public key.
        """
        if len(public_key) != 32:
            raise ValueError("public key must be 32 bytes")
        peer = self.peers.get(public_key)
        if peer is not None:
            return peer
        if self._identity is not None and public_key == self._identity.public:
            raise ValueError("peer public key is the interface's own public key")
        peer = Peer(public_key, hsm.precompute_static_static(self._identity, public_key),
                    cookie_lifetime=self.timers.cookie_refresh_time - self.timers.rekey_timeout)
        self.peers[public_key] = peer
        pending = self._pending_unknown.pop(public_key, None)
        if pending is not None:
            self._replay_pending.append((pending[0], pending[1]))
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        """Remove the peer with this public key (if any) with its sessions, keys and allowed IPs."""
        peer = self.peers.pop(public_key, None)
        if peer is None:
            return
        self._expire_sessions(peer)
        self._allowed.remove_owner(peer)
        if self._has_shared_sources:
            for net, group in list(self._shared_sources.items()):
                if peer in group:
                    self.share_sources([net], [p for p in group if p is not peer])

    def clear_peers(self) -> None:
        """Remove every peer (`remove_peer` for each)."""
        for key in list(self.peers):
            self.remove_peer(key)

    def add_allowed_ip(self, peer: Peer, network: Network) -> None:
        """Route `network` (an ipaddress IPv4Network/IPv6Network) to `peer` and accept it as the
        source of packets from `peer` (cryptokey routing, whitepaper §2). A network another peer
        had moves to this one, as in `wg`."""
        self._allowed.insert(network, peer)

    def remove_allowed_ip(self, peer: Peer, network: Network) -> None:
        """Stop routing `network` to `peer` (nothing happens if `peer` does not have it)."""
        self._allowed.remove(network, peer)

    def clear_allowed_ips(self, peer: Peer) -> None:
        """Remove every allowed IP of `peer`."""
        self._allowed.remove_owner(peer)

    def allowed_ips(self, peer: Peer) -> list[Network]:
        """The networks routed to `peer`."""
        return list(self._allowed.networks(peer))

    def allowed_ip_prefixes(self, peer: Peer) -> list[str]:
        """`peer`'s allowed IPs as CIDR text, as `allowed_ips` (UAPI get: no network objects)."""
        return self._allowed.prefixes(peer)

    def peer_for_address(self, address: str) -> Peer | None:
        """The peer whose allowed IPs hold `address` (an IPv4/IPv6 literal), longest prefix first."""
        return self._allowed.lookup(address)

    def share_sources(self, networks: Sequence[Network], peers: Sequence[Peer]) -> None:
        """Accept packets with a source in ``networks`` from any of ``peers`` too, not only from the
        prefix's owner in allowed IPs (which alone decides where packets *to* it go). For one remote
        domain reachable over two peers (a relay and a direct path): the receive side then drops
        nothing while the two ends move the route at slightly different moments. An empty ``peers``
        removes the networks. Each peer must be trusted with those sources anyway."""
        group = frozenset(peers)
        for net in networks:
            if group:
                self._shared_sources.insert(net, group)
            else:
                self._shared_sources.remove(net)
        self._has_shared_sources = next(self._shared_sources.items(), None) is not None

    # --------------------------------------------------------------- data path
    def send_packets(self, packets: list[bytes], now: float) -> Output:
        """Encrypt IP packets read from the TUN, choosing each one's peer by destination.

        Args:
            packets: whole IPv4/IPv6 packets (bytes), in the order read.
            now: monotonic seconds.

        Returns:
            An `Output` with the transport messages (in `bursts` and `network`), and handshake
            initiations for peers without a usable session; their packets are staged (up to
            MAX_STAGED_PACKETS per peer) and sent once the handshake completes (whitepaper §6.2).
            Packets that are not IP or have no peer are dropped and counted (`Counter.TX_*`).
        """
        out = Output()
        lookup4, lookup6 = self._allowed.lookup_v4, self._allowed.lookup_v6
        by_peer: dict[Peer, list[bytes]] = {}
        v4_dst, v6_dst = V4_DST, V6_DST
        for pkt in packets:
            # ipheader.destination, inlined with its offsets: a call per packet cost ~7 % of the send path
            version = pkt[0] >> 4 if pkt else 0
            if version == 4 and len(pkt) >= IPV4_MIN_HEADER:
                peer = lookup4(pkt[v4_dst])
            elif version == 6 and len(pkt) >= IPV6_HEADER:
                peer = lookup6(pkt[v6_dst])
            else:
                self.stats[Counter.TX_NOT_IP] += 1
                continue
            if peer is None:
                self.stats[Counter.TX_NO_PEER] += 1
                continue
            batch = by_peer.get(peer)
            if batch is None:
                by_peer[peer] = [pkt]
            else:
                batch.append(pkt)
        for peer, batch in by_peer.items():
            self._send_to_peer(peer, batch, out, now)
        return out

    def _send_to_peer(self, peer: Peer, packets: list[bytes], out: Output, now: float) -> None:
        kp = peer.current
        if kp is None or peer.endpoint is None or not kp.usable_for_sending(now, self.timers.reject_after_time):
            peer.staged.extend(packets)
            self._initiate_handshake(peer, out, now, retry=False)
            return
        self._encrypt(peer, kp, packets, out, now)

    def _encrypt(self, peer: Peer, kp: Keypair, packets: Sequence[bytes], out: Output, now: float) -> None:
        """Encrypt `packets` for `peer` into transport messages, back to back in one buffer."""
        assert kp.send is not None and peer.endpoint is not None
        endpoint = peer.endpoint
        mtu = self.mtu
        receiver = kp.remote_index
        counter = kp.send_counter
        if len(packets) == 1:
            # One message (a ping, a keepalive): a plain datagram.
            pkt = packets[0]
            pad = padding_for(len(pkt), mtu)
            if pad:
                pkt = pkt + _ZERO_PAD[:pad]
            msg = _TRANSPORT_HEADER.pack(MSG_TRANSPORT, receiver, counter) + kp.send.encrypt(_NONCE.pack(counter), pkt, None)
            out.network.append((msg, endpoint))
            counter += 1
            sent_bytes = len(msg)
            data_sent = len(packets[0]) > 0
        else:
            encrypt_into = kp.send.encrypt_into
            header_into, nonce_pack = _TRANSPORT_HEADER.pack_into, _NONCE.pack
            bursts = out.bursts
            # Worst case per message: header + 15 bytes of padding + tag.
            buf = bytearray(sum(map(len, packets)) + (_TRANSPORT_OVERHEAD + 15) * len(packets))
            view = memoryview(buf)
            off = start = size = 0
            burst_open = data_sent = False
            for pkt in packets:
                length = len(pkt)
                if length:
                    data_sent = True
                    if length <= mtu:
                        pad = -length & 15
                        if length + pad > mtu:
                            pad = mtu - length  # the MTU caps the padding: a full-size packet gets none
                    else:
                        pad = padding_for(length, mtu)
                    if pad:
                        pkt = pkt + _ZERO_PAD[:pad]
                        length += pad
                msg_size = length + _TRANSPORT_OVERHEAD
                if not burst_open or msg_size > size:
                    if off > start:
                        bursts.append((view[start:off], size, endpoint))
                    start, size, burst_open = off, msg_size, True
                elif msg_size < size:
                    burst_open = False  # a shorter message may only end a burst (a GSO rule)
                header_into(buf, off, MSG_TRANSPORT, receiver, counter)
                encrypt_into(nonce_pack(counter), pkt, None, view[off + 16:off + msg_size])
                off += msg_size
                counter += 1
            if off > start:
                bursts.append((view[start:off], size, endpoint))
            sent_bytes = off
        kp.send_counter = counter
        peer.tx_bytes += sent_bytes
        timers.any_authenticated_packet_sent(peer)
        if data_sent and peer.new_handshake_at is None:
            timers.data_sent(peer, now, self.timers, self._jitter)
        timers.any_authenticated_packet_traversal(peer, now)
        # Keep the key fresh (§6.2): rekey by message count either side, by age only as initiator.
        if counter > REKEY_AFTER_MESSAGES or (kp.is_initiator and now - kp.created > self.timers.rekey_after_time):
            self._initiate_handshake(peer, out, now, retry=False)

    def _flush_staged(self, peer: Peer, out: Output, now: float) -> None:
        if peer.staged:
            packets = list(peer.staged)
            peer.staged.clear()
            self._send_to_peer(peer, packets, out, now)

    def _send_keepalive(self, peer: Peer, out: Output, now: float) -> None:
        if not peer.staged:
            peer.staged.append(b"")
        self._flush_staged(peer, out, now)

    def receive_datagrams(self, datagrams: list[tuple[bytes, Endpoint]], now: float) -> Output:
        """Authenticate and decrypt UDP payloads; answer handshakes.

        Args:
            datagrams: (payload bytes, source endpoint (ip str, port int)) in the order received.
                The source of the last authenticated message of a peer becomes its endpoint
                (roaming, whitepaper §2.1).
            now: monotonic seconds.

        Returns:
            An `Output`: decrypted packets for the TUN (`tun`), handshake responses, cookie
            replies and keepalives (`network`), and packets relayed to other peers when `relay`
            is on. Nothing is raised for bad input: every dropped datagram is counted in
            `stats` under its `Counter`.
        """
        out = Output()
        load_checked = False
        i, count = 0, len(datagrams)
        while i < count:
            data, source = datagrams[i]
            if data[:4] == _TRANSPORT_PREFIX and len(data) >= TRANSPORT_MIN_SIZE:
                i = self._receive_transport_run(datagrams, i, out, now)
                continue
            if not load_checked:
                # Many handshake messages in one batch means we are falling behind ("under load"):
                # decided before the first of them is processed; batches of data never pay for it.
                load_checked = True
                handshakes = sum(1 for d, _ in datagrams[i:] if d[:1] in _HANDSHAKE_TYPES)
                if handshakes >= self.load_threshold:
                    self._under_load_until = now + UNDER_LOAD_HOLD
            i += 1
            if len(data) == INITIATION_SIZE and data[:4] == _INITIATION_PREFIX:
                # What a handshake flood is made of: framing checked without a call (message_type's rules).
                self._receive_initiation(data, source, out, now)
                continue
            try:
                mtype = message_type(data)
            except MalformedMessage:
                self.stats[Counter.RX_MALFORMED] += 1
                continue
            if mtype == MSG_INITIATION:
                self._receive_initiation(data, source, out, now)
            elif mtype == MSG_RESPONSE:
                self._receive_response(data, source, out, now)
            else:
                self._receive_cookie_reply(data, now)
        if self._relay_queue:
            queued, self._relay_queue = self._relay_queue, {}
            for dest, packets in queued.items():
                self._send_to_peer(dest, packets, out, now)
        return out

    def _receive_transport_run(self, datagrams: list[tuple[bytes, Endpoint]], i: int, out: Output,
                               now: float) -> int:
        """Transport messages from datagrams[i] on that share its receiver index: one session.

        The hot path of the receiver. Per packet: decrypt, replay check (after authentication),
        the source check and hand-off to the TUN; the session lookup and the peer's counters and
        timers are done once per run. Returns the index of the first datagram not consumed.
        """
        first = datagrams[i][0]
        run_receiver = _RECEIVER.unpack_from(first, 4)[0]
        count = len(datagrams)
        kp = self._index.get(run_receiver)
        if not isinstance(kp, Keypair) or not kp.usable_for_receiving(now, self.timers.reject_after_time):
            stat = Counter.RX_UNKNOWN_INDEX if not isinstance(kp, Keypair) else Counter.RX_EXPIRED_SESSION
            prefix = first[:8]  # type, reserved and receiver index
            while i < count and datagrams[i][0][:8] == prefix and len(datagrams[i][0]) >= TRANSPORT_MIN_SIZE:
                self.stats[stat] += 1
                i += 1
            return i
        peer: Peer = kp.peer  # type: ignore[assignment]
        decrypt = kp.receive.decrypt  # type: ignore[union-attr]
        accept = kp.replay.accept
        nonce_pack, header_of = _NONCE.pack, _TRANSPORT_HEADER.unpack_from
        lookup_v4 = self._allowed.lookup_v4
        v4_src = V4_SRC
        tun_append = out.tun.append
        fast_v4 = not self.relay
        cached_src, cached_owner = None, None
        received = authenticated = data_packets = 0
        source = None
        while i < count:
            data, next_source = datagrams[i]
            if len(data) < TRANSPORT_MIN_SIZE:
                break
            # The first little-endian word is the type with its three zero bytes: 4 means transport.
            word, receiver, counter = header_of(data)
            if word != MSG_TRANSPORT or receiver != run_receiver:
                break
            i += 1
            try:
                plaintext = decrypt(nonce_pack(counter), data[16:], None)
            except InvalidTag:
                self.stats[Counter.RX_BAD_AUTH] += 1
                continue
            if not accept(counter):
                self.stats[Counter.RX_REPLAY] += 1
                continue
            source = next_source  # roaming: the last authenticated source wins
            if not authenticated and kp is peer.next:
                peer.endpoint = source
                self._confirm_next(peer, out, now)
            authenticated += 1
            received += len(data)
            if not plaintext:
                continue  # keepalive
            data_packets += 1
            if fast_v4 and plaintext[0] >> 4 == 4:
                # IPv4 without relaying; anything unusual falls through to _deliver, which counts it.
                size = len(plaintext)
                if size >= IPV4_MIN_HEADER:
                    # ipheader.v4_total_length, inlined: a call per packet cost ~2 % of the receive path
                    length = (plaintext[2] << 8) | plaintext[3]
                    src = plaintext[v4_src]
                    if src != cached_src:
                        cached_src, cached_owner = src, lookup_v4(src)
                    if cached_owner is peer and IPV4_MIN_HEADER <= length <= size:
                        tun_append(plaintext if length == size else plaintext[:length])
                        continue
            peer.endpoint = source
            self._deliver(peer, plaintext, out, now)
        if authenticated:
            peer.endpoint = source
            peer.rx_bytes += received
            timers.any_authenticated_packet_received(peer)
            timers.any_authenticated_packet_traversal(peer, now)
            current = peer.current
            if (current is not None and current.is_initiator and not peer.sent_lastminute_handshake
                    and now - current.created > self.timers.rekey_on_receive_age):
                peer.sent_lastminute_handshake = True
                self._initiate_handshake(peer, out, now, retry=False)
            if data_packets:
                timers.data_received(peer, now, self.timers, data_packets)
        return i

    def _deliver(self, peer: Peer, plaintext: bytes, out: Output, now: float) -> None:
        """Check a decrypted packet's source against `peer`'s allowed IPs, then hand it to the TUN
        or, relaying, to the peer its destination belongs to."""
        header = parse(plaintext)
        if header is None:
            # Not IP, or a length field that would hand the TUN a runt or overrun the data.
            self.stats[Counter.RX_NOT_IP] += 1
            return
        version, length, src, dst = header
        lookup = self._allowed.lookup_v4 if version == 4 else self._allowed.lookup_v6
        if lookup(src) is not peer:
            shared = None
            if self._has_shared_sources:
                shared = (self._shared_sources.lookup_v4 if version == 4 else self._shared_sources.lookup_v6)(src)
            if shared is None or peer not in shared:
                self.stats[Counter.RX_BAD_SOURCE] += 1  # cryptokey routing: this peer may not use that source
                return
        packet = plaintext[:length] if length < len(plaintext) else plaintext
        if self.relay:
            dest = lookup(dst)
            if dest is not None and dest is not peer:
                self.stats[Counter.RELAYED] += 1
                # Sent when the batch is done: one encrypt run (one GSO burst) per destination.
                self._relay_queue.setdefault(dest, []).append(packet)
                return
        out.tun.append(packet)

    def _confirm_next(self, peer: Peer, out: Output, now: float) -> None:
        """The initiator used the session we offered: it becomes current (key confirmation)."""
        self._drop_keypair(peer.previous)
        peer.previous, peer.current, peer.next = peer.current, peer.next, None
        timers.handshake_complete(peer, self.clock.wall_ns())
        self._flush_staged(peer, out, now)

    # ---------------------------------------------------------------- handshake
    def _macs_acceptable(self, data: bytes, mtype: int, source: Endpoint, out: Output, now: float) -> bool:
        """mac1 before any DH; under load also mac2, answering with a cookie when it is missing.

        Before anything else is parsed: under a flood this is all most messages cost."""
        checker = self._checker
        if checker is None:
            self.stats[Counter.RX_NO_PRIVATE_KEY] += 1
            return False
        if not checker.mac1_valid(data, mtype):
            self.stats[Counter.RX_BAD_MAC1] += 1
            return False
        # Load by rate: each message that passed mac1 takes a token; an empty bucket means more
        # than load_rate a second, and keeps the interface under load while that lasts.
        rate = self.load_rate
        tokens = self._load_tokens + (now - self._load_refilled) * rate
        self._load_refilled = now
        if tokens >= 1.0:
            self._load_tokens = (tokens if tokens < rate else rate) - 1.0
        else:
            self._load_tokens = tokens
            self._under_load_until = now + UNDER_LOAD_HOLD
        if now < self._under_load_until:
            if not checker.mac2_valid(data, mtype, source, now):
                sender = _RECEIVER.unpack_from(data, 4)[0]   # the sender index, in both handshake messages
                out.network.append((checker.create_reply(data, mtype, sender, source, now), source))
                self.stats[Counter.TX_COOKIE_REPLY] += 1
                return False
            if not self._limiter.allow(source[0], now):
                self.stats[Counter.RX_HANDSHAKE_RATELIMITED] += 1
                return False
        return True

    def _receive_initiation(self, data: bytes, source: Endpoint, out: Output, now: float) -> None:
        if not self._macs_acceptable(data, MSG_INITIATION, source, out, now):
            return
        msg = parse_initiation(data)
        assert self._identity is not None
        try:
            static, ck, h = hsm.open_initiation_static(self._identity, msg)
        except hsm.HandshakeError:
            self.stats[Counter.RX_BAD_HANDSHAKE] += 1
            return
        peer = self.peers.get(static)
        if peer is None:
            self.stats[Counter.RX_UNKNOWN_PEER] += 1
            if len(self._pending_unknown) >= _PENDING_UNKNOWN_MAX:
                self._pending_unknown.pop(next(iter(self._pending_unknown)))
            self._pending_unknown[static] = (data, source, now)
            return
        hs = peer.handshake
        try:
            consumed = hsm.finish_initiation(hs, msg, static, ck, h)
        except hsm.HandshakeError:
            self.stats[Counter.RX_BAD_HANDSHAKE] += 1
            return
        # TAI64N is big-endian, so byte order is time order.
        if consumed.timestamp <= hs.last_timestamp:
            self.stats[Counter.RX_HANDSHAKE_REPLAY] += 1
            # Authenticated above, so this is the peer's own key: worth telling its operator, who
            # cannot otherwise tell a peer whose clock went back from one that is silent.
            peer.last_refusal = (REFUSED_OLD_TIMESTAMP, now)
            return
        if (hs.last_initiation_consumed is not None
                and now - hs.last_initiation_consumed < self.timers.handshake_initiation_rate):
            self.stats[Counter.RX_HANDSHAKE_FLOOD] += 1
            return
        hsm.accept_initiation(hs, consumed, now)
        peer.last_refusal = None
        peer.endpoint = source
        peer.rx_bytes += len(data)
        timers.any_authenticated_packet_received(peer)
        timers.any_authenticated_packet_traversal(peer, now)
        self._release_handshake_index(peer)
        index = self._index.new(peer)
        try:
            response = hsm.create_response(hs, index)
        except hsm.HandshakeError:
            self._index.discard(index)
            hs.zero()
            self.stats[Counter.RX_BAD_HANDSHAKE] += 1
            return
        send_key, receive_key = hsm.derive_transport_keys(hs.chaining_key, initiator=False)
        kp = Keypair(send_key, receive_key, is_initiator=False, local_index=index,
                     remote_index=hs.remote_index, created=now, peer=peer)
        self._index.set(index, kp)
        hs.zero()
        # Responder: the new session waits as `next` until the initiator uses it.
        self._drop_keypair(peer.next)
        self._drop_keypair(peer.previous)
        peer.next, peer.previous = kp, None
        timers.session_derived(peer, now, self.timers)
        wire = peer.cookies.add_macs(response, MSG_RESPONSE, now)
        out.network.append((wire, source))
        peer.tx_bytes += len(wire)
        # Until the initiator confirms this session (its first transport message) or REKEY_TIMEOUT
        # passes, our own packets wait staged instead of starting a competing handshake.
        timers.response_sent(peer, now, self.timers, self._jitter)
        timers.any_authenticated_packet_sent(peer)
        timers.any_authenticated_packet_traversal(peer, now)

    def _receive_response(self, data: bytes, source: Endpoint, out: Output, now: float) -> None:
        if not self._macs_acceptable(data, MSG_RESPONSE, source, out, now):
            return
        msg = parse_response(data)
        assert self._identity is not None
        peer = self._index.get(msg.receiver)
        if not isinstance(peer, Peer):
            self.stats[Counter.RX_UNKNOWN_INDEX] += 1
            return
        hs = peer.handshake
        try:
            ck = hsm.consume_response(hs, self._identity, msg)
        except hsm.HandshakeError:
            self.stats[Counter.RX_BAD_HANDSHAKE] += 1
            return
        send_key, receive_key = hsm.derive_transport_keys(ck, initiator=True)
        kp = Keypair(send_key, receive_key, is_initiator=True, local_index=hs.local_index,
                     remote_index=msg.sender, created=now, peer=peer)
        self._index.set(hs.local_index, kp)
        hs.zero()
        if peer.next is not None:
            self._drop_keypair(peer.previous)
            self._drop_keypair(peer.current)
            peer.previous, peer.next = peer.next, None
        else:
            self._drop_keypair(peer.previous)
            peer.previous = peer.current
        peer.current = kp
        peer.endpoint = source
        peer.rx_bytes += len(data)
        timers.handshake_complete(peer, self.clock.wall_ns())
        timers.session_derived(peer, now, self.timers)
        timers.any_authenticated_packet_received(peer)
        timers.any_authenticated_packet_traversal(peer, now)
        # Confirm the session to the responder at once: staged data, or else a keepalive.
        self._send_keepalive(peer, out, now)

    def _receive_cookie_reply(self, data: bytes, now: float) -> None:
        reply = parse_cookie_reply(data)
        owner = self._index.get(reply.receiver)
        peer = owner.peer if isinstance(owner, Keypair) else owner
        if not isinstance(peer, Peer):
            self.stats[Counter.RX_UNKNOWN_INDEX] += 1
            return
        if not peer.cookies.consume_reply(reply, now):
            self.stats[Counter.RX_BAD_COOKIE] += 1

    def _initiate_handshake(self, peer: Peer, out: Output, now: float, *, retry: bool) -> None:
        """Send a handshake initiation to `peer` unless an initiation or a response went out less
        than REKEY_TIMEOUT ago (`timers.may_initiate`, §6.4; then it is retried once allowed if
        packets wait); `retry` keeps the attempt count (a retransmission), else it restarts from 0."""
        if not retry:
            peer.handshake_attempts = 0
        hs = peer.handshake
        if not timers.may_initiate(peer, now):
            # An initiation or response went out less than REKEY_TIMEOUT ago.
            timers.initiation_deferred(peer)
            return
        if self._identity is None or hs.precomputed_static_static is None:
            return
        timers.initiation_sent(peer, now, self.timers)
        self._release_handshake_index(peer)
        index = self._index.new(peer)
        msg = hsm.create_initiation(hs, self._identity, index, self.clock.wall_ns())
        wire = peer.cookies.add_macs(msg, MSG_INITIATION, now)
        timers.any_authenticated_packet_traversal(peer, now)
        timers.any_authenticated_packet_sent(peer)
        if peer.endpoint is not None:
            out.network.append((wire, peer.endpoint))
            peer.tx_bytes += len(wire)
            self.stats[Counter.TX_INITIATION] += 1
        timers.handshake_initiated(peer, now, self.timers, self._jitter)

    # ------------------------------------------------------------------ timers
    def tick(self, now: float) -> Output:
        """Fire the timers that are due at `now` (monotonic seconds), whitepaper §6.

        Per peer, the five expiries of timers.py: handshake retransmission, keepalive, new
        handshake, key erasure, persistent keepalive. Also answers initiations from peers that
        were added since they arrived. Returns what to send.
        """
        out = Output()
        if self._replay_pending:
            replay, self._replay_pending = self._replay_pending, []
            for data, source in replay:
                self._receive_initiation(data, source, out, now)
        if self._pending_unknown:
            ttl = self.timers.rekey_timeout
            self._pending_unknown = {k: v for k, v in self._pending_unknown.items() if now - v[2] < ttl}
        for peer in list(self.peers.values()):
            at = peer.retransmit_handshake_at
            if at is not None and now >= at:
                timers.expired_retransmit_handshake(self, peer, out, now)
            at = peer.send_keepalive_at
            if at is not None and now >= at:
                timers.expired_send_keepalive(self, peer, out, now)
            at = peer.new_handshake_at
            if at is not None and now >= at:
                timers.expired_new_handshake(self, peer, out, now)
            at = peer.zero_keys_at
            if at is not None and now >= at:
                timers.expired_zero_key_material(self, peer, out, now)
            at = peer.persistent_keepalive_at
            if at is not None and now >= at:
                timers.expired_persistent_keepalive(self, peer, out, now)
        return out

    # --------------------------------------------------------------- internals
    def _release_handshake_index(self, peer: Peer) -> None:
        self._index.release(peer.handshake.local_index, peer)

    def _drop_keypair(self, kp: Keypair | None) -> None:
        if kp is None:
            return
        self._index.release(kp.local_index, kp)
        kp.zero()

    def _expire_sessions(self, peer: Peer) -> None:
        """Erase every session and the handshake state of `peer`, and drop its staged packets."""
        for kp in peer.keypairs():
            self._drop_keypair(kp)
        peer.previous = peer.current = peer.next = None
        self._release_handshake_index(peer)
        peer.handshake.zero()
        peer.staged.clear()

    def __repr__(self) -> str:
        return f"Tunnel(peers={len(self.peers)}, mtu={self.mtu})"


def parse_network(text: str) -> Network:
    """An IPv4/IPv6 network from a CIDR string as `wg` accepts it (host bits are cleared, as wg does).

    Raises:
        ValueError: not a CIDR.
    """
    return ipaddress.ip_network(text.strip(), strict=False)

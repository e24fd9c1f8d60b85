"""TAI64N timestamps carried in handshake initiations (replay protection for initiations)."""
from __future__ import annotations

import struct

_TAI64_BASE = (1 << 62) + 10
# Round nanoseconds down so the timestamp doesn't leak a fine-grained clock (as wireguard-go does).
_WHITENER = 0x1000000


def tai64n(unix_ns: int) -> bytes:
    secs, nanos = divmod(unix_ns, 1_000_000_000)
    nanos -= nanos % _WHITENER
    return struct.pack(">QI", _TAI64_BASE + secs, nanos)

"""The child side of :func:`tools.wgcraft.udp_exchange`, run inside a node (so its socket is the node's).

Reads one JSON request on stdin: ``dest``, ``port``, ``datagrams`` (hex strings), ``gap`` (seconds between
sends), ``listen`` (seconds to wait for replies after the last send), ``source`` (local address or
null), ``until`` (stop after that many replies, 0 = listen the whole time). Sends the datagrams from one
fresh UDP socket and prints ``{"local": [addr, port], "replies": [{"data": hex, "addr": ..., "port": ...}]}``.

Standard library only, and run by path (``python3 .../udp_exchange.py``), so it needs nothing importable.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any


def exchange(req: dict[str, Any]) -> dict[str, Any]:
    """Send the request's datagrams and collect the replies (the shapes are those of the module doc)."""
    fam = socket.AF_INET6 if ":" in req["dest"] else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind((req.get("source") or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), 0))
        local = s.getsockname()
        for d in req["datagrams"]:
            s.sendto(bytes.fromhex(d), (req["dest"], req["port"]))
            time.sleep(req["gap"])
        replies = []
        end = time.monotonic() + req["listen"]
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                data, addr = s.recvfrom(65535)
            except socket.timeout:
                break
            replies.append({"data": data.hex(), "addr": addr[0], "port": addr[1]})
            if req["until"] and len(replies) >= req["until"]:
                break
    return {"local": [local[0], local[1]], "replies": replies}


if __name__ == "__main__":
    print(json.dumps(exchange(json.load(sys.stdin))))

"""The device layer: a running interface around the sans-I/O core (ravenvpn.protocol).

    device      `Device`: TUN + UDP + Tunnel + pump (+ UAPI socket), embeddable in any process
    pump        the event loop moving batches TUN <-> Tunnel <-> UDP, and the timer ticks
    tun, udp    the I/O: TUN device (with offloads, offload.py) and the dual-stack UDP transport
    uapi        the `wg` configuration protocol; uapi_server: its Unix socket
    netlink     link events (deletion, MTU); warmer: keeps the packet path in cache while polling
    refusals    the log line saying why a peer's handshake initiations are refused
    daemon      the `ravenvpn-wg` command: argv, environment, logging, signals and fork
"""

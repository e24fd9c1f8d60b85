"""The sans-I/O WireGuard core: no sockets, no threads, no clock reads for timers.

`tunnel.Tunnel` is the entry point: three verbs (`send_packets`, `receive_datagrams`, `tick`)
take a batch and `now` (monotonic seconds) and return an `Output` to carry out. One module
per concept, as wireguard-go's device/:

    tunnel      the interface state and its verbs (send and receive paths, handshake handling)
    peer        a configured peer: keys, sessions, staged packets, timer deadlines
    timers      the timer hooks and expiries of whitepaper §6, and the durations (`Timers`)
    clock       the time seam: `Clock` (wall-clock offset) and the test-only timer scale
    handshake   Noise_IKpsk2 message construction and consumption (§5.4.2-5.4.3)
    cookie      mac1/mac2 and cookie replies (§5.4.4-5.4.7)
    keypair     a transport session; replay: its sliding window (§5.4.6)
    index       the table of local indices; allowedips: cryptokey routing (§2)
    ipheader    the IP header fields routing reads; messages: wire layout; constants: §6.1
    counters    named drop reasons; ratelimit: handshakes under load; crypto, keys, tai64n

Nothing here is thread-safe; the device layer (ravenvpn.device) serialises access.
"""

"""Traffic between nodes and what it shows: ``ping``, ``iperf3`` and ``tcpdump`` run inside nodes, and
parsers of their output (:class:`PingResult`, the iperf3 summary dict, :class:`Capture`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import re
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from tools.node import Node
from tools.process import CommandError, wait_for

__all__ = ["PingResult", "ping", "parse_ping", "IperfError", "iperf3", "iperf3_summary", "Capture", "capture"]


@dataclasses.dataclass
class PingResult:
    """Parsed iputils ``ping`` output. RTTs in milliseconds; ``rtts[i]`` belongs to ``seqs[i]``."""

    dest: str
    transmitted: int
    received: int
    loss_pct: float
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None
    rtts: list[float]
    seqs: list[int]
    output: str

    @property
    def ok(self) -> bool:
        """At least one reply came back."""
        return self.received > 0

    def __str__(self) -> str:
        rtt = f"rtt min/avg/max {self.rtt_min}/{self.rtt_avg}/{self.rtt_max} ms" if self.received else "no replies"
        return f"ping {self.dest}: {self.received}/{self.transmitted} received, {self.loss_pct:g}% loss, {rtt}"


_PING_REPLY = re.compile(r"icmp_seq=(\d+) .*?time=([\d.]+) ms")
_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")
_PING_LOSS = re.compile(r"([\d.]+)% packet loss")
_PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def ping(
    node: Node,
    addr: str,
    count: int = 3,
    interval: float = 0.2,
    wait: float = 2.0,
    deadline: float | None = None,
    size: int | None = None,
    pattern: str | None = None,
    source: str | None = None,
) -> PingResult:
    """Ping ``addr`` from ``node`` (IPv4 or IPv6) and parse the result; never raises on packet loss.

    ``wait`` is the per-reply timeout (``-W``); ``deadline`` (``-w``) instead keeps pinging until
    ``count`` replies or the deadline. ``pattern`` (hex, ``-p``) fills the payload, which lets capture
    tests look for plaintext leaks.

    Raises:
        CommandError: only when ping itself fails (exit 2: bad address, no route...).
    """
    args = ["ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", f"{wait:g}"]
    if deadline is not None:
        args += ["-w", f"{deadline:g}"]
    if size is not None:
        args += ["-s", str(size)]
    if pattern is not None:
        args += ["-p", pattern]
    if source is not None:
        args += ["-I", source]
    args.append(addr)
    budget = (deadline if deadline is not None else count * interval + wait) + 10
    proc = node.run(*args, check=False, timeout=budget)
    if proc.returncode in (0, 1):  # 1: some or all replies missing, which is a result, not a failure
        with contextlib.suppress(ValueError):
            return parse_ping(addr, proc.stdout)
    raise CommandError(proc.returncode, args, proc.stdout, proc.stderr)


def parse_ping(dest: str, output: str) -> PingResult:
    """Parse the output of iputils ``ping -n`` (IPv4 or IPv6) to ``dest``.

    Raises:
        ValueError: the output has no statistics line ("N packets transmitted, M received"): ping gave up
            before sending.
    """
    summary = _PING_SUMMARY.search(output)
    if summary is None:
        raise ValueError(f"no statistics line in the ping output: {output[-200:]!r}")
    seqs, rtts = [], []
    for m in _PING_REPLY.finditer(output):
        seqs.append(int(m.group(1)))
        rtts.append(float(m.group(2)))
    loss = _PING_LOSS.search(output)
    rtt = _PING_RTT.search(output)
    return PingResult(
        dest=dest,
        transmitted=int(summary.group(1)),
        received=int(summary.group(2)),
        loss_pct=float(loss.group(1)) if loss else 100.0,
        rtt_min=float(rtt.group(1)) if rtt else None,
        rtt_avg=float(rtt.group(2)) if rtt else None,
        rtt_max=float(rtt.group(3)) if rtt else None,
        rtts=rtts,
        seqs=seqs,
        output=output,
    )


# --------------------------------------------------------------------------------------------------
# iperf3
# --------------------------------------------------------------------------------------------------


class IperfError(RuntimeError):
    """iperf3 failed (the JSON ``error`` field or stderr is in the message)."""


def _port_listening(node: Node, port: int) -> bool:
    out = node.run("ss", "-Hltn", f"sport = :{port}", check=False).stdout
    return bool(out.strip())


def iperf3(
    client: Node,
    server: Node,
    server_addr: str,
    seconds: float = 3,
    reverse: bool = False,
    udp: bool = False,
    parallel: int = 1,
    bitrate: str | None = None,
    length: int | None = None,
    port: int | None = None,
    omit: int = 0,
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Measure throughput from ``client`` to ``server`` (``reverse``: server sends) and return numbers.

    Starts a one-off server (``-s -1``) on a random port in ``server``, waits until it listens, runs the
    client with ``-J`` and returns a summary dict: ``bits_per_second`` (at the receiver), ``sent_bytes``,
    ``received_bytes``, ``sent_bps``, ``retransmits`` (TCP), ``lost_percent``/``jitter_ms`` (UDP),
    ``seconds`` (see :func:`iperf3_summary`), plus ``raw`` (the full JSON), ``udp``, ``reverse`` and
    ``port``. These are measurements to print, not to assert on.

    Raises:
        IperfError: the server did not start, or the client failed or printed no JSON.
        TimeoutError: the server did not listen within 10 s.
    """
    port = port or random.randint(20000, 45000)
    for _ in range(20):
        if not _port_listening(server, port):
            break
        port = random.randint(20000, 45000)
    srv = server.popen("iperf3", "-s", "-1", "-p", str(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(
            lambda: srv.poll() is not None or _port_listening(server, port),
            timeout=10,
            message=f"iperf3 server on port {port} in {server}",
        )
        if srv.poll() is not None:
            raise IperfError(f"iperf3 server exited early: {srv.stderr.read() if srv.stderr else ''}")
        args = _iperf3_client_args(server_addr, port, seconds, reverse, udp, parallel, bitrate, length, omit)
        args += list(extra_args)
        proc = client.run(*args, check=False, timeout=seconds + omit + 30)
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            raise IperfError(f"iperf3 client printed no JSON (exit {proc.returncode}): {proc.stderr.strip()}")
        if proc.returncode != 0 or "error" in data:
            raise IperfError(f"iperf3 client failed: {data.get('error', proc.stderr.strip())}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.wait(5)
    finally:
        server.stop_process(srv)
    res: dict[str, Any] = {"raw": data, "udp": udp, "reverse": reverse, "port": port}
    res.update(iperf3_summary(data, udp, seconds))
    return res


def _iperf3_client_args(server_addr: str, port: int, seconds: float, reverse: bool, udp: bool, parallel: int,
                        bitrate: str | None, length: int | None, omit: int) -> list[str]:
    """The client's argv for :func:`iperf3` (JSON report; UDP at 100 Mbit/s unless ``bitrate`` says)."""
    args = ["iperf3", "-c", server_addr, "-p", str(port), "-t", f"{seconds:g}", "-J"]
    if reverse:
        args.append("-R")
    if udp:
        args += ["-u", "-b", bitrate or "100M"]
    elif bitrate:
        args += ["-b", bitrate]
    if parallel > 1:
        args += ["-P", str(parallel)]
    if length:
        args += ["-l", str(length)]
    if omit:
        args += ["-O", str(omit)]
    return args


def iperf3_summary(data: dict[str, Any], udp: bool, seconds: float) -> dict[str, Any]:
    """The figures of an iperf3 client's ``-J`` report (its ``end`` section).

    Returns ``bits_per_second`` (at the receiver), ``sent_bps``, ``sent_bytes``, ``received_bytes``,
    ``retransmits`` (TCP, else None), ``lost_percent`` and ``jitter_ms`` (UDP, else None) and ``seconds``
    (the receiver's duration; ``seconds`` when the report has none). Missing figures count as 0.
    """
    end = data.get("end", {})
    if udp:
        s = end.get("sum") or end.get("sum_received") or {}
        sent = end.get("sum_sent", s)
        rcv = end.get("sum_received", s)
        return dict(
            bits_per_second=float(rcv.get("bits_per_second", s.get("bits_per_second", 0.0))),
            sent_bps=float(sent.get("bits_per_second", 0.0)),
            sent_bytes=int(sent.get("bytes", 0)),
            received_bytes=int(rcv.get("bytes", 0)),
            lost_percent=float(s.get("lost_percent", 0.0)),
            jitter_ms=float(s.get("jitter_ms", 0.0)),
            seconds=float(s.get("seconds", seconds)),
            retransmits=None,
        )
    sent, rcv = end.get("sum_sent", {}), end.get("sum_received", {})
    return dict(
        bits_per_second=float(rcv.get("bits_per_second", 0.0)),
        sent_bps=float(sent.get("bits_per_second", 0.0)),
        sent_bytes=int(sent.get("bytes", 0)),
        received_bytes=int(rcv.get("bytes", 0)),
        retransmits=sent.get("retransmits"),
        lost_percent=None,
        jitter_ms=None,
        seconds=float(rcv.get("seconds", seconds)),
    )


# --------------------------------------------------------------------------------------------------
# packet capture
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Capture:
    """A finished (or running) tcpdump capture; read it after the ``with`` block ends."""

    node: Node
    iface: str
    path: Path
    stderr: list[str] = dataclasses.field(default_factory=list)

    def raw_bytes(self) -> bytes:
        """The pcap file's bytes: the simplest way to assert something (plaintext) is *not* in it."""
        return self.path.read_bytes()

    def packets(self) -> Any:
        """The packets as a scapy PacketList (scapy is imported lazily; it is slow to import)."""
        from scapy.all import rdpcap

        return rdpcap(str(self.path))

    def summary(self) -> str:
        return "".join(self.stderr)


@contextlib.contextmanager
def capture(
    node: Node,
    iface: str,
    bpf_filter: str = "",
    path: str | os.PathLike[str] | None = None,
    settle: float = 0.3,
    snaplen: int = 0,
) -> Iterator[Capture]:
    """Run ``tcpdump -w`` on ``iface`` inside ``node`` for the duration of the ``with`` block.

    Returns only once tcpdump reports it is listening (so no early packet is missed); on exit waits
    ``settle`` seconds for in-flight packets, stops tcpdump with SIGINT (which flushes the file) and reaps
    it. ``-Z root`` keeps tcpdump from dropping privileges and failing to write the file.
    """
    out = Path(path) if path is not None else node.tmpdir / f"cap-{iface}-{secrets.token_hex(3)}.pcap"
    args = ["tcpdump", "-i", iface, "-w", str(out), "-U", "--immediate-mode", "-n", "-Z", "root"]
    if snaplen:
        args += ["-s", str(snaplen)]
    if bpf_filter:
        args.append(bpf_filter)
    proc = node.popen(*args, stderr=subprocess.PIPE)
    cap = Capture(node, iface, out)
    listening = threading.Event()

    def reader(stream: IO[str]) -> None:
        for line in stream:
            cap.stderr.append(line)
            if "listening on" in line:
                listening.set()
        listening.set()

    assert proc.stderr is not None
    t = threading.Thread(target=reader, args=(proc.stderr,), daemon=True)
    t.start()
    try:
        if not listening.wait(10) or proc.poll() is not None:
            raise RuntimeError(f"tcpdump did not start on {iface} in {node}: {cap.summary()}")
        yield cap
        time.sleep(settle)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                node.stop_process(proc, signal.SIGKILL)
        t.join(2)
        node.stop_process(proc)

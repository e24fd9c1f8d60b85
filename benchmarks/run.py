"""Benchmark harness: raw veth vs wireguard-go vs ravenvpn (also busy-polling) vs mixed, same run and conditions.

    python3 -m benchmarks.run [--quick] [--repeat N] [--out DIR] [--only NAME,...]

Every setup gets two fresh nodes (network + mount namespaces from tools/node.py) joined by a veth:

  veth          A 198.18.0.1 -- B 198.18.0.2, traffic straight over the veth (the ceiling)
  wireguard-go  wireguard-go on both ends, traffic through the tunnel 10.99.0.1 -- 10.99.0.2
  ravenvpn      ravenvpn-wg on both ends
  ravenvpn-busypoll
                ravenvpn-wg on both ends, both started with RAVENVPN_BUSY_POLL_US=50000: after traffic the
                daemon keeps polling without sleeping for 50 ms before it sleeps in epoll again. It exists
                for the idle RTT: on this VM a CPU that slept runs slowly for a while after waking, so a
                daemon woken by every packet of a slow ping pays that each time; polling keeps the path
                warm, at the cost of a busy core while traffic flows (counted in its CPU per GB)
  mixed         ravenvpn-wg on A, wireguard-go on B (A->B: ravenvpn encrypts, wireguard-go decrypts)

A is always the iperf3 client and the pinger; "A->B" figures have A send, "-R" figures have B send.
Every figure is measured ``--repeat`` times (interleaved: one pass over all figures per repeat) and the
median is reported. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from . import REPO_ROOT
from . import measure as M
from .figures import FIGURES, applies, na_reason
from .report import format_table, write_chart
from tools.links import veth
from tools.node import Node, cleanup_stale, require_root
from tools.traffic import ping
from tools.wg import WgInterface, WgPeer, own_script, start_wg, wg_dump

PREFIX = "rvb"  # namespace prefix of benchmark nodes (tests use "rvt"); cleanup only touches ours
UNDERLAY = ("198.18.0.1/24", "198.18.0.2/24")
INNER = ("10.99.0.1/24", "10.99.0.2/24")
IFNAME = "bench0"
PORTS = (51820, 51821)
# IPv4 underlay with MTU 1500: 1500 - 20 (IPv4) - 8 (UDP) - 32 (WireGuard header + tag) = 1440, so the
# 1400-byte UDP payload test (1428-byte IP packets) fits the tunnel without fragmentation.
TUNNEL_MTU = 1440
# no per-handshake logging in either daemon while measuring; busy polling off unless the setup turns it
# on (an RAVENVPN_BUSY_POLL_US inherited from the caller's shell must not leak into the "ravenvpn" column)
DAEMON_ENV = {"LOG_LEVEL": "error", "RAVENVPN_BUSY_POLL_US": "0"}
BUSY_POLL_US = 50_000  # the ravenvpn-busypoll setup: poll 50 ms after traffic before sleeping again


@dataclasses.dataclass(frozen=True)
class SetupSpec:
    """Which implementation runs on node A and on node B (None: no tunnel, the raw veth) and what each
    setup adds to DAEMON_ENV for both of its daemons."""

    impl_a: str | None
    impl_b: str | None
    env: dict[str, str] = dataclasses.field(default_factory=dict)


SETUP_SPECS: dict[str, SetupSpec] = {
    "veth": SetupSpec(None, None),
    "wireguard-go": SetupSpec("wireguard-go", "wireguard-go"),
    "ravenvpn": SetupSpec("ravenvpn", "ravenvpn"),
    "ravenvpn-busypoll": SetupSpec("ravenvpn", "ravenvpn", {"RAVENVPN_BUSY_POLL_US": str(BUSY_POLL_US)}),
    "mixed": SetupSpec("ravenvpn", "wireguard-go"),
}
SETUPS = tuple(SETUP_SPECS)  # also the column order of the table (report.SETUP_ORDER)


@dataclasses.dataclass
class Params:
    repeat: int = 3
    seconds: int = 2  # iperf3 -t (integer seconds)
    pings: int = 200
    ping_interval: float = 0.01
    hs_initiators: int = 256
    hs_seconds: float = 2.0
    rss_peers: int = 1000
    quick: bool = False

    @classmethod
    def quick_mode(cls) -> "Params":
        return cls(repeat=1, seconds=1, pings=50, hs_initiators=32, hs_seconds=1.0, rss_peers=100, quick=True)


class DaemonDied(RuntimeError):
    pass


class SetupFailed(RuntimeError):
    pass


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = f"{exc}" or exc.__class__.__name__
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    msg = lines[0] if lines else exc.__class__.__name__
    # CommandError/RuntimeError from start_wg carry the daemon log after the first line: keep a hint
    for ln in lines[1:]:
        if ln.startswith("---"):
            continue
        msg += " | " + ln
        if len(msg) > limit:
            break
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


@dataclasses.dataclass
class SetupRun:
    """Samples, errors and raw details of one setup."""

    name: str
    impl_a: str | None
    impl_b: str | None
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # added to DAEMON_ENV for its daemons
    status: str = "ok"
    reason: str | None = None
    samples: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    errors: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def for_setup(cls, name: str) -> "SetupRun":
        spec = SETUP_SPECS[name]
        return cls(name, spec.impl_a, spec.impl_b, dict(spec.env))

    @property
    def daemon_env(self) -> dict[str, str]:
        """The environment variables both daemons of this setup are started with (on top of os.environ)."""
        return {**DAEMON_ENV, **self.env}

    def add(self, key: str, value: float | None) -> None:
        if value is None:
            self.errors.setdefault(key, []).append("no value")
        else:
            self.samples.setdefault(key, []).append(float(value))

    def fail(self, key: str, msg: str) -> None:
        self.errors.setdefault(key, []).append(msg)

    def figures(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for fig in FIGURES:
            entry: dict[str, Any] = {"unit": fig.unit, "value": None, "samples": [], "na": None, "error": None}
            if not applies(fig, self.name):
                entry["na"] = na_reason(fig, self.name)
            elif self.status != "ok" and not self.samples.get(fig.key):
                entry["error"] = f"{self.status}: {self.reason}"
            else:
                samples = self.samples.get(fig.key, [])
                entry["samples"] = samples
                if samples:
                    entry["value"] = statistics.median(samples)
                errs = self.errors.get(fig.key)
                if errs:
                    entry["errors"] = errs
                    if not samples:
                        entry["error"] = errs[0]
                if not samples and not errs:
                    entry["error"] = "not measured"
            out[fig.key] = entry
        return out


class Bench:
    """Brings all setups up, then measures them interleaved (one pass over every setup per repeat, in a
    rotating order), so slow drift of a noisy machine hits every setup alike. Idle daemons cost nothing
    measurable (checked: < 0.01 CPU s per 5 s; the busy-poll daemons too, they poll only for 50 ms after
    traffic), and CPU time is read per daemon process."""

    def __init__(self, params: Params, impl_cmds: dict[str, list[str]], log: Callable[[str], None]) -> None:
        self.p = params
        self.impl_cmds = impl_cmds
        self.log = log
        self._stacks: dict[str, contextlib.ExitStack] = {}
        self._envs: dict[str, dict[str, Any]] = {}

    # -- environment ------------------------------------------------------------------------------

    def _start(self, run: SetupRun, node: Node, impl: str, private: str, port: int, address: str | None,
               peers: list[WgPeer], ifname: str = IFNAME) -> WgInterface:
        return start_wg(node, self.impl_cmds[impl], ifname, private, port, [address] if address else [],
                        peers, mtu=TUNNEL_MTU, env=run.daemon_env)

    @contextlib.contextmanager
    def environment(self, run: SetupRun) -> Iterator[dict[str, Any]]:
        with Node("a", prefix=PREFIX) as a, Node("b", prefix=PREFIX) as b:
            link = veth(a, b, UNDERLAY[0], UNDERLAY[1])
            env: dict[str, Any] = {"a": a, "b": b, "link": link, "target": link.ip_b, "ifaces": {}}
            if run.impl_a is not None:
                assert run.impl_b is not None
                ka, kb = _keypair(), _keypair()
                try:
                    env["ifaces"]["a"] = self._start(run, a, run.impl_a, ka[0], PORTS[0], INNER[0],
                                                     [WgPeer(kb[1], ["10.99.0.2/32"], f"{link.ip_b}:{PORTS[1]}")])
                    env["ifaces"]["b"] = self._start(run, b, run.impl_b, kb[0], PORTS[1], INNER[1],
                                                     [WgPeer(ka[1], ["10.99.0.1/32"], f"{link.ip_a}:{PORTS[0]}")])
                except Exception as exc:
                    raise SetupFailed(f"daemon did not start: {_one_line(exc)}") from exc
                env["keys"] = {"a": ka, "b": kb}
                env["target"] = INNER[1].split("/")[0]
                first = ping(a, env["target"], count=1, deadline=10, wait=1)
                if not first.ok:
                    logs = " / ".join(f"{s}: {i.log_text().strip()[-200:]}" for s, i in env["ifaces"].items())
                    raise SetupFailed(f"no ping reply through the tunnel within 10 s (daemon logs: {logs or '-'})")
                run.info["first_ping_ms"] = first.rtts[0] if first.rtts else None
                env["cpu_pids"] = {"a": M.daemon_pids(env["ifaces"]["a"]), "b": M.daemon_pids(env["ifaces"]["b"])}
            yield env

    @contextlib.contextmanager
    def _guard(self, run: SetupRun, phase: str) -> Iterator[None]:
        """Turn a setup-level failure into "failed: <reason>" for that setup only (and tear it down)."""
        t0 = time.monotonic()
        try:
            yield
        except (DaemonDied, SetupFailed) as exc:
            self._fail(run, _one_line(exc))
        except (KeyboardInterrupt, SystemExit):
            if run.status == "ok":
                run.status, run.reason = "interrupted", f"interrupted during {phase}"
            raise
        except Exception as exc:  # a bug or an environment problem: report it, keep the other setups
            run.info.setdefault("tracebacks", []).append(traceback.format_exc())
            self._fail(run, f"{phase}: {_one_line(exc)}")
        finally:
            run.seconds = round(run.seconds + time.monotonic() - t0, 1)

    def _fail(self, run: SetupRun, reason: str) -> None:
        run.status, run.reason = "failed", reason
        self.log(f"  {run.name}: failed: {reason}")
        stack = self._stacks.pop(run.name, None)
        self._envs.pop(run.name, None)
        if stack is not None:
            with contextlib.suppress(Exception):
                stack.close()

    def _check_daemons(self, env: dict[str, Any]) -> None:
        for side, iface in env["ifaces"].items():
            if not iface.stopped and not iface.daemon_alive():
                raise DaemonDied(f"daemon {side} ({iface.impl_cmd[0]}) exited; log: "
                                 f"{iface.log_text().strip()[-300:] or '-'}")

    def _measure(self, run: SetupRun, env: dict[str, Any], what: str, keys: list[str], rep: int,
                 fn: Callable[[], dict[str, Any]]) -> None:
        """Run one measurement, record its figures; on failure record the error for ``keys`` and go on.
        A dead daemon (DaemonDied) fails the whole setup instead."""
        t0 = time.monotonic()
        record: dict[str, Any] = {"what": what, "rep": rep}
        try:
            self._check_daemons(env)
            values = fn()
            for k, v in values.items():
                if isinstance(v, str):
                    run.fail(k, v)
                else:
                    run.add(k, v)
            record["values"] = values
        except DaemonDied:
            raise
        except Exception as exc:
            msg = _one_line(exc)
            self._check_daemons(env)  # failed because a daemon died: that fails the setup (DaemonDied)
            for k in keys:
                run.fail(k, msg)
            record["error"] = msg
            self.log(f"    {run.name} / {what}: FAILED: {msg}")
        finally:
            record["seconds"] = round(time.monotonic() - t0, 3)
            run.runs.append(record)

    # -- orchestration ------------------------------------------------------------------------------

    def run_all(self, runs: list[SetupRun]) -> None:
        p = self.p
        try:
            for run in runs:
                self.log(f"- {run.name}: setting up")
                with self._guard(run, "setup"):
                    stack = contextlib.ExitStack()
                    self._stacks[run.name] = stack
                    self._envs[run.name] = stack.enter_context(self.environment(run))
            for rep in range(p.repeat):
                live = [r for r in runs if r.name in self._envs]
                order = live[rep % len(live):] + live[: rep % len(live)] if live else []
                self.log(f"- pass {rep + 1}/{p.repeat}: {', '.join(r.name for r in order) or '(nothing left)'}")
                for run in order:
                    if run.name in self._envs:
                        with self._guard(run, f"pass {rep + 1}"):
                            self._pass(run, self._envs[run.name], rep)
            tunnels = [r for r in runs if r.name in self._envs and self._envs[r.name]["ifaces"]]
            for run in tunnels:
                with self._guard(run, "rss after runs"):
                    env = self._envs[run.name]
                    self._measure(run, env, "rss after runs", ["rss_a", "rss_b"], 0, lambda: {
                        "rss_a": M.proc_status_kib(M.daemon_pids(env["ifaces"]["a"]), "VmHWM") / 1024,
                        "rss_b": M.proc_status_kib(M.daemon_pids(env["ifaces"]["b"]), "VmHWM") / 1024,
                    })
                    run.info["wg_show_b"] = _wg_counters(env["b"])
            singles = [r for r in tunnels if r.impl_a == r.impl_b]
            if singles:
                self.log(f"- handshake load: {', '.join(r.name for r in singles)}")
            hs_cfgs: dict[str, dict[str, Any]] = {}
            for run in singles:
                with self._guard(run, "handshake setup"):
                    cfg = self._handshake_setup(run, self._envs[run.name])
                    if cfg is not None:
                        hs_cfgs[run.name] = cfg
            for rep in range(p.repeat):
                live = [r for r in singles if r.name in hs_cfgs and r.name in self._envs]
                order = live[rep % len(live):] + live[: rep % len(live)] if live else []
                for run in order:
                    with self._guard(run, "handshake load"):
                        self._handshake_once(run, self._envs[run.name], hs_cfgs[run.name], rep)
            if singles:
                self.log(f"- RSS with {p.rss_peers} peers: {', '.join(r.name for r in singles)}")
            for run in singles:
                if run.name in self._envs:
                    with self._guard(run, "rss with peers"):
                        env = self._envs[run.name]
                        for side in ("a", "b"):
                            env["ifaces"][side].stop()
                        self._rss_peers(run, env)
        finally:
            for name in list(self._stacks):
                stack = self._stacks.pop(name)
                with contextlib.suppress(Exception):
                    stack.close()
            self._envs.clear()

    def _pass(self, run: SetupRun, env: dict[str, Any], rep: int) -> None:
        """One measurement of every data-plane figure."""
        p = self.p
        a, b, target = env["a"], env["b"], env["target"]
        cpu_pids = env.get("cpu_pids")
        load_count = max(10, min(p.pings, round((p.seconds - 0.8) / p.ping_interval)))
        load_ping = {"count": load_count, "interval": p.ping_interval, "delay": 0.5}
        self._measure(run, env, "ping idle", ["ping_idle_p50", "ping_idle_p99"], rep,
                      lambda: _ping_values(M.ping_idle(a, target, p.pings, p.ping_interval), "idle"))
        self._measure(run, env, "tcp1 up (+ping under load, cpu)",
                      ["tcp1_up", "ping_load_p50", "ping_load_p99", "cpu_per_gb_a", "cpu_per_gb_b"], rep,
                      lambda: _tcp_values(run, M.tcp(a, b, target, p.seconds, cpu_pids=cpu_pids, load_ping=load_ping),
                                          "tcp1_up"))
        self._measure(run, env, "tcp1 down", ["tcp1_down"], rep,
                      lambda: _tcp_values(run, M.tcp(a, b, target, p.seconds, reverse=True), "tcp1_down"))
        self._measure(run, env, "tcp4 up", ["tcp4_up"], rep,
                      lambda: _tcp_values(run, M.tcp(a, b, target, p.seconds, parallel=4), "tcp4_up"))
        self._measure(run, env, "tcp4 down", ["tcp4_down"], rep,
                      lambda: _tcp_values(run, M.tcp(a, b, target, p.seconds, reverse=True, parallel=4), "tcp4_down"))
        self._measure(run, env, "udp 64", ["udp64_pps", "udp64_loss"], rep,
                      lambda: _udp_values(run, M.udp(a, b, target, p.seconds, 64), "udp64"))
        self._measure(run, env, "udp 1400", ["udp1400_pps", "udp1400_loss", "udp1400_goodput"], rep,
                      lambda: _udp_values(run, M.udp(a, b, target, p.seconds, 1400), "udp1400"))

    def _handshake_setup(self, run: SetupRun, env: dict[str, Any]) -> dict[str, Any] | None:
        """Configure B's daemon with one peer per simulated initiator (+1 verifier), give node A one source
        address per initiator; returns the generator's config (see benchmarks/hsload.py)."""
        from ravenvpn.protocol import keys as rk

        p, a, b, link = self.p, env["a"], env["b"], env["link"]
        keys = [rk.generate_private() for _ in range(p.hs_initiators + 1)]
        pubs = [rk.b64encode(rk.public_from_private(k)) for k in keys]
        sources = M.hs_source_ips(p.hs_initiators)

        def prepare() -> dict[str, Any]:
            M.add_source_ips(a, b, link.name_a, link.name_b, sources)
            M.addconf(b, IFNAME, M.peers_conf(pubs, net=200))
            return {}

        self._measure(run, env, "handshake setup", ["hs_responses", "hs_cookies"], 0, prepare)
        if run.errors.get("hs_responses"):
            return None
        return {
            "responder_ip": link.ip_b,
            "responder_port": PORTS[1],
            "responder_public_key": env["ifaces"]["b"].public_key,
            "verifier_private_key": rk.b64encode(keys[-1]),
            "verifier_source_ip": link.ip_a,
            "initiator_private_keys": [rk.b64encode(k) for k in keys[:-1]],
            "source_ips": sources,
            "duration": p.hs_seconds,
        }

    def _handshake_once(self, run: SetupRun, env: dict[str, Any], cfg: dict[str, Any], rep: int) -> None:
        def once() -> dict[str, Any]:
            res = M.handshake_load(env["a"], cfg, timeout=self.p.hs_seconds + 60)
            run.info.setdefault("handshakes", []).append(res)
            return {"hs_responses": res["responses_per_s"], "hs_cookies": res["cookie_replies_per_s"]}

        self._measure(run, env, "handshakes", ["hs_responses", "hs_cookies"], rep, once)

    def _rss_peers(self, run: SetupRun, env: dict[str, Any]) -> None:
        """A fresh daemon (no traffic ever) in node B: RSS idle, then peak RSS with N configured peers."""
        from ravenvpn.protocol import keys as rk

        p, b = self.p, env["b"]
        impl = run.impl_b
        assert impl is not None

        def measure() -> dict[str, Any]:
            iface = self._start(run, b, impl, env["keys"]["b"][0], 51900, None, [], ifname="rss0")
            env["ifaces"]["rss"] = iface
            try:
                pids = M.daemon_pids(iface)
                time.sleep(0.3)
                idle = M.proc_status_kib(pids, "VmRSS") / 1024
                pubs = [rk.b64encode(rk.public_from_private(rk.generate_private())) for _ in range(p.rss_peers)]
                M.addconf(b, "rss0", M.peers_conf(pubs, net=100))
                n = M.peer_count(b, "rss0")
                if n != p.rss_peers:
                    raise RuntimeError(f"daemon reports {n} peers after configuring {p.rss_peers}")
                time.sleep(0.3)
                peak = M.proc_status_kib(pids, "VmHWM") / 1024
                run.info["rss_peers_vmrss_mib"] = M.proc_status_kib(pids, "VmRSS") / 1024
                run.info["rss_peers_n"] = p.rss_peers
                return {"rss_idle": idle, "rss_peers": peak}
            finally:
                iface.stop()

        self._measure(run, env, f"rss with {p.rss_peers} peers", ["rss_idle", "rss_peers"], 0, measure)


def _keypair() -> tuple[str, str]:
    """(private, public) base64 keys, generated in-process (no `wg genkey` round trips)."""
    from ravenvpn.protocol import keys as rk

    priv = rk.generate_private()
    return rk.b64encode(priv), rk.b64encode(rk.public_from_private(priv))


def _ping_values(summary: dict[str, Any], tag: str) -> dict[str, float | None]:
    return {f"ping_{tag}_p50": summary["p50"], f"ping_{tag}_p99": summary["p99"]}


def _tcp_values(run: SetupRun, res: dict[str, Any], key: str) -> dict[str, Any]:
    values: dict[str, Any] = {key: res["bps"]}
    if "cpu_per_gb" in res:
        values["cpu_per_gb_a"] = res["cpu_per_gb"]["a"]
        values["cpu_per_gb_b"] = res["cpu_per_gb"]["b"]
    if "ping" in res:
        values.update(_ping_values(res["ping"], "load"))
    elif "ping_error" in res:
        values["ping_load_p50"] = values["ping_load_p99"] = res["ping_error"]
    run.runs.append({"what": f"{key} detail", "detail": {k: v for k, v in res.items() if k != "bps"}})
    return values


def _udp_values(run: SetupRun, res: dict[str, Any], tag: str) -> dict[str, float | None]:
    run.runs.append({"what": f"{tag} detail", "detail": res["detail"]})
    values: dict[str, float | None] = {f"{tag}_pps": res["pps"], f"{tag}_loss": res["loss"]}
    if tag == "udp1400":
        values["udp1400_goodput"] = res["goodput_bps"]
    return values


def _wg_counters(node: Node) -> dict[str, Any]:
    with contextlib.suppress(Exception):
        d = wg_dump(node, IFNAME)
        return {pk[:8]: {"rx": p.rx_bytes, "tx": p.tx_bytes, "handshake": p.latest_handshake}
                for pk, p in d.peers.items()}
    return {}


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 repeat, 1 s runs, 50 pings, 32 initiators, 100 peers: proves the harness works")
    ap.add_argument("--repeat", type=int, help="runs per figure, the median is reported (default 3, quick 1)")
    ap.add_argument("--seconds", type=int, help="iperf3 run length in whole seconds (default 2, quick 1)")
    ap.add_argument("--peers", type=int, help="peers configured for the RSS figure (default 1000, quick 100)")
    ap.add_argument("--initiators", type=int, help="simulated handshake initiators (default 256, quick 32)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results",
                    help="results go to DIR/<timestamp>/ (default benchmarks/results)")
    ap.add_argument("--only", help=f"comma-separated subset of: {','.join(SETUPS)}")
    ap.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    ap.add_argument("--ravenvpn-cmd", default=None,
                    help="ravenvpn daemon command (default: the ravenvpn-wg installed with this interpreter)")
    ap.add_argument("--wireguard-go-cmd", default="wireguard-go", help="wireguard-go command")
    args = ap.parse_args(argv)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        bad = [n for n in names if n not in SETUPS]
        if bad or not names:
            ap.error(f"--only: unknown setup(s) {','.join(bad)}; choose from {','.join(SETUPS)}")
        args.setups = [s for s in SETUPS if s in names]
    else:
        args.setups = list(SETUPS)
    for name in ("repeat", "seconds", "peers", "initiators"):
        v = getattr(args, name)
        if v is not None and v < 1:
            ap.error(f"--{name} must be >= 1")
    return args


def _environment_info(params: Params, impl_cmds: dict[str, list[str]]) -> dict[str, Any]:
    commit = "unknown"
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or "unknown"
    with contextlib.suppress(Exception):
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain"], capture_output=True,
                               text=True, timeout=5).stdout.strip()
        if dirty:
            commit += "+dirty"
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "git": commit,
        "wireguard-go": M.tool_version(impl_cmds["wireguard-go"] + ["--version"]),
        "ravenvpn-wg": M.cmd_str(impl_cmds["ravenvpn"]),
        "ravenvpn-python": M.script_interpreter(impl_cmds["ravenvpn"][0]),
        "iperf3": M.tool_version(["iperf3", "--version"]),
        "params": dataclasses.asdict(params),
        "tunnel_mtu": TUNNEL_MTU,
        "loadavg_end": _loadavg(),
        "other_netns": len(_other_namespaces()),
    }


def _other_namespaces() -> list[str]:
    with contextlib.suppress(OSError):
        return [p.name for p in Path("/run/netns").iterdir() if not p.name.startswith(PREFIX + "-")]
    return []


def _loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = Params.quick_mode() if args.quick else Params()
    if args.repeat:
        params.repeat = args.repeat
    if args.seconds:
        params.seconds = args.seconds
    if args.peers:
        params.rss_peers = args.peers
    if args.initiators:
        params.hs_initiators = args.initiators
    impl_cmds = {"wireguard-go": args.wireguard_go_cmd.split(),
                 "ravenvpn": args.ravenvpn_cmd.split() if args.ravenvpn_cmd else [own_script("ravenvpn-wg")]}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        require_root()
    except RuntimeError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_on_sigterm)  # clean up namespaces on `kill` as on Ctrl-C
    # Ctrl-C must interrupt even when started from a context that ignores SIGINT (background jobs)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cleanup_stale(PREFIX)  # leftovers of a benchmark run that was killed hard
    others = _other_namespaces()
    if others:
        log(f"warning: {len(others)} other network namespaces exist (tests running?): figures will be noisier")
    load_start = _loadavg()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = args.out / stamp
    bench = Bench(params, impl_cmds, log)
    runs = [SetupRun.for_setup(name) for name in args.setups]
    t0 = time.monotonic()
    interrupted = False
    log(f"benchmarks: {', '.join(args.setups)}; {params.repeat} repeat(s), {params.seconds} s runs"
        f"{' (quick)' if params.quick else ''}")
    try:
        bench.run_all(runs)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: cleaning up and writing partial results")
        for run in runs:
            if run.status == "ok":  # the figures it has are real, but the run is incomplete
                run.status, run.reason = "interrupted", "run interrupted before this setup finished"
    finally:
        with contextlib.suppress(Exception):
            cleanup_stale(PREFIX)
    total = time.monotonic() - t0

    results = {
        "timestamp": stamp,
        "seconds": round(total, 1),
        "interrupted": interrupted,
        "environment": {**_environment_info(params, impl_cmds), "loadavg_start": load_start,
                        "other_netns_start": len(others)},
        "setups": {
            r.name: {
                "impl_a": r.impl_a, "impl_b": r.impl_b,
                "daemon_env": r.daemon_env if r.impl_a is not None else None,
                "status": r.status, "reason": r.reason,
                "seconds": r.seconds, "figures": r.figures(), "info": r.info, "runs": r.runs,
            }
            for r in runs
        },
    }
    table = format_table(results, params)
    print(table)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (outdir / "table.txt").write_text(table + "\n")
    if args.no_chart:
        pass
    else:
        note = write_chart(results, outdir / "chart.png")
        if note:
            print(note)
    print(f"results: {outdir / 'results.json'}  ({total:.0f} s)")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())

"""The text table and the (optional, matplotlib) PNG chart of a results dict made by ``benchmarks.run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .figures import FIGURES, Figure

SETUP_ORDER = ("veth", "wireguard-go", "ravenvpn", "ravenvpn-busypoll", "mixed")  # = run.SETUPS


def _cell(fig: Figure, entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    if entry.get("na"):
        return f"n/a ({entry['na']})" if entry["na"] in ("kernel",) else "n/a"
    if entry.get("value") is None:
        return "-" if str(entry.get("error", "")).startswith("interrupted") else "failed"
    return fig.fmt(entry["value"])


def _ratio(entry_num: dict[str, Any] | None, entry_den: dict[str, Any] | None) -> str:
    if not entry_num or not entry_den:
        return ""
    a, b = entry_num.get("value"), entry_den.get("value")
    if a is None or b is None or b == 0:
        return ""
    return f"{a / b:.2f}x"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _busy_poll_note(setup: dict[str, Any]) -> str:
    """What the ravenvpn-busypoll column is, with the polling time run.py recorded for its daemons."""
    us = (setup.get("daemon_env") or {}).get("RAVENVPN_BUSY_POLL_US")
    try:
        var, how_long = f"RAVENVPN_BUSY_POLL_US={int(us)}", f"{int(us) / 1000:g} ms"
    except (TypeError, ValueError):
        var, how_long = "RAVENVPN_BUSY_POLL_US", "a while"
    return (f"ravenvpn-busypoll = ravenvpn with {var} on both daemons: they keep polling for {how_long} after "
            f"traffic instead of sleeping (so they use a core while traffic flows).")


def format_table(results: dict[str, Any], params: Any = None) -> str:
    setups = [s for s in SETUP_ORDER if s in results["setups"]]
    data = results["setups"]
    header = ["figure", "unit", *setups]
    ratio_cols: list[tuple[str, str, str]] = []
    if "ravenvpn" in setups and "wireguard-go" in setups:
        ratio_cols.append(("ravenvpn/wg-go", "ravenvpn", "wireguard-go"))
    if "ravenvpn-busypoll" in setups and "wireguard-go" in setups:
        ratio_cols.append(("busypoll/wg-go", "ravenvpn-busypoll", "wireguard-go"))
    if "ravenvpn" in setups and "veth" in setups:
        ratio_cols.append(("ravenvpn/veth", "ravenvpn", "veth"))
    header += [c[0] for c in ratio_cols]
    rows: list[list[str]] = []
    status_row = ["status", ""]
    for s in setups:
        st = data[s]["status"]
        status_row.append("ok" if st == "ok" else _fit(f"{st}: {data[s].get('reason') or ''}", 34))
    rows.append(status_row + [""] * len(ratio_cols))
    for fig in FIGURES:
        label = fig.label
        if fig.key == "rss_peers":
            n = next((data[s]["info"].get("rss_peers_n") for s in setups if data[s]["info"].get("rss_peers_n")),
                     getattr(params, "rss_peers", None))
            if n:
                label = label.replace("N peers", f"{n} peers")
        arrow = "+" if fig.higher_is_better else "-"
        row = [f"{label} [{arrow}]", fig.shown_unit]
        for s in setups:
            row.append(_cell(fig, data[s]["figures"].get(fig.key)))
        for _, num, den in ratio_cols:
            row.append(_ratio(data[num]["figures"].get(fig.key), data[den]["figures"].get(fig.key)))
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    sep = "-+-".join("-" * w for w in widths)

    def line(r: list[str]) -> str:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])] + [c.rjust(w) for c, w in zip(r[2:], widths[2:])]
        return " | ".join(cells)

    out = [line(header), sep, *(line(r) for r in rows)]
    env = results.get("environment", {})
    p = env.get("params", {})
    out.append("")
    out.append(
        f"[+] higher is better, [-] lower is better; median of {p.get('repeat', '?')} run(s) of "
        f"{p.get('seconds', '?')} s; A = iperf3 client/pinger, B = server; mixed = ravenvpn on A, wireguard-go on B."
    )
    if env.get("ravenvpn-python"):
        out.append(f"ravenvpn-wg runs on {env['ravenvpn-python']}; wireguard-go is {env.get('wireguard-go', '?')}.")
    if "ravenvpn-busypoll" in setups:
        out.append(_busy_poll_note(data["ravenvpn-busypoll"]))
    busypoll_ratio = any(c[1] == "ravenvpn-busypoll" for c in ratio_cols)
    out.append(
        f"Ratios divide the ravenvpn value{' (busypoll/wg-go: the ravenvpn-busypoll value)' if busypoll_ratio else ''}"
        f" by the other column for every figure: for [+] rows < 1 is worse, for [-] rows > 1 is worse."
    )
    for s in setups:
        d = data[s]
        if d["status"] != "ok":
            out.append(f"{s}: {d['status']}: {d.get('reason')}")
        for key, entry in d["figures"].items():
            if entry.get("error") and d["status"] == "ok":
                out.append(f"{s} / {key}: failed: {entry['error']}")
        hs = d.get("info", {}).get("handshakes")
        if hs:
            last = hs[-1]
            out.append(
                f"{s}: handshake load, last run: {last['initiators']} initiators, sent {last['sent_per_s']:.0f}/s, "
                f"responses {last['responses_per_s']:.0f}/s, cookie replies {last['cookie_replies_per_s']:.0f}/s, "
                f"timeouts {last['timeouts']}, latency p50 {last.get('latency_p50_ms') or 0:.1f} ms, "
                f"generator CPU busy {last['generator_busy']:.0%}"
            )
    out.append(f"total {results.get('seconds', '?')} s; {env.get('cpus', '?')} CPUs, kernel {env.get('kernel', '?')}, "
               f"{env.get('wireguard-go', '')}, git {env.get('git', '?')}, load average at start "
               f"{env.get('loadavg_start', '?')}, other netns {env.get('other_netns_start', '?')}")
    return "\n".join(out)


# figures drawn in the chart (a subset: one panel each)
CHART_KEYS = ("tcp1_up", "tcp1_down", "tcp4_up", "tcp4_down", "udp64_pps", "udp1400_pps", "ping_idle_p50",
              "ping_load_p99", "cpu_per_gb_b", "rss_peers", "hs_responses", "udp64_loss")
COLORS = {"veth": "#888888", "wireguard-go": "#1f77b4", "ravenvpn": "#d62728", "ravenvpn-busypoll": "#ff7f0e",
          "mixed": "#9467bd"}


def write_chart(results: dict[str, Any], path: Path) -> str | None:
    """Draw a grid of bar charts (one per figure, one bar per setup). Returns a note instead when
    matplotlib is not installed (it is an optional dependency: ``pip install -e '.[bench]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "note: matplotlib not installed, no chart (pip install -e '.[bench]')"
    from .figures import FIGURE_BY_KEY

    setups = [s for s in SETUP_ORDER if s in results["setups"]]
    keys = [k for k in CHART_KEYS if k in FIGURE_BY_KEY]
    cols = 4
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        f = FIGURE_BY_KEY[key]
        vals, labels, colors = [], [], []
        for s in setups:
            entry = results["setups"][s]["figures"].get(key) or {}
            v = entry.get("value")
            labels.append(s)
            colors.append(COLORS.get(s, "#333333"))
            vals.append(v * f.scale if v is not None else 0.0)
        bars = ax.bar(range(len(setups)), vals, color=colors)
        positive = [v for v in vals if v > 0]
        if positive and max(positive) / min(positive) > 30:
            ax.set_yscale("log")  # the raw veth is often 50x the tunnels: keep the tunnels readable
        for bar, s, v in zip(bars, setups, vals):
            entry = results["setups"][s]["figures"].get(key) or {}
            x = bar.get_x() + bar.get_width() / 2
            if entry.get("value") is None:
                ax.text(x, 0.02, "n/a" if entry.get("na") else "failed", ha="center", va="bottom", fontsize=7,
                        transform=ax.get_xaxis_transform())
            else:
                ax.text(x, v, f.fmt(entry["value"]), ha="center", va="bottom", fontsize=6)
        ax.set_xticks(range(len(setups)))
        ax.set_xticklabels(labels, fontsize=7, rotation=20, ha="right")  # ravenvpn-busypoll is long
        ax.set_title(f"{f.label} ({f.shown_unit})\n{'higher' if f.higher_is_better else 'lower'} is better",
                     fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"ravenvpn benchmarks {results.get('timestamp', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None

"""A one-minute soak (the 10-minute one is ``python3 -m benchmarks.reliability soak``): traffic, a UAPI
change every second, a rekey every 10 s and roaming every 15 s. Asserts survival; the RSS/fd growth per
hour is a figure of the command (a minute is too short to tell growth from warm-up)."""
from __future__ import annotations

from benchmarks import reliability as R


def test_soak_one_minute_traffic_churn_rekeys_roaming(node_factory) -> None:
    r = R.soak(node_factory, seconds=60, rekey_after=10)
    assert r["daemons_alive"], r
    assert not r["log_problems"], r["log_problems"]
    assert not r["churn_errors"], r["churn_errors"]
    assert r["churn_ops"] >= 40 and r["roams"] >= 3, r
    assert r["tcp_runs"] >= 3 and not r["tcp_errors"], r
    assert r["ping_after_ok"], r
    assert r["ping"]["received"] >= 0.8 * r["ping"]["transmitted"], r["ping"]
    # bounded: a minute of this must not grow either daemon by more than 32 MiB or 16 descriptors
    for k in ("a", "b"):
        assert max(r[f"rss_kib_{k}"]) - r[f"rss_kib_{k}"][0] < 32 * 1024, r[f"rss_kib_{k}"]
        assert max(r[f"fds_{k}"]) - r[f"fds_{k}"][0] <= 16, r[f"fds_{k}"]


def test_growth_per_hour_is_the_slope_after_warmup() -> None:
    samples = [(float(t), 1000 + (500 if t < 10 else 0) + 2 * t) for t in range(0, 100, 5)]
    assert abs(R.growth_per_hour(samples) - 7200) < 1

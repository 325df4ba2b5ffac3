"""Fault-tolerant pairs: what the lock-step costs the primary, the log's rate, the lag.

    uv run python benchmarks/bench_ft.py [--seconds S]

Two real host processes. The same guest (hog under native: it never waits, so its rate is
the host's) runs first alone, then as an FT pair whose backup is on the other host, each for
S seconds; printed: each one's guest instructions per second and their ratio, the log's
bytes per second, and how many steps the backup was behind at the last acknowledgement.
Then the course kernel as a pair, typed at: the log of a guest that takes input.
A benchmark, not a test: it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import time

from vmlab.cluster import Cluster


def rate(cluster: Cluster, vm: str, seconds: float) -> tuple[float, dict]:
    host = cluster.host(cluster.placed[vm])
    first = _row(cluster, host, vm)
    time.sleep(seconds)
    last = _row(cluster, host, vm)
    return (last["step"] - first["step"]) / seconds, last


def _row(cluster: Cluster, host, vm: str) -> dict:
    return next(v for v in cluster.call(host, "list")[0]["vms"] if v["name"] == vm)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    seconds = parser.parse_args().seconds
    cluster = Cluster.start(2, every=3600.0)
    try:
        cluster.create("hog", "native", "alone")
        alone, _ = rate(cluster, "alone", seconds)
        cluster.call(cluster.host(cluster.placed.pop("alone")), "destroy", vm="alone")
        cluster.fault_tolerant("hog", "native", "pair")
        paired, row = rate(cluster, "pair", seconds)
        print(f"hog alone:      {alone:14,.0f} guest instructions/s")
        print(
            f"hog as FT pair: {paired:14,.0f} guest instructions/s  ({paired / alone:.2f}× alone)"
        )
        print(f"   log {row['log_rate']:,.0f} bytes/s, backup {row['lag']:,} steps behind")
        cluster.fault_tolerant("course", "trap", "k")
        for text in ("hello", " world", " again"):
            cluster.give("k", "keyboard", text)
        time.sleep(1.0)
        k = _row(cluster, cluster.host(cluster.placed["k"]), "k")
        print(
            f"course, typed at: log {k['log_bytes']:,} bytes in all "
            f"({k['log_rate']:,.0f} bytes/s), backup {k['lag']:,} steps behind"
        )
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()

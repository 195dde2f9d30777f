"""`python -m bench.console` on a small data set: every page it times answers 200 (it raises
otherwise), and the generated sessions are the ones the index lists."""

from __future__ import annotations

import argparse

from bench.console import measure


async def test_the_console_bench_runs_on_a_small_data_set():
    args = argparse.Namespace(sessions=120, audit_mb=1, policies=3, sockets=4, repeat=1, json=True)
    results = await measure(args)
    assert results["sessions"] == 120 and results["audit_log_mb"] >= 0.99
    assert len(results["pages"]) == 9 and all(p["median_ms"] > 0 for p in results["pages"].values())
    assert results["pages"]["sessions list, first page"]["kb"] > 5  # a full page of rows, not an empty list

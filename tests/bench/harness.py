"""Load generation and reporting shared by the benchmarks.

Servers run in child processes, the load generator here, so neither steals
the other's event loop. Variants are measured interleaved (A B A B ...) and
the median kept: these machines are noisy, so only ratios within one run count.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# A benchmark is one client firing hundreds of calls a second: the per-caller limits
# (docs/limits.md) would measure the rate limiter, not the server. Their own cost stays in.
BENCH_CALLER_LIMITS: dict[str, Any] = {
    "rate_limit_per_second": 1_000_000.0, "rate_limit_burst": 1_000_000,
    "max_streams_per_caller": 100_000, "max_uploads_per_caller": 1_000,
    "max_bots_per_user": 1_000_000, "max_active_backtests_per_user": 1_000_000,
    "max_custom_bot_versions_per_user": 1_000_000,
}


@dataclass(frozen=True)
class LoadResult:
    calls: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_load(call: Callable[[], Awaitable[object]], *, concurrency: int, seconds: float) -> LoadResult:
    """Run ``call`` from ``concurrency`` workers for ``seconds``; record each latency."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while (start := time.perf_counter()) < deadline:
            await call()
            latencies.append((time.perf_counter() - start) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(len(latencies), time.perf_counter() - started, latencies)


def median_result(results: list[LoadResult]) -> LoadResult:
    return sorted(results, key=lambda r: r.throughput)[len(results) // 2]


def report(title: str, rows: dict[str, LoadResult], *, baseline: str, target: str) -> float:
    base = rows[baseline].throughput
    print(f"\n== {title}")
    print(f"{'variant':<34}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}")
    for name, r in rows.items():
        print(f"{name:<34}{r.throughput:>10.0f}{r.percentile(0.5):>9.2f}{r.percentile(0.99):>9.2f}"
              f"{r.throughput / base:>8.2f}")
    ratio = statistics.fmean(r.throughput for n, r in rows.items() if n != baseline) / base
    print(f"target: {target}")
    return ratio


def start_in_child(target: Callable[..., None], *args: object) -> tuple[mp.Process, int]:
    """Start ``target(port_queue, *args)`` in a child; it must put its bound port on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(queue, *args), daemon=True)
    process.start()
    return process, queue.get(timeout=60)

"""Run benchmarks: `python -m tests.bench` (all) or `python -m tests.bench NAME ...`."""

from __future__ import annotations

import asyncio
import sys

from tests.bench import (
    auth,
    backtests,
    bot_logs,
    bots,
    custom_bots,
    interceptors,
    outbox,
    versus_nestjs,
    workers,
)

BENCHMARKS = {
    "interceptors": interceptors.run,
    "bots": bots.run,
    "auth": auth.run,
    "custom_bots": custom_bots.run, "outbox": outbox.run,
    "backtests": backtests.run,
    "bot_logs": bot_logs.run,
    "versus_nestjs": versus_nestjs.run,
    "workers": workers.run,
}


def main(names: list[str]) -> None:
    unknown = set(names) - BENCHMARKS.keys()
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; choose from {sorted(BENCHMARKS)}")
    for name in names or list(BENCHMARKS):
        ratio = asyncio.run(BENCHMARKS[name]())
        print(f"{name}: ratio {ratio:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Backtest of the SMA crossover over a list of closes given in the config."""

from __future__ import annotations

from typing import Any

from main import decide


def main(backtest_id: str, config: dict[str, Any]) -> dict[str, Any]:
    closes = [float(c) for c in config["closes"]]
    fast, slow = int(config.get("fast_period", 10)), int(config.get("slow_period", 30))
    cash, units, trades = float(config.get("initial_cash", 10_000)), 0.0, 0
    for i in range(slow + 1, len(closes) + 1):
        signal, price = decide(closes[:i], fast, slow), closes[i - 1]
        if signal == "buy" and cash > 0:
            units, cash, trades = cash / price, 0.0, trades + 1
        elif signal == "sell" and units > 0:
            cash, units, trades = units * price, 0.0, trades + 1
    final = cash + units * closes[-1]
    return {"status": "success", "metrics": {"final_value": round(final, 2), "trades": trades}}


if __name__ == "__main__":
    print(main("local", {"closes": [10, 9, 8, 9, 11, 12, 10, 8, 7, 9, 12], "fast_period": 2, "slow_period": 3}))

"""SMA crossover bot: one decision per scheduled run.

The runtime calls ``main(bot_id, config)`` with the bot's config (validated by
the API against bot-schema.json) and records what it returns.
"""

from __future__ import annotations

from typing import Any


def sma(values: list[float], window: int) -> float:
    return sum(values[-window:]) / window


def decide(closes: list[float], fast: int, slow: int) -> str:
    """"buy" when the fast SMA crosses above the slow one, "sell" on the reverse, else "hold"."""
    if len(closes) < slow + 1:
        return "hold"
    before = sma(closes[:-1], fast) - sma(closes[:-1], slow)
    now = sma(closes, fast) - sma(closes, slow)
    if before <= 0 < now:
        return "buy"
    if before >= 0 > now:
        return "sell"
    return "hold"


def main(bot_id: str, config: dict[str, Any]) -> dict[str, Any]:
    closes = [float(c) for c in config.get("closes", [])]  # a real bot fetches candles here
    signal = decide(closes, int(config.get("fast_period", 10)), int(config.get("slow_period", 30)))
    return {"status": "success", "bot_id": bot_id, "symbol": config["symbol"], "signal": signal}


if __name__ == "__main__":
    print(main("local", {"symbol": "BTC/USDT", "fast_period": 2, "slow_period": 3,
                         "closes": [5, 4, 3, 2, 3, 6]}))

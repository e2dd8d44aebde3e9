"""Backtests: runs of a custom bot's backtest entrypoint, their lifecycle and results."""

"""Bots: configured, deployable instances of approved custom-bot versions (DESIGN.md §3)."""

"""Custom bots: the code users upload, its checks, storage and review (DESIGN.md §3)."""

"""One module per command group; each has install(root)."""

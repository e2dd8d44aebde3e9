"""Bot logs: lines the runtime publishes on JetStream, stored per bot, listed and followed."""

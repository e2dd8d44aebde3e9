"""The platform's internal API (the0.platform.v1): service accounts and what the runtime and analyzer fetch."""

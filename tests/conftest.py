"""Shared fixtures. Service fixtures live in tests/fixtures/*; they start real,
throwaway services on free ports. With CI set, a service that cannot start
fails the run instead of skipping."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.envoy",
    "tests.fixtures.server",
]

"""Development tools: ``make run`` (devstack), the fake runtime, publish_event and the
embedded child processes (nats-server, Envoy) that the dev stack and the tests start.

The production server (``the0.server``) never imports this package; these tools import
the server, not the other way round.
"""

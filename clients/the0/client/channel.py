"""Channel options shared by the sync and asyncio clients: message size, retries, default deadlines.

Retries are gRPC's own (the service config below), so they happen below the client, with exponential
backoff and jitter, and only for calls that can be repeated without a second effect: reads, watches,
revoking a key, and the three creating calls, which the client always sends with a ``request_id`` (the
server answers a repeated id with the first result).
"""

from __future__ import annotations

import json
from typing import Any

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 30.0
UPLOAD_TIMEOUT_SECONDS = 600.0

IDEMPOTENT_METHODS: dict[str, tuple[str, ...]] = {
    "the0.auth.v1.AuthService": ("GetCurrentUser",),
    "the0.api_key.v1.ApiKeyService": ("ListApiKeys", "RevokeApiKey"),
    "the0.bot.v1.BotService": (
        "ListBots", "GetBot", "CreateBot", "DeployBot", "WatchBot",
        "ListBotExecutions", "ListBotLogs", "StreamBotLogs",
    ),
    "the0.custom_bot.v1.CustomBotService": (
        "ListCustomBots", "GetCustomBot", "DownloadCustomBotArchive", "WatchCustomBot",
    ),
    "the0.backtest.v1.BacktestService": (
        "CreateBacktest", "ListBacktests", "GetBacktest", "GetBacktestResults", "GetBacktestLogs", "WatchBacktest",
    ),
    "the0.health.v1.HealthService": ("GetHealth",),
}

RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.2s",
    "maxBackoff": "3s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config() -> str:
    names = [{"service": service, "method": method} for service, methods in IDEMPOTENT_METHODS.items()
             for method in methods]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}]})


def channel_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config()),
    ]

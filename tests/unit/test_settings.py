"""Settings.from_env: defaults, every validation message, production requirements."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from the0.server.settings import DEFAULT_MAX_UPLOAD_BYTES, Settings, SettingsError, parse_duration

SECRET = "s" * 32
PROD = {"JWT_SECRET": SECRET, "THE0_SECRETS_KEY": f"s1:{SECRET}", "THE0_MAILER_KEY": f"m1:{SECRET}", "DATABASE_URL": "postgresql://u@db/the0", "NATS_URL": "nats://nats:4222"}


def problems(env: dict[str, str], *, dev_mode: bool = True) -> list[str]:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env, dev_mode=dev_mode)
    return info.value.problems


def test_dev_mode_defaults() -> None:
    s = Settings.from_env({}, dev_mode=True)
    assert s.dev_mode is True
    assert (s.database_url, s.nats_url, s.minio_endpoint, s.jwt_secret) == (None, None, None, None)
    assert s.jwt_expires_in == timedelta(minutes=15)
    assert s.frontend_url == "http://localhost:3000"
    assert (s.grpc_host, s.grpc_port, s.http_port) == ("0.0.0.0", 50051, 8080)
    assert s.data_dir == Path(".the0")
    assert s.max_upload_bytes == DEFAULT_MAX_UPLOAD_BYTES == 10 * 1024 * 1024
    assert s.log_level == "INFO"
    assert s.minio_use_ssl is False


def test_derived_paths(tmp_path: Path) -> None:
    s = Settings.from_env({"THE0_DATA_DIR": str(tmp_path)}, dev_mode=True)
    assert s.sqlite_path == tmp_path / "the0.db"
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'the0.db'}"
    assert s.object_store_dir == tmp_path / "objects"
    assert s.nats_store_dir == tmp_path / "nats"
    with_db = Settings.from_env({"DATABASE_URL": "postgres://u@h/db"}, dev_mode=True)
    assert with_db.effective_database_url == "postgresql+psycopg://u@h/db"


def test_blank_values_count_as_unset() -> None:
    s = Settings.from_env({"DATABASE_URL": "  ", "THE0_GRPC_PORT": "", "THE0_LOG_LEVEL": " "}, dev_mode=True)
    assert (s.database_url, s.grpc_port, s.log_level) == (None, 50051, "INFO")


def test_every_value_is_read() -> None:
    s = Settings.from_env(
        {
            **PROD,
            "MINIO_ENDPOINT": "minio:9000",
            "MINIO_ACCESS_KEY": "ak",
            "MINIO_SECRET_KEY": "sk",
            "MINIO_USE_SSL": "yes",
            "JWT_EXPIRES_IN": "1h",
            "FRONTEND_URL": "https://app.example.com/",
            "THE0_GRPC_HOST": "127.0.0.1",
            "THE0_GRPC_PORT": "0",
            "THE0_HTTP_PORT": "9090",
            "THE0_DATA_DIR": "/var/lib/the0",
            "THE0_MAX_UPLOAD_BYTES": "2048",
            "THE0_LOG_LEVEL": "debug",
            "THE0_RESET_MAILS_PER_EMAIL": "5",
        }
    )
    assert s.dev_mode is False
    assert (s.minio_endpoint, s.minio_access_key, s.minio_secret_key, s.minio_use_ssl) == (
        "minio:9000", "ak", "sk", True,
    )  # fmt: skip
    assert s.jwt_secret == SECRET and s.jwt_expires_in == timedelta(hours=1)
    assert s.frontend_url == "https://app.example.com"
    assert (s.grpc_host, s.grpc_port, s.http_port) == ("127.0.0.1", 0, 9090)
    assert s.data_dir == Path("/var/lib/the0")
    assert (s.max_upload_bytes, s.log_level) == (2048, "DEBUG")
    assert s.mailer_keys == (("m1", SECRET),) and s.reset_mails_per_email == 5


def test_secrets_are_not_in_repr() -> None:
    s = Settings.from_env({**PROD, "MINIO_ENDPOINT": "m:9000", "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "hush"})
    assert SECRET not in repr(s) and "hush" not in repr(s)


def test_settings_are_frozen() -> None:
    s = Settings.from_env({}, dev_mode=True)
    with pytest.raises(AttributeError):
        s.grpc_port = 1  # type: ignore[misc]


# -- production mode ---------------------------------------------------------------------------


def test_production_requires_secret_database_and_nats() -> None:
    assert problems({}, dev_mode=False) == [
        "JWT_SECRET is required outside dev mode (make run generates one)",
        (
            "THE0_SECRETS_KEY is required outside dev mode (kid:secret of 32+ bytes; make run generates one): "
            "it seals the secret fields of bot configs"
        ),
        (
            "THE0_MAILER_KEY is required outside dev mode (kid:secret of 32+ bytes; make run generates one): "
            "it seals the reset and verification tokens for the mailer"
        ),
        "DATABASE_URL and NATS_URL required outside dev mode (make run embeds them)",
    ]


@pytest.mark.parametrize("missing", ["DATABASE_URL", "NATS_URL"])
def test_production_names_the_missing_dependency(missing: str) -> None:
    env = {k: v for k, v in PROD.items() if k != missing}
    assert problems(env, dev_mode=False) == [f"{missing} required outside dev mode (make run embeds them)"]


def test_production_with_everything_is_valid() -> None:
    s = Settings.from_env(PROD)
    assert (s.database_url, s.nats_url) == ("postgresql+psycopg://u@db/the0", "nats://nats:4222")


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"THE0_GRPC_PORT": "x", "THE0_LOG_LEVEL": "loud"}, dev_mode=True)
    assert str(info.value) == (
        "invalid configuration:\n"
        "  - THE0_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'LOUD'\n"
        "  - THE0_GRPC_PORT must be a port number 0-65535, got 'x'"
    )
    assert isinstance(info.value, ValueError)


# -- URL normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db?sslmode=require", "postgresql+psycopg://u@h/db?sslmode=require"),
        ("sqlite:////data/the0.db", "sqlite:////data/the0.db"),
        ("sqlite+aiosqlite:////data/the0.db", "sqlite:////data/the0.db"),
    ],
)
def test_database_url_normalisation(raw: str, normalised: str) -> None:
    assert Settings.from_env({"DATABASE_URL": raw}, dev_mode=True).database_url == normalised


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("mysql://u@h/db", "DATABASE_URL must use postgresql:// or sqlite://, got scheme 'mysql'"),
        ("just-a-path.db", "DATABASE_URL must be a URL like postgresql://user@host/db, got 'just-a-path.db'"),
    ],
)
def test_bad_database_url(raw: str, message: str) -> None:
    assert problems({"DATABASE_URL": raw}) == [message]


@pytest.mark.parametrize("url", ["nats://h:4222", "tls://h:4222", "ws://h:8080", "wss://h"])
def test_nats_url_schemes(url: str) -> None:
    assert Settings.from_env({"NATS_URL": url}, dev_mode=True).nats_url == url


@pytest.mark.parametrize("url", ["http://h:4222", "h:4222"])
def test_bad_nats_url(url: str) -> None:
    assert problems({"NATS_URL": url}) == [f"NATS_URL must look like nats://host:4222, got {url!r}"]


# -- one test per validation message -----------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["http://minio:9000", "minio:9000/bucket"])
def test_minio_endpoint_without_scheme(endpoint: str) -> None:
    env = {"MINIO_ENDPOINT": endpoint, "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b"}
    assert problems(env) == [
        f"MINIO_ENDPOINT is host:port without scheme (set MINIO_USE_SSL for https), got {endpoint!r}"
    ]


@pytest.mark.parametrize("keys", [{}, {"MINIO_ACCESS_KEY": "a"}, {"MINIO_SECRET_KEY": "b"}])
def test_minio_needs_both_keys(keys: dict[str, str]) -> None:
    assert problems({"MINIO_ENDPOINT": "minio:9000", **keys}) == [
        "MINIO_ENDPOINT is set: MINIO_ACCESS_KEY and MINIO_SECRET_KEY are required"
    ]


def test_jwt_secret_length() -> None:
    assert problems({"JWT_SECRET": "s" * 31}) == ["JWT_SECRET must be at least 32 bytes (HS256 needs a 256-bit key)"]
    # Bytes, not characters: 11 three-byte characters are 33 bytes.
    assert Settings.from_env({"JWT_SECRET": "€" * 11}, dev_mode=True).jwt_secret == "€" * 11


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("15m", timedelta(minutes=15)), ("900s", timedelta(seconds=900)), ("900", timedelta(seconds=900)),
     ("1h", timedelta(hours=1)), ("1d", timedelta(days=1)), ("30s", timedelta(seconds=30))],
)  # fmt: skip
def test_jwt_expires_in(raw: str, expected: timedelta) -> None:
    assert Settings.from_env({"JWT_EXPIRES_IN": raw}, dev_mode=True).jwt_expires_in == expected


@pytest.mark.parametrize("raw", ["soon", "15 minutes", "-5m", "1.5h"])
def test_jwt_expires_in_syntax(raw: str) -> None:
    assert problems({"JWT_EXPIRES_IN": raw}) == [
        f"JWT_EXPIRES_IN must be a duration like 15m, 900s or 1h, got {raw!r}"
    ]


@pytest.mark.parametrize("raw", ["29s", "25h", "2d", "500ms"])
def test_jwt_expires_in_range(raw: str) -> None:
    assert problems({"JWT_EXPIRES_IN": raw}) == ["JWT_EXPIRES_IN must be between 30s and 1d"]


def test_parse_duration_milliseconds() -> None:
    assert parse_duration("1500ms") == timedelta(milliseconds=1500)
    with pytest.raises(ValueError):
        parse_duration("1w")


@pytest.mark.parametrize("url", ["ftp://x.com", "app.example.com", "https://app.example.com/path", "https://"])
def test_frontend_url_must_be_an_origin(url: str) -> None:
    assert problems({"FRONTEND_URL": url}) == [
        f"FRONTEND_URL must be an origin like https://app.example.com, got {url!r}"
    ]


@pytest.mark.parametrize("name", ["THE0_GRPC_PORT", "THE0_HTTP_PORT"])
@pytest.mark.parametrize("raw", ["65536", "-1", "http", "80.0"])
def test_ports(name: str, raw: str) -> None:
    assert problems({name: raw}) == [f"{name} must be a port number 0-65535, got {raw!r}"]


@pytest.mark.parametrize("raw", ["maybe", "on"])
def test_minio_use_ssl_flag(raw: str) -> None:
    assert problems({"MINIO_USE_SSL": raw}) == [f"MINIO_USE_SSL must be true or false, got {raw!r}"]


@pytest.mark.parametrize(("raw", "expected"), [("TRUE", True), ("1", True), ("no", False), ("0", False)])
def test_minio_use_ssl_values(raw: str, expected: bool) -> None:
    assert Settings.from_env({"MINIO_USE_SSL": raw}, dev_mode=True).minio_use_ssl is expected


@pytest.mark.parametrize("raw", ["1023", "1073741825", "10MB", "-1"])
def test_max_upload_bytes(raw: str) -> None:
    assert problems({"THE0_MAX_UPLOAD_BYTES": raw}) == [
        f"THE0_MAX_UPLOAD_BYTES must be 1024 to 1073741824, got {raw!r}"
    ]


def test_max_upload_bytes_bounds_are_inclusive() -> None:
    for raw in ("1024", "1073741824"):
        assert Settings.from_env({"THE0_MAX_UPLOAD_BYTES": raw}, dev_mode=True).max_upload_bytes == int(raw)


def test_log_level() -> None:
    assert problems({"THE0_LOG_LEVEL": "trace"}) == [
        "THE0_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'TRACE'"
    ]
    assert Settings.from_env({"THE0_LOG_LEVEL": "warning"}, dev_mode=True).log_level == "WARNING"


def test_serving_in_production_needs_an_object_store_or_an_explicit_folder(tmp_path: Path) -> None:
    # A folder per replica silently loses objects with two replicas: it must be asked for.
    assert Settings.from_env(PROD, dev_mode=False).serving_problems() == [
        ("MINIO_ENDPOINT (with MINIO_ACCESS_KEY and MINIO_SECRET_KEY) is required outside dev mode, "
        "or THE0_OBJECT_STORE_DIR for a local folder (one replica only: each replica would have its own)")
    ]
    folder = Settings.from_env(PROD | {"THE0_OBJECT_STORE_DIR": str(tmp_path)}, dev_mode=False)
    assert folder.serving_problems() == [] and folder.object_store_dir == tmp_path
    minio = PROD | {"MINIO_ENDPOINT": "m:9000", "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b"}
    assert Settings.from_env(minio, dev_mode=False).serving_problems() == []
    assert Settings.from_env({}, dev_mode=True).serving_problems() == []


def test_operations_settings_are_read() -> None:
    s = Settings.from_env({"THE0_METRICS_PORT": "9464", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317",
                           "THE0_OUTBOX_RETENTION": "2d", "THE0_REQUEST_ID_RETENTION": "12h",
                           "THE0_RETENTION_INTERVAL": "1m"}, dev_mode=True)
    assert (s.metrics_port, s.otel_endpoint) == (9464, "http://otel:4317")
    assert (s.outbox_retention_seconds, s.request_id_retention_seconds, s.retention_interval_seconds) == (
        2 * 86400, 12 * 3600, 60)
    assert problems({"THE0_PROCESSED_EVENT_RETENTION": "1h"}) == [
        "THE0_PROCESSED_EVENT_RETENTION must be between 604800s and 3.1536e+07s, got '1h'"
    ]

"""The server's settings: read from the environment once, validated, frozen.

Nothing else in the server reads ``os.environ``. Every problem is reported at
once, naming the variable, so a misconfigured deployment fails at start-up
with a message a person can act on.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from the0.server.keys import parse_key_list
from the0.server.redaction import redact_url

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Envoy runs beside the server and reaches it over loopback (docs/limits.md).
DEFAULT_TRUSTED_PROXIES: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"),
)
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class SettingsError(ValueError):
    """The environment does not describe a valid configuration."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True, slots=True)
class Settings:
    # Dependencies. None means "embedded default" in dev mode.
    database_url: str | None = None
    nats_url: str | None = None
    minio_endpoint: str | None = None
    minio_access_key: str | None = None
    minio_secret_key: str | None = field(default=None, repr=False)
    minio_use_ssl: bool = False
    # THE0_OBJECT_STORE_DIR: a local folder for objects, chosen on purpose. Outside dev mode the server
    # refuses to start with neither MINIO_ENDPOINT nor this: a folder per replica is wrong with two.
    local_object_store_dir: Path | None = None
    # Metrics (metrics.py): Prometheus text on this port, never behind the public edge; 0 = off.
    metrics_port: int = 0
    # OTEL_EXPORTER_OTLP_ENDPOINT: traces are exported there (tracing.py); unset, nothing is traced.
    otel_endpoint: str | None = None
    # Retention (retention.py): how often one replica prunes what is past its window, and the windows.
    retention_interval_seconds: float = 300.0
    outbox_retention_seconds: float = 86400.0
    processed_event_retention_seconds: float = 8 * 86400.0
    request_id_retention_seconds: float = 86400.0
    session_retention_seconds: float = 7 * 86400.0
    # Auth.
    jwt_secret: str | None = field(default=None, repr=False)
    # One key ring per purpose, ((kid, secret), ...), the first current (keys.py): JWT
    # signing, API-key hashing, page tokens. JWT_SECRET joins each as a verify-only key.
    jwt_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    api_key_hash_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    page_token_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # The ring that seals the secret fields of bot configs (secrets/box.py, AES-256-GCM), kid:secret,...
    # with the first current. Required outside dev mode; JWT_SECRET never stands in for it.
    secrets_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # The ring that seals reset and verification tokens for the platform's mailer (secrets/mail.py):
    # a key of its own, so the mailer can open nothing else. Required outside dev mode.
    mailer_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    jwt_expires_in: timedelta = timedelta(minutes=15)
    refresh_token_ttl: timedelta = timedelta(days=30)
    registration_enabled: bool = True
    # Password policy and account recovery (identity/password_policy.py, docs/accounts.md).
    password_min_length: int = 12
    password_reset_ttl_seconds: float = 1800.0
    email_verification_ttl_seconds: float = 86400.0
    account_recovery_per_address: int = 10  # reset and verification requests per address per hour
    reset_mails_per_email: int = 10  # password-reset mails to one email address per hour, whoever asks
    # Both or neither: an admin created or updated at start-up.
    admin_email: str | None = None
    admin_password: str | None = field(default=None, repr=False)
    # Login and registration throttles, shared by every replica (identity/throttle.py,
    # docs/limits.md): attempts per (account, address) per minute, per account per hour
    # (NIST 800-63B: at most 100), per address per minute; registrations per address per hour.
    login_attempts_per_account_address: int = 5
    login_attempts_per_account: int = 100
    login_attempts_per_address: int = 20
    registrations_per_address: int = 10
    # Peers whose x-forwarded-for is believed (Envoy); anyone else is their own TCP address.
    trusted_proxies: tuple[IPNetwork, ...] = DEFAULT_TRUSTED_PROXIES
    # Platform service accounts made (or re-keyed) at start: (role, name, key), from
    # THE0_SERVICE_ACCOUNTS="runtime:runtime-1:<key>,analyzer:analyzer-1:<key>"; stored hashed.
    service_accounts: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)
    # Password hashes waiting for a hashing thread before RESOURCE_EXHAUSTED (registrations
    # may fill half of it, so a register flood cannot queue every login behind it).
    password_hashing_queue: int = 32
    # Argon2id cost. The defaults are OWASP's minimum (19 MiB, 2 passes, 1 lane) and
    # from_env never lowers them; only tests construct Settings with cheaper values.
    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    # Safety net behind the NATS fan-out of revocations: re-read them from the database.
    revocation_sync_seconds: float = 5.0
    # How long a verified API key is trusted without a database read (revocation is
    # still checked on every request against the in-memory revoked set).
    api_key_cache_seconds: float = 60.0
    # How long a well-formed API key the database does not know is refused without a read.
    api_key_miss_cache_seconds: float = 10.0
    # How often pending API-key last-used times are written (one batched UPDATE).
    api_key_last_used_flush_seconds: float = 30.0
    # Network.
    frontend_url: str = "http://localhost:3000"
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 50051
    http_port: int = 8080
    # Local state: SQLite file, embedded NATS store, local object store, dev secrets.
    data_dir: Path = Path(".the0")
    # Dev mode allows embedded dependencies and a generated JWT secret.
    dev_mode: bool = False
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    log_level: str = "INFO"
    shutdown_grace_seconds: float = 5.0
    # The longest a unary RPC may run on the server (sooner if the caller's deadline is),
    # and PostgreSQL's statement_timeout: a frozen or overloaded dependency costs a
    # client this long at most, then UNAVAILABLE (retryable).
    request_timeout_seconds: float = 10.0
    # Watch streams send a heartbeat after this long without a change (Envoy drops idle streams).
    watch_heartbeat_seconds: float = 25.0
    # The longest a rendered resource is served from this replica's read cache; changes drop it
    # sooner, through the watch fan-out (events/read_cache.py). 0 turns the cache off.
    read_cache_seconds: float = 5.0
    # Limits per caller (the user, or the address of an anonymous caller), per replica:
    # docs/limits.md. A read costs 1 token, a write rate_limit_write_cost.
    rate_limit_per_second: float = 20.0
    rate_limit_burst: int = 100
    rate_limit_write_cost: int = 5
    max_streams_per_caller: int = 50
    max_uploads_per_caller: int = 3
    # An upload that sends nothing for this long is abandoned and its spool file removed.
    upload_idle_timeout_seconds: float = 60.0
    # Upload bytes spooled to disk at once on this replica, every caller together.
    max_upload_spool_bytes: int = 256 * 1024 * 1024
    # Quotas per owner, counted in the creating transaction.
    max_bots_per_user: int = 100
    max_active_backtests_per_user: int = 10
    max_custom_bot_versions_per_user: int = 500
    # Execution history of bots (docs/limits.md, "Bot executions").
    bot_execution_retention_days: int = 30
    max_executions_per_bot: int = 1000
    # Bot logs (docs/limits.md, "Bot logs"): table retention and the JetStream stream's own limits.
    bot_log_retention_days: int = 30
    bot_log_lines_per_bot: int = 100_000
    bot_log_stream_max_age_days: int = 3
    bot_log_stream_max_bytes: int = 1024 * 1024 * 1024
    # Server processes sharing the gRPC port (workers.py); from_env defaults to the number of
    # cores on PostgreSQL, to 1 on SQLite (one writer at a time: more processes only queue) or
    # when THE0_GRPC_PORT is 0.
    workers: int = 1
    # The gRPC server (docs/limits.md, "Server").
    max_concurrent_rpcs: int = 4096
    keepalive_time_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    max_connection_age_seconds: float = 1800.0
    max_connection_age_grace_seconds: float = 300.0

    def serving_problems(self) -> list[str]:
        """What stops this configuration from serving, beyond what ``from_env`` checks (commands such as
        ``rotate-secrets`` never touch objects, so only serving asks for their store)."""
        if self.dev_mode or self.minio_endpoint is not None or self.local_object_store_dir is not None:
            return []
        return [("MINIO_ENDPOINT (with MINIO_ACCESS_KEY and MINIO_SECRET_KEY) is required outside dev mode, "
                "or THE0_OBJECT_STORE_DIR for a local folder (one replica only: each replica would have its own)")]

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "the0.db"

    @property
    def effective_database_url(self) -> str:
        """The configured database, or the SQLite file in the data dir."""
        return self.database_url or f"sqlite:///{self.sqlite_path.resolve()}"

    @property
    def object_store_dir(self) -> Path:
        return self.local_object_store_dir or self.data_dir / "objects"

    @property
    def nats_store_dir(self) -> Path:
        return self.data_dir / "nats"

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, dev_mode: bool = False) -> Settings:
        """Build settings from environment variables, reporting every problem at once."""
        problems: list[str] = []

        def get(name: str) -> str | None:
            return (env.get(name) or "").strip() or None

        def port(name: str, default: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            if not raw.isdigit() or not 0 <= int(raw) <= 65535:
                problems.append(f"{name} must be a port number 0-65535, got {raw!r}")
                return default
            return int(raw)

        def flag(name: str) -> bool:
            raw = (get(name) or "false").lower()
            if raw not in {"true", "false", "1", "0", "yes", "no"}:
                problems.append(f"{name} must be true or false, got {raw!r}")
            return raw in {"true", "1", "yes"}

        database_url = get("DATABASE_URL")
        if database_url is not None:
            database_url = normalise_database_url(database_url, problems)

        nats_url = get("NATS_URL")
        if nats_url is not None and urlsplit(nats_url).scheme not in {"nats", "tls", "ws", "wss"}:
            problems.append(f"NATS_URL must look like nats://host:4222, got {redact_url(nats_url)!r}")

        minio_endpoint = get("MINIO_ENDPOINT")
        minio_access_key, minio_secret_key = get("MINIO_ACCESS_KEY"), get("MINIO_SECRET_KEY")
        if minio_endpoint is not None:
            if "://" in minio_endpoint or "/" in minio_endpoint:
                problems.append(
                    f"MINIO_ENDPOINT is host:port without scheme (set MINIO_USE_SSL for https), "
                    f"got {minio_endpoint!r}"
                )
            if not (minio_access_key and minio_secret_key):
                problems.append("MINIO_ENDPOINT is set: MINIO_ACCESS_KEY and MINIO_SECRET_KEY are required")

        jwt_secret = get("JWT_SECRET")
        if jwt_secret is not None and len(jwt_secret.encode()) < 32:
            problems.append("JWT_SECRET must be at least 32 bytes (HS256 needs a 256-bit key)")
        rings = {
            name: parse_key_list(name, raw, problems) if (raw := get(name)) is not None else ()
            for name in ("THE0_JWT_KEYS", "THE0_API_KEY_HASH_KEYS", "THE0_PAGE_TOKEN_KEYS")
        }
        if jwt_secret is None and not dev_mode:
            if not any(rings.values()):
                problems.append("JWT_SECRET is required outside dev mode (make run generates one)")
            else:
                problems.extend(f"{name} is required unless JWT_SECRET is set"
                                for name, ring in rings.items() if not ring)

        raw_secrets_key = get("THE0_SECRETS_KEY")
        secrets_keys = parse_key_list("THE0_SECRETS_KEY", raw_secrets_key, problems) if raw_secrets_key else ()
        if raw_secrets_key is None and not dev_mode:
            problems.append("THE0_SECRETS_KEY is required outside dev mode (kid:secret of 32+ bytes; make run "
                            "generates one): it seals the secret fields of bot configs")

        raw_mailer_key = get("THE0_MAILER_KEY")
        mailer_keys = parse_key_list("THE0_MAILER_KEY", raw_mailer_key, problems) if raw_mailer_key else ()
        if raw_mailer_key is None and not dev_mode:
            problems.append("THE0_MAILER_KEY is required outside dev mode (kid:secret of 32+ bytes; make run "
                            "generates one): it seals the reset and verification tokens for the mailer")

        jwt_expires_in = timedelta(minutes=15)
        if (raw := get("JWT_EXPIRES_IN")) is not None:
            try:
                jwt_expires_in = parse_duration(raw)
            except ValueError:
                problems.append(f"JWT_EXPIRES_IN must be a duration like 15m, 900s or 1h, got {raw!r}")
            else:
                if not timedelta(seconds=30) <= jwt_expires_in <= timedelta(days=1):
                    problems.append("JWT_EXPIRES_IN must be between 30s and 1d")

        admin_email, admin_password = get("THE0_ADMIN_EMAIL"), get("THE0_ADMIN_PASSWORD")
        if (admin_email is None) != (admin_password is None):
            problems.append("THE0_ADMIN_EMAIL and THE0_ADMIN_PASSWORD must be set together (or neither)")
        if admin_email is not None:
            admin_email = admin_email.lower()
            if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", admin_email) or len(admin_email) > 254:
                problems.append(f"THE0_ADMIN_EMAIL must be an email address, got {admin_email!r}")
        if admin_password is not None and not 8 <= len(admin_password) <= 1024:
            problems.append("THE0_ADMIN_PASSWORD must be 8 to 1024 characters")

        def positive_int(name: str, default: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000:
                problems.append(f"{name} must be a whole number 1-1000000, got {raw!r}")
                return default
            return int(raw)

        trusted_proxies = DEFAULT_TRUSTED_PROXIES
        if (raw := get("THE0_TRUSTED_PROXIES")) is not None:
            try:
                trusted_proxies = tuple(ipaddress.ip_network(part.strip(), strict=False)
                                        for part in raw.split(",") if part.strip())
            except ValueError:
                problems.append(f"THE0_TRUSTED_PROXIES must be comma-separated IP addresses or CIDRs, got {raw!r}")

        service_accounts: list[tuple[str, str, str]] = []
        for index, entry in enumerate(p for p in (get("THE0_SERVICE_ACCOUNTS") or "").split(",") if p.strip()):
            role, _, rest = entry.strip().partition(":")
            name, _, key = rest.partition(":")
            # Never the entry itself in the message: it holds a key.
            if role not in {"runtime", "analyzer"} or not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name):
                problems.append(f"THE0_SERVICE_ACCOUNTS entry {index + 1} must be role:name:key with role "
                                "runtime or analyzer and a name of a-z 0-9 . _ - (at most 64)")
            elif not 32 <= len(key) <= 256 or not key.isprintable():
                problems.append(f"THE0_SERVICE_ACCOUNTS entry {index + 1} ({name}) needs a key of 32-256 characters")
            else:
                service_accounts.append((role, name, key))

        frontend_url = get("FRONTEND_URL") or "http://localhost:3000"
        parts = urlsplit(frontend_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path not in {"", "/"}:
            problems.append(f"FRONTEND_URL must be an origin like https://app.example.com, got {frontend_url!r}")
        frontend_url = f"{parts.scheme}://{parts.netloc}"

        max_upload = DEFAULT_MAX_UPLOAD_BYTES
        if (raw := get("THE0_MAX_UPLOAD_BYTES")) is not None:
            if not raw.isdigit() or not 1024 <= int(raw) <= 1024**3:
                problems.append(f"THE0_MAX_UPLOAD_BYTES must be 1024 to 1073741824, got {raw!r}")
            else:
                max_upload = int(raw)

        request_timeout = 10.0
        if (raw := get("THE0_REQUEST_TIMEOUT")) is not None:
            try:
                request_timeout = parse_duration(raw).total_seconds()
            except ValueError:
                problems.append(f"THE0_REQUEST_TIMEOUT must be a duration like 10s or 1m, got {raw!r}")
            else:
                if not 1 <= request_timeout <= 300:
                    problems.append("THE0_REQUEST_TIMEOUT must be between 1s and 5m")

        def seconds(name: str, default: float, low: float, high: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = parse_duration(raw).total_seconds()
            except ValueError:
                problems.append(f"{name} must be a duration like 30s, 5m or 1h, got {raw!r}")
                return default
            if not low <= value <= high:
                problems.append(f"{name} must be between {low:g}s and {high:g}s, got {raw!r}")
                return default
            return value

        password_min_length = positive_int("THE0_PASSWORD_MIN_LENGTH", 12)
        if not 8 <= password_min_length <= 128:
            problems.append(f"THE0_PASSWORD_MIN_LENGTH must be 8-128 (NIST's floor is 8), got {password_min_length}")
            password_min_length = 12

        rate_limit_per_second = 20.0
        if (raw := get("THE0_RATE_LIMIT_PER_SECOND")) is not None:
            try:
                rate_limit_per_second = float(raw)
            except ValueError:
                rate_limit_per_second = -1.0
            if not 0.01 <= rate_limit_per_second <= 1_000_000:
                problems.append(f"THE0_RATE_LIMIT_PER_SECOND must be a number 0.01-1000000, got {raw!r}")
                rate_limit_per_second = 20.0

        max_spool = 256 * 1024 * 1024
        if (raw := get("THE0_MAX_UPLOAD_SPOOL_BYTES")) is not None:
            if not raw.isdigit() or not 1024 <= int(raw) <= 1024**4:
                problems.append(f"THE0_MAX_UPLOAD_SPOOL_BYTES must be 1024 to 1099511627776, got {raw!r}")
            else:
                max_spool = int(raw)

        api_key_miss_cache = 10.0
        if (raw := get("THE0_API_KEY_MISS_CACHE")) is not None:
            try:
                api_key_miss_cache = parse_duration(raw).total_seconds()
            except ValueError:
                api_key_miss_cache = -1.0
            if not 0 <= api_key_miss_cache <= 300:
                problems.append(f"THE0_API_KEY_MISS_CACHE must be a duration from 0s to 5m, got {raw!r}")
                api_key_miss_cache = 10.0

        log_level = (get("THE0_LOG_LEVEL") or "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            problems.append(f"THE0_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

        local_object_store_dir = Path(raw) if (raw := get("THE0_OBJECT_STORE_DIR")) is not None else None

        if not dev_mode:
            missing = [n for n, v in (("DATABASE_URL", database_url), ("NATS_URL", nats_url)) if v is None]
            if missing:
                problems.append(
                    f"{' and '.join(missing)} required outside dev mode (make run embeds them)"
                )

        grpc_port = port("THE0_GRPC_PORT", 50051)
        # One process where more cannot help: SQLite (one writer), or a port the OS picks (not shareable).
        one_process = database_url is None or database_url.startswith("sqlite") or grpc_port == 0
        workers = positive_int("THE0_WORKERS", 1 if one_process else (os.cpu_count() or 1))
        if workers > 1 and grpc_port == 0:
            problems.append("THE0_WORKERS > 1 needs a fixed THE0_GRPC_PORT (the workers share it)")

        settings = cls(
            database_url=database_url,
            workers=workers,
            nats_url=nats_url,
            minio_endpoint=minio_endpoint,
            minio_access_key=minio_access_key,
            minio_secret_key=minio_secret_key,
            minio_use_ssl=flag("MINIO_USE_SSL"),
            local_object_store_dir=local_object_store_dir,
            metrics_port=port("THE0_METRICS_PORT", 0),
            otel_endpoint=get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            retention_interval_seconds=seconds("THE0_RETENTION_INTERVAL", 300.0, 1, 86400),
            outbox_retention_seconds=seconds("THE0_OUTBOX_RETENTION", 86400.0, 60, 365 * 86400),
            # JetStream drops duplicates for 2 minutes; a redelivery comes within the stream's 7 days.
            processed_event_retention_seconds=seconds("THE0_PROCESSED_EVENT_RETENTION", 8 * 86400.0,
                                                      7 * 86400, 365 * 86400),
            request_id_retention_seconds=seconds("THE0_REQUEST_ID_RETENTION", 86400.0, 3600, 365 * 86400),
            session_retention_seconds=seconds("THE0_SESSION_RETENTION", 7 * 86400.0, 86400, 365 * 86400),
            jwt_secret=jwt_secret,
            api_key_miss_cache_seconds=api_key_miss_cache,
            jwt_keys=rings["THE0_JWT_KEYS"],
            api_key_hash_keys=rings["THE0_API_KEY_HASH_KEYS"],
            page_token_keys=rings["THE0_PAGE_TOKEN_KEYS"],
            secrets_keys=secrets_keys,
            mailer_keys=mailer_keys,
            jwt_expires_in=jwt_expires_in,
            registration_enabled=(get("THE0_REGISTRATION_ENABLED") is None or flag("THE0_REGISTRATION_ENABLED")),
            admin_email=admin_email,
            admin_password=admin_password,
            login_attempts_per_account_address=positive_int("THE0_LOGIN_ATTEMPTS_PER_ACCOUNT_ADDRESS", 5),
            login_attempts_per_account=positive_int("THE0_LOGIN_ATTEMPTS_PER_ACCOUNT", 100),
            login_attempts_per_address=positive_int("THE0_LOGIN_ATTEMPTS_PER_ADDRESS", 20),
            registrations_per_address=positive_int("THE0_REGISTRATIONS_PER_ADDRESS", 10),
            trusted_proxies=trusted_proxies,
            service_accounts=tuple(service_accounts),
            password_hashing_queue=positive_int("THE0_PASSWORD_HASHING_QUEUE", 32),
            frontend_url=frontend_url,
            grpc_host=get("THE0_GRPC_HOST") or "0.0.0.0",
            grpc_port=grpc_port,
            http_port=port("THE0_HTTP_PORT", 8080),
            data_dir=Path(get("THE0_DATA_DIR") or ".the0"),
            dev_mode=dev_mode,
            max_upload_bytes=max_upload,
            log_level=log_level,
            request_timeout_seconds=request_timeout,
            read_cache_seconds=seconds("THE0_READ_CACHE", 5.0, 0, 60),
            rate_limit_per_second=rate_limit_per_second,
            rate_limit_burst=positive_int("THE0_RATE_LIMIT_BURST", 100),
            rate_limit_write_cost=positive_int("THE0_RATE_LIMIT_WRITE_COST", 5),
            max_streams_per_caller=positive_int("THE0_MAX_STREAMS_PER_CALLER", 50),
            max_uploads_per_caller=positive_int("THE0_MAX_UPLOADS_PER_CALLER", 3),
            upload_idle_timeout_seconds=seconds("THE0_UPLOAD_IDLE_TIMEOUT", 60.0, 1, 3600),
            password_min_length=password_min_length,
            password_reset_ttl_seconds=seconds("THE0_PASSWORD_RESET_TTL", 1800.0, 60, 86400),
            email_verification_ttl_seconds=seconds("THE0_EMAIL_VERIFICATION_TTL", 86400.0, 60, 7 * 86400),
            account_recovery_per_address=positive_int("THE0_ACCOUNT_RECOVERY_PER_ADDRESS", 10),
            reset_mails_per_email=positive_int("THE0_RESET_MAILS_PER_EMAIL", 10),
            max_upload_spool_bytes=max_spool,
            max_bots_per_user=positive_int("THE0_MAX_BOTS_PER_USER", 100),
            max_active_backtests_per_user=positive_int("THE0_MAX_ACTIVE_BACKTESTS_PER_USER", 10),
            max_custom_bot_versions_per_user=positive_int("THE0_MAX_CUSTOM_BOT_VERSIONS_PER_USER", 500),
            bot_execution_retention_days=positive_int("THE0_BOT_EXECUTION_RETENTION", 30),
            max_executions_per_bot=positive_int("THE0_BOT_EXECUTIONS_PER_BOT", 1000),
            bot_log_retention_days=positive_int("THE0_BOT_LOG_RETENTION_DAYS", 30),
            bot_log_lines_per_bot=positive_int("THE0_BOT_LOG_LINES_PER_BOT", 100_000),
            bot_log_stream_max_age_days=positive_int("THE0_BOT_LOG_STREAM_MAX_AGE_DAYS", 3),
            bot_log_stream_max_bytes=positive_int("THE0_BOT_LOG_STREAM_MAX_BYTES", 1024 * 1024 * 1024),
            max_concurrent_rpcs=positive_int("THE0_MAX_CONCURRENT_RPCS", 4096),
            keepalive_time_seconds=seconds("THE0_KEEPALIVE_TIME", 60.0, 10, 86400),
            keepalive_timeout_seconds=seconds("THE0_KEEPALIVE_TIMEOUT", 20.0, 1, 600),
            max_connection_age_seconds=seconds("THE0_MAX_CONNECTION_AGE", 1800.0, 10, 7 * 86400),
            max_connection_age_grace_seconds=seconds("THE0_MAX_CONNECTION_AGE_GRACE", 300.0, 1, 86400),
        )
        if problems:
            raise SettingsError(problems)
        return settings


def parse_duration(raw: str) -> timedelta:
    """``15m``, ``900s``, ``900`` (seconds), ``1h``, ``1d``, ``500ms``."""
    match = _DURATION.match(raw)
    if not match:
        raise ValueError(raw)
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def normalise_database_url(url: str, problems: list[str]) -> str:
    """Accept the usual spellings and return a SQLAlchemy URL for psycopg 3 or SQLite."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        shown = "(hidden: it may hold a password)" if "@" in url else repr(url)
        problems.append(f"DATABASE_URL must be a URL like postgresql://user@host/db, got {shown}")
        return url
    if scheme in {"postgres", "postgresql", "postgresql+psycopg"}:
        return f"postgresql+psycopg://{rest}"
    if scheme in {"sqlite", "sqlite+aiosqlite"}:
        return f"sqlite://{rest}"
    problems.append(f"DATABASE_URL must use postgresql:// or sqlite://, got scheme {scheme!r}")
    return url


def secrets_keys_from_env(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """THE0_SECRETS_KEY alone, validated: with DATABASE_URL, all that ``the0-server rotate-secrets`` needs."""
    raw = (env.get("THE0_SECRETS_KEY") or "").strip()
    if not raw:
        raise SettingsError(["THE0_SECRETS_KEY is required: rotate-secrets reseals under its first key"])
    problems: list[str] = []
    keys = parse_key_list("THE0_SECRETS_KEY", raw, problems)
    if problems:
        raise SettingsError(problems)
    return keys


def database_url_from_env(env: Mapping[str, str]) -> str:
    """DATABASE_URL alone, validated: all that ``the0-server migrate`` needs."""
    problems: list[str] = []
    raw = (env.get("DATABASE_URL") or "").strip()
    if not raw:
        raise SettingsError(["DATABASE_URL is required (postgresql://user@host/db or sqlite:///path)"])
    url = normalise_database_url(raw, problems)
    if problems:
        raise SettingsError(problems)
    return url

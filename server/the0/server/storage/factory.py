"""Which object store the settings ask for; the protocol module knows no implementation."""

from __future__ import annotations

from the0.server.settings import Settings
from the0.server.storage.local import LocalObjectStore
from the0.server.storage.object_store import ObjectStore


def object_store_from_settings(settings: Settings) -> ObjectStore:
    """MinIO/S3 when MINIO_ENDPOINT is set, else the local folder in the data dir."""
    if settings.minio_endpoint:
        # Imported only when used: the minio SDK (with urllib3 and certifi) adds about
        # 0.28 s to start-up (-X importtime), which the dev stack's local folder never needs.
        from the0.server.storage.minio_store import MinioObjectStore

        return MinioObjectStore(
            settings.minio_endpoint,
            settings.minio_access_key or "",
            settings.minio_secret_key or "",
            secure=settings.minio_use_ssl,
        )
    return LocalObjectStore(settings.object_store_dir)

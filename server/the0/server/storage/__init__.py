"""Object storage: one protocol, a local-folder and an S3/MinIO implementation."""

from the0.server.storage.object_store import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    ObjectTooLarge,
    object_store_from_settings,
)

__all__ = [
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectTooLarge",
    "object_store_from_settings",
]

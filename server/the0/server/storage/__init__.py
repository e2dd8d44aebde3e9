"""Object storage: one protocol, a local-folder and an S3/MinIO implementation.

The factory (``storage.factory.object_store_from_settings``) is not re-exported here, so
importing the protocol never imports an implementation.
"""

from the0.server.storage.object_store import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    ObjectTooLarge,
    OpenObject,
)

__all__ = [
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectTooLarge",
    "OpenObject",
]

"""Artifact store: one interface (`ArtifactStore`), a local-directory and an S3/MinIO backend.

api/ and worker/ call `build_store(settings)` and code against `ArtifactStore` only.
"""

from __future__ import annotations

from drl_core.artifacts.base import (
    ArtifactNotFound,
    ArtifactReader,
    ArtifactStore,
    ArtifactStoreError,
    StoredArtifact,
    validate_key,
)
from drl_core.artifacts.local import LocalArtifactStore
from drl_core.artifacts.s3 import S3ArtifactStore
from drl_core.settings import Settings

__all__ = [
    "ArtifactNotFound",
    "ArtifactReader",
    "ArtifactStore",
    "ArtifactStoreError",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "StoredArtifact",
    "build_store",
    "validate_key",
]


def build_store(settings: Settings) -> ArtifactStore:
    """The store `settings.artifact_backend` names. For S3 this contacts the endpoint and
    creates the bucket if missing (raising ArtifactStoreError if it cannot)."""
    if settings.artifact_backend == "local":
        return LocalArtifactStore(settings.resolved_artifact_dir)
    if settings.artifact_backend == "s3":
        store = S3ArtifactStore(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        store.ensure_bucket()
        return store
    raise ValueError(
        f"artifact_backend {settings.artifact_backend!r}: expected 'local' or 's3'"
    )

"""S3/MinIO backend through the `minio` client: key `a/b/c.pt` is object `a/b/c.pt` in a bucket."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import MIN_PART_SIZE, check_bucket_name
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError

from drl_core.artifacts.base import (
    ArtifactNotFound,
    ArtifactReader,
    ArtifactStore,
    ArtifactStoreError,
    HashingReader,
    normalize_prefix,
    require_delete_prefix,
    validate_key,
)

# Objects up to PART_SIZE go up in one PUT; larger ones as a multipart upload of PART_SIZE
# parts. minio keeps at most (parallel uploads + 1) parts in memory, so 8 MiB parts bound a
# checkpoint upload to ~32 MiB of RAM at 3 parallel uploads while a 1 GiB file still takes
# only 128 requests. (minio's own choice for a known length would be its 5 MiB minimum.)
PART_SIZE = 8 * 1024 * 1024
PARALLEL_UPLOADS = 3

_NOT_FOUND_CODES = ("NoSuchKey", "NoSuchObject", "ResourceNotFound")
# Answers that say "not now" rather than "never": a job stopped by one is retried.
_TRANSIENT_CODES = ("InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                    "XMinioServerNotInitialized", "XMinioStorageFull")
# MinIO's answer when its disks are full.
_STORAGE_FULL_CODES = ("XMinioStorageFull",)


class S3ArtifactStore(ArtifactStore):
    """Artifacts as objects in one S3/MinIO bucket.

    The minio client gets its own urllib3 pool with short connect timeouts and few retries:
    its default (5 retries, 300 s timeouts) would keep a readiness probe of a dead endpoint
    hanging for minutes.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        retries: int = 2,
        part_size: int = PART_SIZE,
        parallel_uploads: int = PARALLEL_UPLOADS,
    ) -> None:
        if "://" in endpoint or "/" in endpoint:
            raise ValueError(
                f"s3_endpoint {endpoint!r}: expected 'host:port' without scheme or path "
                "(use s3_secure for https)"
            )
        try:
            check_bucket_name(bucket, strict=True)  # strict: MinIO refuses what AWS once allowed
        except ValueError as exc:
            raise ValueError(
                f"s3_bucket {bucket!r}: {exc}; expected 3-63 lowercase letters, digits, '.' or '-'"
            ) from None
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size {part_size}: S3 requires at least {MIN_PART_SIZE} bytes")
        http_client = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http_client,
        )
        self.endpoint = endpoint
        self.bucket = bucket
        self.region = region
        self.part_size = part_size
        self.parallel_uploads = parallel_uploads
        self._where = f"S3 bucket {bucket!r} at {endpoint}"

    def __repr__(self) -> str:
        return f"S3ArtifactStore(endpoint={self.endpoint!r}, bucket={self.bucket!r})"

    @contextmanager
    def _translate_errors(self, key: str | None = None) -> Iterator[None]:
        """minio/urllib3 exceptions -> ArtifactNotFound / ArtifactStoreError, one readable line."""
        try:
            yield
        except S3Error as exc:
            if key is not None and exc.code in _NOT_FOUND_CODES:
                raise ArtifactNotFound(key, self._where) from None
            raise ArtifactStoreError(f"{self._where}: {exc.code}: {exc.message}",
                                     transient=exc.code in _TRANSIENT_CODES,
                                     disk_full=exc.code in _STORAGE_FULL_CODES) from None
        except MinioException as exc:  # non-S3 answers (HTML error page, 5xx without XML)
            # (a 5xx, or a proxy's error page while the server restarts: try again later)
            raise ArtifactStoreError(f"{self._where}: {exc}",
                                     transient=isinstance(exc, ServerError | InvalidResponseError)
                                     ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise ArtifactStoreError(f"{self._where} unreachable: {_describe(exc)}",
                                     transient=True) from None

    # -- writes ------------------------------------------------------------------------

    def _put_stream(self, key: str, stream: HashingReader, length: int, content_type: str) -> None:
        with self._translate_errors():
            self.client.put_object(
                self.bucket,
                key,
                stream,
                length,
                content_type=content_type,
                part_size=self.part_size,
                num_parallel_uploads=self.parallel_uploads,
            )

    # -- reads -------------------------------------------------------------------------

    def open(self, key: str) -> ArtifactReader:
        validate_key(key)
        with self._translate_errors(key):
            response = self.client.get_object(self.bucket, key)

        def release() -> None:
            # minio hands out the raw urllib3 response: close it, then give the connection
            # back to the pool (as minio's docs prescribe for get_object).
            response.close()
            response.release_conn()

        return ArtifactReader(response, release)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ArtifactNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        validate_key(key)
        with self._translate_errors(key):
            return int(self.client.stat_object(self.bucket, key).size or 0)

    def list(self, prefix: str) -> list[str]:
        prefix = normalize_prefix(prefix)
        with self._translate_errors():
            # list_objects pages lazily, so consume it inside the error translation
            objects = self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            return sorted(o.object_name for o in objects if o.object_name and not o.is_dir)

    # -- deletes -----------------------------------------------------------------------

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._translate_errors():  # S3 answers 204 for a missing key too
            self.client.remove_object(self.bucket, key)

    def delete_prefix(self, prefix: str) -> int:
        prefix = require_delete_prefix(prefix)
        keys = self.list(prefix)
        with self._translate_errors():
            # remove_objects is lazy: nothing is deleted until its error iterator is consumed
            failures = list(self.client.remove_objects(self.bucket, map(DeleteObject, keys)))
        if failures:
            first = failures[0]
            raise ArtifactStoreError(
                f"{self._where}: could not delete {len(failures)} of {len(keys)} objects under "
                f"{prefix!r}; first: {first.name!r}: {first.code}: {first.message}"
            )
        return len(keys)

    # -- health ------------------------------------------------------------------------

    def check(self) -> None:
        with self._translate_errors():
            found = self.client.bucket_exists(self.bucket)
        if not found:
            raise ArtifactStoreError(f"{self._where}: bucket does not exist")

    def ensure_bucket(self) -> None:
        """Create the bucket if missing; tolerate losing the race to another process."""
        with self._translate_errors():
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket, location=self.region)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":
                    raise


def _describe(exc: urllib3.exceptions.HTTPError) -> str:
    """One line for a transport failure, e.g. 'Connection refused', without object reprs."""
    reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
    cause = reason.__cause__ or reason.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(reason, ReadTimeoutError):
        return "read timed out"
    if isinstance(reason, ConnectTimeoutError):
        return "connection timed out"
    return f"{type(reason).__name__}: {reason}"

"""The artifact store: one suite run against both backends.

The S3 backend talks to moto's ThreadedMotoServer over real HTTP with the real minio client
(MinIO's own binary cannot be downloaded here), so request signing, multipart uploads,
batch deletes and error XML are all exercised for real.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import random
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from drl_core.artifacts import (
    ArtifactNotFound,
    ArtifactStore,
    ArtifactStoreError,
    LocalArtifactStore,
    S3ArtifactStore,
    StoredArtifact,
    build_store,
)
from drl_core.artifacts.base import TMP_PREFIX, atomic_write
from drl_core.artifacts.s3 import PART_SIZE
from drl_core.settings import Settings

MiB = 1024 * 1024
BIG_FILE_SIZE = 12 * MiB  # > PART_SIZE, so the S3 upload is multipart: 8 MiB + 4 MiB

BAD_KEYS = [
    "", "/etc/passwd", "../outside", "a/../../b", "a/..", "a\\b", "a\x00b", "a//b", "a/", "./a",
    f"a/{TMP_PREFIX}x",
]


@pytest.fixture(scope="module")
def s3_endpoint():
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()
    werkzeug_log.setLevel(level)


def s3_settings(endpoint: str, bucket: str | None = None) -> Settings:
    return Settings(
        artifact_backend="s3",
        s3_endpoint=endpoint,
        s3_bucket=bucket or f"drl-test-{uuid.uuid4().hex[:12]}",
        s3_access_key="testing",
        s3_secret_key="testing",
        s3_secure=False,
        s3_region=None,
    )


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        return build_store(Settings(artifact_backend="local", artifact_dir=tmp_path / "artifacts"))
    # a fresh bucket per test keeps the tests independent on the shared server
    return build_store(s3_settings(request.getfixturevalue("s3_endpoint")))


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "ckpt.pt"
    path.write_bytes(random.Random(0).randbytes(BIG_FILE_SIZE))
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- round trips --------------------------------------------------------------------------


def test_put_bytes_get_bytes_round_trip(store):
    data = bytes(range(256)) * 97
    key = "experiments/7/embeddings/test/t=0.500.npy"
    stored = store.put_bytes(key, data)
    assert stored == StoredArtifact(key=key, size=len(data), sha256=sha256_of(data))
    assert store.get_bytes(key) == data
    assert store.exists(key)
    assert store.size(key) == len(data)


def test_empty_artifact_round_trip(store):
    stored = store.put_bytes("experiments/7/empty.txt", b"")
    assert stored.size == 0 and stored.sha256 == sha256_of(b"")
    assert store.get_bytes("experiments/7/empty.txt") == b""
    assert store.size("experiments/7/empty.txt") == 0


def test_put_file_streams_a_multi_megabyte_file(store, big_file, tmp_path):
    data = big_file.read_bytes()
    key = "experiments/7/checkpoints/ckpt_00001000.pt"
    stored = store.put_file(key, big_file)
    assert stored == StoredArtifact(key=key, size=BIG_FILE_SIZE, sha256=sha256_of(data))
    assert store.size(key) == BIG_FILE_SIZE
    assert sha256_of(store.get_bytes(key)) == stored.sha256
    if isinstance(store, S3ArtifactStore):
        # A multipart ETag is "<md5 of part md5s>-<part count>": 12 MiB went up as 8 + 4 MiB.
        etag = store.client.stat_object(store.bucket, key).etag
        assert etag.endswith(f"-{-(-BIG_FILE_SIZE // PART_SIZE)}")


def test_local_put_file_does_not_read_the_whole_file_into_memory(tmp_path, big_file):
    # In a fresh interpreter: tracemalloc's peak counts every thread, and the moto server's
    # threads in this process may still be digesting an earlier 12 MiB upload.
    script = (
        "import sys, tracemalloc\n"
        "from drl_core.artifacts import LocalArtifactStore\n"
        "store = LocalArtifactStore(sys.argv[1])\n"
        "tracemalloc.start()\n"
        "store.put_file('experiments/7/checkpoints/ckpt.pt', sys.argv[2])\n"
        "print(tracemalloc.get_traced_memory()[1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "artifacts"), str(big_file)],
        capture_output=True, text=True, check=True,
    )
    assert int(result.stdout) < BIG_FILE_SIZE / 4
    written = tmp_path / "artifacts" / "experiments" / "7" / "checkpoints" / "ckpt.pt"
    assert written.stat().st_size == BIG_FILE_SIZE


def test_open_streams_in_chunks_and_closes(store):
    data = random.Random(1).randbytes(300_000)
    store.put_bytes("experiments/7/samples/3.png", data, content_type="image/png")
    with store.open("experiments/7/samples/3.png") as reader:
        chunks = []
        while chunk := reader.read(65_536):
            assert len(chunk) <= 65_536
            chunks.append(chunk)
    assert reader.closed
    assert b"".join(chunks) == data
    assert len(chunks) >= 5

    reader = store.open("experiments/7/samples/3.png")
    assert b"".join(reader.iter_chunks(100_000)) == data
    assert reader.closed  # iter_chunks closes once exhausted, as an HTTP response needs


def test_download_writes_atomically_and_creates_parents(store, tmp_path):
    data = random.Random(2).randbytes(50_000)
    store.put_bytes("experiments/7/checkpoints/ckpt_00000010.pt", data)
    target = tmp_path / "dl" / "nested" / "ckpt.pt"
    assert store.download("experiments/7/checkpoints/ckpt_00000010.pt", target) == target
    assert target.read_bytes() == data
    assert os.listdir(target.parent) == ["ckpt.pt"]  # no temporary left behind


def test_missing_key_raises_artifact_not_found(store, tmp_path):
    key = "experiments/7/checkpoints/nope.pt"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    target = downloads / "existing.pt"
    target.write_bytes(b"keep me")
    for call in (
        lambda: store.get_bytes(key),
        lambda: store.size(key),
        lambda: store.open(key),
        lambda: store.download(key, target),
    ):
        with pytest.raises(ArtifactNotFound, match="nope.pt") as info:
            call()
        assert isinstance(info.value, KeyError)
        assert info.value.key == key
        assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)
    assert not store.exists(key)
    assert target.read_bytes() == b"keep me"  # a failed download leaves the old file alone
    assert os.listdir(downloads) == ["existing.pt"]


def test_put_file_of_missing_source_names_the_file(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_file.pt"):
        store.put_file("experiments/7/x.pt", tmp_path / "no_such_file.pt")


# -- overwrite, delete, list ---------------------------------------------------------------


def test_overwrite_replaces_and_rewriting_same_content_is_idempotent(store):
    key = "experiments/7/probe/results.json"
    first = store.put_bytes(key, b'{"acc": 0.5}')
    second = store.put_bytes(key, b'{"acc": 0.9}')
    assert store.get_bytes(key) == b'{"acc": 0.9}'
    assert second.sha256 != first.sha256
    assert store.put_bytes(key, b'{"acc": 0.9}') == second
    assert store.list("experiments/7") == [key]


def test_delete_is_idempotent(store):
    store.put_bytes("experiments/7/samples/1.png", b"png")
    store.delete("experiments/7/samples/1.png")
    assert not store.exists("experiments/7/samples/1.png")
    store.delete("experiments/7/samples/1.png")
    store.delete("experiments/never/was.png")
    with pytest.raises(ArtifactNotFound):
        store.get_bytes("experiments/7/samples/1.png")


KEYS = [
    "experiments/1/checkpoints/ckpt_00000001.pt",
    "experiments/1/embeddings/test/t=0.500.npy",
    "experiments/1/samples/4.png",
    "experiments/10/samples/4.png",
    "experiments/1x.txt",
    "experiments/2/samples/4.png",
]


def test_list_is_sorted_and_bounded_by_a_directory_prefix(store):
    for key in reversed(KEYS):
        store.put_bytes(key, key.encode())
    assert store.list("") == sorted(KEYS)
    assert store.list("experiments/1") == KEYS[:3]
    assert store.list("experiments/1/") == KEYS[:3]
    assert store.list("experiments/1/embeddings") == ["experiments/1/embeddings/test/t=0.500.npy"]
    assert store.list("experiments/3") == []


def test_delete_prefix_removes_exactly_that_prefix(store):
    for key in KEYS:
        store.put_bytes(key, key.encode())
    assert store.delete_prefix("experiments/1") == 3
    assert store.list("") == KEYS[3:]  # experiments/10 and experiments/1x.txt survive
    assert store.delete_prefix("experiments/1/") == 0
    assert store.delete_prefix("experiments/10/") == 1
    assert store.list("") == ["experiments/1x.txt", "experiments/2/samples/4.png"]
    with pytest.raises(ValueError, match="every artifact"):
        store.delete_prefix("")


def test_local_deletes_remove_emptied_directories(tmp_path):
    root = tmp_path / "artifacts"
    store = LocalArtifactStore(root)
    for key in KEYS:
        store.put_bytes(key, b"x")
    store.delete_prefix("experiments/1")
    assert not (root / "experiments" / "1").exists()
    store.delete("experiments/2/samples/4.png")
    assert not (root / "experiments" / "2").exists()
    store.delete_prefix("experiments/10")
    store.delete("experiments/1x.txt")
    assert os.listdir(root) == []  # the root itself stays


def test_local_writes_leave_no_temporary_files_and_list_skips_strays(tmp_path):
    root = tmp_path / "artifacts"
    store = LocalArtifactStore(root)
    store.put_bytes("experiments/7/a.npy", b"a")
    store.put_bytes("experiments/7/a.npy", b"b")
    assert sorted(p.name for p in (root / "experiments" / "7").iterdir()) == ["a.npy"]
    # a crashed writer's temporary must not show up as an artifact
    (root / "experiments" / "7" / f"{TMP_PREFIX}dead-a.npy").write_bytes(b"half")
    assert store.list("experiments/7") == ["experiments/7/a.npy"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["ckpt.pt"]


# -- bad keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected_naming_the_key(store, key, tmp_path):
    for call in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.open(key),
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.delete(key),
        lambda: store.download(key, tmp_path / "out"),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert repr(key) in str(info.value)
    assert store.list("") == []


@pytest.mark.parametrize("prefix", ["/", "/experiments", "..", "experiments/../..", "a\\b"])
def test_bad_prefixes_are_rejected_naming_the_prefix(store, prefix):
    for call in (lambda: store.list(prefix), lambda: store.delete_prefix(prefix)):
        with pytest.raises(ValueError, match="artifact"):
            call()


# -- readiness -------------------------------------------------------------------------------


def test_check_passes_when_healthy(store):
    store.check()


def test_check_reports_unreachable_s3_in_one_readable_line():
    endpoint = f"127.0.0.1:{closed_port()}"
    store = S3ArtifactStore(endpoint, "testing", "testing", "drl", retries=0, connect_timeout_s=1)
    with pytest.raises(ArtifactStoreError) as info:
        store.check()
    message = str(info.value)
    assert endpoint in message and "unreachable" in message
    assert "\n" not in message and " object at 0x" not in message
    # every operation fails loudly; exists() must not pass an outage off as "missing"
    for call in (lambda: store.exists("a/b"), lambda: store.put_bytes("a/b", b"x"),
                 lambda: store.list(""), lambda: store.get_bytes("a/b")):
        with pytest.raises(ArtifactStoreError, match="unreachable"):
            call()
    # build_store contacts the endpoint to create the bucket, so it fails the same way
    with pytest.raises(ArtifactStoreError, match="unreachable"):
        build_store(s3_settings(endpoint, bucket="drl"))


def test_check_reports_missing_bucket(s3_endpoint):
    store = S3ArtifactStore(s3_endpoint, "testing", "testing", "never-created-bucket")
    with pytest.raises(ArtifactStoreError, match="'never-created-bucket'.*does not exist"):
        store.check()


def test_build_store_creates_the_bucket_once(s3_endpoint):
    settings = s3_settings(s3_endpoint)
    first = build_store(settings)
    assert first.client.bucket_exists(settings.s3_bucket)
    first.put_bytes("experiments/1/a", b"a")
    second = build_store(settings)  # bucket already there: no error, contents intact
    assert second.get_bytes("experiments/1/a") == b"a"


def test_check_reports_local_root_that_is_a_file(tmp_path):
    root = tmp_path / "artifacts"
    root.write_bytes(b"not a directory")
    store = build_store(Settings(artifact_backend="local", artifact_dir=root))
    with pytest.raises(ArtifactStoreError, match="not a directory") as info:
        store.check()
    assert str(root) in str(info.value)
    with pytest.raises(ArtifactStoreError, match="experiments/1/a"):
        store.put_bytes("experiments/1/a", b"a")


def test_local_check_creates_a_missing_root(tmp_path):
    root = tmp_path / "fresh" / "artifacts"
    LocalArtifactStore(root).check()
    assert root.is_dir() and os.listdir(root) == []


def test_bad_s3_settings_name_the_setting():
    with pytest.raises(ValueError, match="s3_endpoint 'http://minio:9000'"):
        S3ArtifactStore("http://minio:9000", "a", "b", "drl")
    with pytest.raises(ValueError, match="s3_bucket 'Bad_Bucket'"):
        S3ArtifactStore("minio:9000", "a", "b", "Bad_Bucket")

"""The JSON page of embeddings (api.routers.embeddings.render_page_json, written by orjson):
the page's keys as before, and every number reading back as exactly the stored float32.

Through the HTTP API (a stored artifact, paging, labels) in tests/test_api.py
(test_embeddings_pages_equal_the_stored_array).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from api.routers.embeddings import render_page_json

HEADER = {"experiment": 7, "t": 0.5, "split": "test", "total": 1000, "offset": 40, "limit": 3, "dim": 4}


def decoded_vectors(body: bytes) -> np.ndarray:
    return np.array([item["vector"] for item in json.loads(body)["items"]], dtype=np.float32)


def every_float32(count: int, seed: int = 0) -> np.ndarray:
    """`count` finite float32 drawn uniformly over bit patterns: every exponent, subnormals,
    both signs, numbers whose shortest decimal needs all 9 digits."""
    bits = np.random.default_rng(seed).integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    return values[np.isfinite(values)]


def test_page_keeps_its_keys_and_order() -> None:
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4) / 8
    body = json.loads(render_page_json(HEADER, 40, vectors, np.array([3, 1, 4])))
    assert list(body) == [*HEADER, "items"]
    assert {k: body[k] for k in HEADER} == HEADER
    assert body["items"] == [{"index": 40, "label": 3, "vector": [0.0, 0.125, 0.25, 0.375]},
                             {"index": 41, "label": 1, "vector": [0.5, 0.625, 0.75, 0.875]},
                             {"index": 42, "label": 4, "vector": [1.0, 1.125, 1.25, 1.375]}]
    no_labels = json.loads(render_page_json(HEADER, 0, vectors, None))
    assert [item["label"] for item in no_labels["items"]] == [None, None, None]
    assert json.loads(render_page_json(HEADER, 0, np.zeros((0, 4), np.float32), None))["items"] == []


def test_every_number_reads_back_as_the_stored_float32() -> None:
    values = every_float32(64_000)
    extremes = np.array([0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, 1.1754944e-38, 3.4028235e38,
                         -3.4028235e38, 0.1, 1 / 3, 16777217.0, 1e-7], dtype=np.float32)
    vectors = np.concatenate([values[: len(values) // 16 * 16], np.resize(extremes, 16)]).reshape(-1, 16)
    back = decoded_vectors(render_page_json(HEADER, 0, vectors, None))
    # bit for bit: -0.0 stays -0.0 and no subnormal is flushed
    np.testing.assert_array_equal(back.view(np.uint32), vectors.view(np.uint32))


@pytest.mark.parametrize("layout", ["big-endian", "float64", "strided"])
def test_any_stored_layout_gives_the_same_numbers(layout: str) -> None:
    vectors = every_float32(4096, seed=1)[:4000].reshape(250, 16)
    stored = {"big-endian": vectors.astype(">f4"), "float64": vectors.astype(np.float64),
              "strided": np.repeat(vectors, 2, axis=1)[:, ::2]}[layout]
    back = decoded_vectors(render_page_json(HEADER, 0, stored, None))
    np.testing.assert_array_equal(back.view(np.uint32), vectors.view(np.uint32))


def test_nan_and_inf_are_null() -> None:
    """JSON has no NaN or inf (a diverged model's codes): null in their place, as before."""
    vectors = np.array([[1.5, np.nan, np.inf], [-np.inf, -2.25, 0.0]], dtype=np.float32)
    body = render_page_json(HEADER, 0, vectors, None)
    json.loads(body, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert [item["vector"] for item in json.loads(body)["items"]] == [[1.5, None, None], [None, -2.25, 0.0]]

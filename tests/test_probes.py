"""Probes on synthetic embeddings whose answer is known: well-separated Gaussian blobs score
near 1, the same blobs with shuffled labels score near chance (1/10)."""

import csv
import json
import math
import warnings

import numpy as np
import pytest
from sklearn.svm import SVC

from drl_engine.probes import (ProbeTable, few_shot_svc, linear_probe, mlp_probe,
                               probe_columns, probe_embeddings, probe_sweep, silhouette,
                               stratified_subset)
from drl_engine.spec import EvaluateSpec

N_CLASSES = 10
CHANCE = 1 / N_CLASSES


# Ten class centres in 8-d: +-20 on the axes (+e0..+e7, -e0, -e1), at least 28 apart.
CENTRES = 20.0 * np.vstack([np.eye(8), -np.eye(8)[:2]])


def blobs(n: int, seed: int, spread: float = 1.0):
    """n embeddings in 10 balanced classes: CENTRES plus N(0, spread^2) noise."""
    y = np.arange(n) % N_CLASSES
    return CENTRES[y] + spread * np.random.default_rng(seed).normal(size=(n, 8)), y


@pytest.fixture(scope="module")
def separable():
    train_x, train_y = blobs(1200, seed=1)
    test_x, test_y = blobs(500, seed=2)
    return train_x, train_y, test_x, test_y


@pytest.fixture(scope="module")
def shuffled(separable):
    train_x, train_y, test_x, test_y = separable
    rng = np.random.default_rng(7)
    return train_x, rng.permutation(train_y), test_x, rng.permutation(test_y)


def test_every_probe_separates_blobs(separable):
    scores = probe_embeddings(*separable, EvaluateSpec())
    assert list(scores) == ["svc_100", "svc_1000", "linear", "mlp", "silhouette"]
    for column in ["svc_100", "svc_1000", "linear", "mlp"]:
        assert scores[column] > 0.95, (column, scores)
    assert scores["silhouette"] > 0.7


def test_shuffled_labels_give_chance(shuffled):
    scores = probe_embeddings(*shuffled, EvaluateSpec())
    for column in ["svc_100", "svc_1000", "linear", "mlp"]:
        assert abs(scores[column] - CHANCE) < 0.06, (column, scores)
    assert abs(scores["silhouette"]) < 0.1


def test_probe_train_limit_subsets_linear_and_mlp(separable):
    train_x, train_y, test_x, test_y = separable
    assert linear_probe(train_x, train_y, test_x, test_y, seed=0, max_train=50) > 0.95
    assert mlp_probe(train_x, train_y, test_x, test_y, seed=0, max_train=50) > 0.9


def test_stratified_subset_exact_size_balanced_and_seeded():
    y = np.arange(1000) % N_CLASSES
    idx = stratified_subset(y, 100, seed=3)
    assert len(idx) == len(np.unique(idx)) == 100
    assert np.bincount(y[idx]).tolist() == [10] * N_CLASSES
    assert np.array_equal(idx, stratified_subset(y, 100, seed=3))
    assert not np.array_equal(idx, stratified_subset(y, 100, seed=4))


def test_stratified_subset_proportional_and_caps_rare_class():
    # Class 0: 900 samples, class 1: 99, class 2: 1 sample.
    y = np.array([0] * 900 + [1] * 99 + [2])
    idx = stratified_subset(y, 100, seed=0)
    counts = np.bincount(y[idx], minlength=3).tolist()
    assert sum(counts) == 100
    assert counts[2] == 1 and counts[1] in (9, 10) and counts[0] in (89, 90)
    # A budget above a class's count takes all of it and fills up from the others.
    y = np.array([0] * 5 + [1] * 100)
    counts = np.bincount(y[stratified_subset(y, 60, seed=0)]).tolist()
    assert sum(counts) == 60 and counts[0] <= 5


def test_few_shot_svc_uses_exactly_n_labels(separable):
    train_x, train_y, test_x, test_y = separable
    idx = stratified_subset(train_y, 100, seed=5)
    expected = SVC().fit(train_x[idx], train_y[idx]).score(test_x, test_y)
    assert few_shot_svc(train_x, train_y, test_x, test_y, n_labels=100, seed=5) == expected
    # On the shuffled task a different subset size gives a different classifier.
    rng = np.random.default_rng(0)
    noisy_y = rng.permutation(train_y)
    idx = stratified_subset(noisy_y, 40, seed=5)
    expected = SVC().fit(train_x[idx], noisy_y[idx]).score(test_x, test_y)
    assert few_shot_svc(train_x, noisy_y, test_x, test_y, n_labels=40, seed=5) == expected


def test_budget_above_available_labels_warns_and_uses_all(separable):
    train_x, train_y, test_x, test_y = separable
    small_x, small_y = train_x[:300], train_y[:300]
    with pytest.warns(UserWarning, match="evaluate.label_budgets"):
        acc = few_shot_svc(small_x, small_y, test_x, test_y, n_labels=1000, seed=0)
    assert acc == SVC().fit(small_x, small_y).score(test_x, test_y)


def test_single_class_subset_names_label_budgets(separable):
    train_x, _, test_x, test_y = separable
    with pytest.raises(ValueError, match="evaluate.label_budgets"):
        few_shot_svc(train_x, np.zeros(len(train_x)), test_x, test_y, n_labels=100, seed=0)


def test_missing_labels_name_dataset_labels(separable):
    train_x, train_y, test_x, test_y = separable
    with pytest.raises(ValueError, match="dataset labels"):
        probe_embeddings(train_x, None, test_x, test_y, EvaluateSpec())
    with pytest.raises(ValueError, match="dataset labels"):
        probe_sweep({0.5: (train_x, test_x)}, train_y, None, EvaluateSpec())


def test_bad_embeddings_are_refused(separable):
    train_x, train_y, test_x, test_y = separable
    with pytest.raises(ValueError, match="test embeddings.*NaN"):
        bad = test_x.copy()
        bad[0, 0] = np.nan
        linear_probe(train_x, train_y, bad, test_y, seed=0)
    with pytest.raises(ValueError, match="train labels: 10 labels for 1200"):
        linear_probe(train_x, train_y[:10], test_x, test_y, seed=0)
    with pytest.raises(ValueError, match="differ in width"):
        linear_probe(train_x, train_y, test_x[:, :4], test_y, seed=0)


def test_silhouette_subsamples_reproducibly():
    x, y = blobs(3000, seed=9, spread=8.0)
    a = silhouette(x, y, seed=1, max_points=500)
    assert a == silhouette(x, y, seed=1, max_points=500)
    assert a != silhouette(x, y, seed=2, max_points=500)
    assert abs(a - silhouette(x, y, seed=1, max_points=3000)) < 0.05


def test_probe_columns_follow_spec():
    spec = EvaluateSpec(probes=["silhouette", "svc"], label_budgets=[10, 50, 10])
    assert probe_columns(spec) == ["silhouette", "svc_10", "svc_50"]


def table() -> ProbeTable:
    return ProbeTable(columns=["svc_100", "silhouette"], rows=[
        {"t": 0.0, "svc_100": 0.50, "silhouette": 0.1},
        {"t": 0.3, "svc_100": 0.90, "silhouette": 0.4},
        {"t": 0.6, "svc_100": 0.90, "silhouette": -0.2},
        {"t": 1.0, "svc_100": 0.20, "silhouette": 0.5},
    ])


def test_best_picks_max_and_smallest_t_on_ties():
    assert table().best() == {"svc_100": {"t": 0.3, "value": 0.90},
                              "silhouette": {"t": 1.0, "value": 0.5}}


def test_csv_header_and_rows(tmp_path):
    path = tmp_path / "probes.csv"
    table().to_csv(path)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["t", "svc_100", "silhouette"]
    assert len(rows) == 5
    assert [r[0] for r in rows[1:]] == ["0.000", "0.300", "0.600", "1.000"]
    assert float(rows[3][2]) == pytest.approx(-0.2)


def test_dict_round_trip_is_json():
    original = table()
    original.rows[0]["svc_100"] = math.nan
    d = json.loads(json.dumps(original.to_dict(), allow_nan=False))
    assert d["best"]["svc_100"] == {"t": 0.3, "value": 0.9}
    back = ProbeTable.from_dict(d)
    assert back.columns == original.columns
    assert math.isnan(back.rows[0]["svc_100"])
    assert back.rows[1:] == original.rows[1:]


def test_format_table_marks_best():
    text = table().format_table()
    lines = text.splitlines()
    assert lines[0].split() == ["t", "svc_100", "silhouette"]
    assert "0.9000*" in lines[2] and "0.9000*" not in lines[3]
    assert "0.5000*" in lines[4 + 0]
    assert len({len(line) for line in lines[:-1]}) == 1   # fixed width


def test_sweep_reuses_identical_arrays(separable):
    train_x, train_y, test_x, test_y = separable
    pair = (train_x, test_x)
    calls = []
    spec = EvaluateSpec(probes=["linear", "silhouette"])
    result = probe_sweep({1.0: pair, 0.0: pair, 0.5: pair}, train_y, test_y, spec,
                         progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]
    assert [r["t"] for r in result.rows] == [0.0, 0.5, 1.0]
    assert result.rows[0] == {**result.rows[2], "t": 0.0}


def test_sweep_finds_the_informative_t(separable):
    train_x, train_y, test_x, test_y = separable
    rng = np.random.default_rng(0)
    noise = (rng.normal(size=train_x.shape), rng.normal(size=test_x.shape))
    calls = []
    spec = EvaluateSpec(probes=["svc", "silhouette"], label_budgets=[100])
    result = probe_sweep({0.0: noise, 0.7: (train_x, test_x)}, train_y, test_y, spec,
                         progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    assert result.columns == ["svc_100", "silhouette"]
    best = result.best()
    assert best["svc_100"]["t"] == 0.7 and best["svc_100"]["value"] > 0.95
    assert best["silhouette"]["t"] == 0.7
    assert result.rows[0]["svc_100"] < 0.3


def test_sweep_warnings_do_not_crash_on_small_train(separable):
    train_x, train_y, test_x, test_y = separable
    spec = EvaluateSpec(probes=["svc"], label_budgets=[100, 5000])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = probe_sweep({0.2: (train_x, test_x)}, train_y, test_y, spec)
    assert any("evaluate.label_budgets" in str(w.message) for w in caught)
    assert result.rows[0]["svc_5000"] > 0.95

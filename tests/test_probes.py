"""Probes on synthetic embeddings whose answer is known: well-separated Gaussian blobs score
near 1, the same blobs with shuffled labels score near chance (1/10). The best t is chosen on
a validation split held out from the training embeddings, and the untrained control is
carried through every output."""

import csv
import json
import math
import warnings

import numpy as np
import pytest
from sklearn.svm import SVC

import drl_engine.probes as probes_module
from drl_engine.probes import (ProbeTable, few_shot_svc, linear_probe, mlp_probe,
                               probe_columns, probe_embeddings, probe_sweep, silhouette,
                               stratified_subset, validation_split)
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


ACCURACY_COLUMNS = ["svc_100", "svc_1000", "svc_100_std", "svc_1000_std", "linear", "mlp"]


def test_every_probe_separates_blobs(separable):
    scores = probe_embeddings(*separable, EvaluateSpec())
    columns = [*ACCURACY_COLUMNS, "silhouette"]
    assert list(scores) == [key for c in columns for key in (c, f"val_{c}")]
    for column in ACCURACY_COLUMNS:
        assert scores[column] > 0.95 and scores[f"val_{column}"] > 0.95, (column, scores)
    assert scores["silhouette"] > 0.7 and scores["val_silhouette"] > 0.7


def test_shuffled_labels_give_chance(shuffled):
    scores = probe_embeddings(*shuffled, EvaluateSpec())
    for column in ACCURACY_COLUMNS:
        assert abs(scores[column] - CHANCE) < 0.06, (column, scores)
    assert abs(scores["silhouette"]) < 0.1


def offset_codes(n: int, seed: int, offset: float = 1000.0):
    """Ten classes of unequal sizes, separable at unit scale, shifted by large per-dimension
    offsets: what a user's raw codes can look like."""
    rng = np.random.default_rng(seed)
    weights = np.linspace(0.06, 0.14, N_CLASSES)
    y = rng.choice(N_CLASSES, size=n, p=weights / weights.sum())
    x = 0.4 * CENTRES[y] + 3.0 * rng.normal(size=(n, 8))
    return x + offset * np.array([0, 1, -1, 0.4, 0, -0.6, 0.2, 0.8]), y


def test_standardized_svc_rescues_codes_with_large_offsets():
    # gamma='scale' divides by the variance of all the numbers, which the offsets inflate
    # without moving any point closer to another: the raw SVC's kernel is nearly constant and
    # it predicts (almost) one class, as a user found (svc_100 0.078 at every t, standardized
    # 0.59). The offsets are the cause: without them raw and standardized agree.
    train_x, train_y = offset_codes(1000, seed=1)
    test_x, test_y = offset_codes(500, seed=2)
    raw = few_shot_svc(train_x, train_y, test_x, test_y, n_labels=100, seed=0)
    std = few_shot_svc(train_x, train_y, test_x, test_y, n_labels=100, seed=0, standardize=True)
    assert raw < 0.3 < 0.6 < std, (raw, std)
    idx = stratified_subset(train_y, 100, seed=0)
    predicted = SVC().fit(train_x[idx], train_y[idx]).predict(test_x)
    assert len(np.unique(predicted)) <= 2
    plain_train, plain_test = offset_codes(1000, 1, offset=0.0), offset_codes(500, 2, offset=0.0)
    plain = few_shot_svc(*plain_train, *plain_test, n_labels=100, seed=0)
    assert abs(plain - std) < 0.05, (plain, std)
    # The sweep reports both, side by side.
    scores = probe_embeddings(train_x, train_y, test_x, test_y,
                              EvaluateSpec(probes=["svc"], label_budgets=[100]))
    assert scores["svc_100"] < 0.3 < 0.6 < scores["svc_100_std"], scores


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
    assert probe_columns(spec) == ["silhouette", "svc_10", "svc_50", "svc_10_std", "svc_50_std"]


def table() -> ProbeTable:
    # Test values favour t = 0.3 (svc) and t = 1.0 (silhouette); validation picks otherwise.
    return ProbeTable(columns=["svc_100", "silhouette"], rows=[
        {"t": 0.0, "svc_100": 0.50, "val_svc_100": 0.55, "silhouette": 0.1, "val_silhouette": 0.3},
        {"t": 0.3, "svc_100": 0.90, "val_svc_100": 0.60, "silhouette": 0.4, "val_silhouette": 0.3},
        {"t": 0.6, "svc_100": 0.85, "val_svc_100": 0.80, "silhouette": -0.2, "val_silhouette": 0.0},
        {"t": 1.0, "svc_100": 0.20, "val_svc_100": 0.80, "silhouette": 0.5, "val_silhouette": 0.1},
    ], control_rows=[
        {"t": 0.0, "svc_100": 0.30, "val_svc_100": 0.35, "silhouette": 0.0, "val_silhouette": 0.0},
        {"t": 1.0, "svc_100": 0.10, "val_svc_100": 0.40, "silhouette": 0.1, "val_silhouette": 0.2},
    ])


def test_best_t_is_chosen_on_validation_never_on_test():
    # The test split favours t = 0.3 for svc_100 and t = 1.0 for the silhouette; the best t is
    # the validation's (ties to the smallest t), reported with its test value.
    assert table().best() == {"svc_100": {"t": 0.6, "value": 0.85, "validation": 0.80},
                              "silhouette": {"t": 0.0, "value": 0.1, "validation": 0.3}}
    assert table().best("random_init") == {
        "svc_100": {"t": 1.0, "value": 0.10, "validation": 0.40},
        "silhouette": {"t": 1.0, "value": 0.1, "validation": 0.2}}
    # Without validation values there is nothing to choose on: no best t, not the test's.
    assert ProbeTable(columns=["svc_100"], rows=[{"t": 0.0, "svc_100": 0.9}]).best() == {}


def test_sweep_chooses_t_on_validation_embeddings(separable):
    # At t = 0.2 the probes' training and validation embeddings are informative and the test
    # embeddings noise; at t = 0.8 the validation embeddings are noise and the test ones
    # informative. The test split favours 0.8, the validation split 0.2: best() says 0.2.
    train_x, train_y, test_x, test_y = separable
    spec = EvaluateSpec(probes=["svc", "linear", "silhouette"], label_budgets=[100],
                        validation_size=200)
    split = validation_split(train_y, spec)
    rng = np.random.default_rng(3)
    noisy_validation = train_x.copy()
    noisy_validation[split.validation] = 20 * rng.normal(size=(len(split.validation), 8))
    result = probe_sweep({0.2: (train_x, 20 * rng.normal(size=test_x.shape)),
                          0.8: (noisy_validation, test_x)}, train_y, test_y, spec)
    best = result.best()
    for column in result.columns:
        assert best[column]["t"] == 0.2, (column, best, result.rows)
        assert result.rows[1][column] > result.rows[0][column], (column, result.rows)
        assert best[column]["value"] == result.rows[0][column]


def test_validation_split_is_fixed_and_held_out_from_every_fit(separable, monkeypatch):
    train_x, train_y, test_x, test_y = separable
    spec = EvaluateSpec(probes=["svc", "linear", "mlp"], label_budgets=[50, 300],
                        validation_size=150)
    split = validation_split(train_y, spec)
    assert len(split.validation) == 150 and len(split.fit) == len(train_y) - 150
    assert np.intersect1d(split.validation, split.fit).size == 0
    assert np.bincount(train_y[split.validation]).tolist() == [15] * N_CLASSES
    # The same indices every time it is asked (so at every t, for either encoder)...
    assert np.array_equal(split.validation, validation_split(train_y, spec).validation)
    assert not np.array_equal(split.validation,
                              validation_split(train_y, spec.model_copy(update={"seed": 1})).validation)
    # ...and no probe is ever fitted on a validation embedding: record what each fit sees.
    fitted_rows: list[np.ndarray] = []
    real_fit = probes_module._fit_column

    def recording_fit(column, x, y, spec):
        fitted_rows.append(x[:, 0].copy())
        return real_fit(column, x, y, spec)

    monkeypatch.setattr(probes_module, "_fit_column", recording_fit)
    # Column 0 of each embedding is its index in the training split, so a fit's rows name it.
    tagged = np.column_stack([np.arange(len(train_x)), train_x])
    test_tagged = np.column_stack([np.full(len(test_x), -1.0), test_x])
    probe_sweep({0.0: (tagged, test_tagged), 1.0: (tagged * 1.0, test_tagged)}, train_y, test_y,
                spec, control={0.5: (tagged + 0.0, test_tagged)})
    assert len(fitted_rows) == 3 * len(probe_columns(spec))
    seen = np.unique(np.concatenate(fitted_rows)).astype(int)
    assert np.intersect1d(seen, split.validation).size == 0
    assert set(seen) <= set(split.fit.tolist())


def test_validation_split_is_capped_for_small_training_splits():
    y = np.arange(300) % N_CLASSES
    # 20% of 300, keeping the largest label budget for the probes.
    assert len(validation_split(y, EvaluateSpec(label_budgets=[20, 50])).validation) == 60
    assert len(validation_split(y, EvaluateSpec(label_budgets=[20, 260])).validation) == 40
    assert len(validation_split(y, EvaluateSpec(validation_size=30)).validation) == 30
    with pytest.raises(ValueError, match="evaluate.validation_size.*label_budgets"):
        validation_split(y, EvaluateSpec(label_budgets=[295]))
    with pytest.raises(ValueError, match="evaluate.validation_size: .*at least 2 .* got 5"):
        validation_split(y, EvaluateSpec(validation_size=5))


def test_csv_has_both_encoders_and_validation_values(tmp_path):
    path = tmp_path / "probes.csv"
    table().to_csv(path)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["encoder", "t", "svc_100", "silhouette", "val_svc_100", "val_silhouette"]
    assert len(rows) == 7
    assert [r[0] for r in rows[1:]] == ["trained"] * 4 + ["random_init"] * 2
    assert [r[1] for r in rows[1:]] == ["0.000", "0.300", "0.600", "1.000", "0.000", "1.000"]
    assert float(rows[3][3]) == pytest.approx(-0.2) and float(rows[3][4]) == pytest.approx(0.8)
    assert float(rows[6][2]) == pytest.approx(0.1)


def test_dict_round_trip_is_json():
    original = table()
    original.rows[0]["svc_100"] = math.nan
    original.control_rows[1]["val_svc_100"] = math.nan
    d = json.loads(json.dumps(original.to_dict(), allow_nan=False))
    assert d["best"]["svc_100"] == {"t": 0.6, "value": 0.85, "validation": 0.8}
    assert d["control_best"]["svc_100"] == {"t": 0.0, "value": 0.3, "validation": 0.35}
    back = ProbeTable.from_dict(d)
    assert back.columns == original.columns
    assert math.isnan(back.rows[0]["svc_100"]) and math.isnan(back.control_rows[1]["val_svc_100"])
    assert back.rows[1:] == original.rows[1:] and back.control_rows[0] == original.control_rows[0]
    assert back.to_dict() == d
    # A table stored before controls existed reads back without any.
    assert ProbeTable.from_dict({"columns": ["svc_100"], "rows": []}).control_rows == []


def test_format_table_marks_best_and_prints_the_control():
    lines = table().format_table().splitlines()
    assert lines[0].startswith("trained encoder")
    assert lines[1].split() == ["t", "svc_100", "silhouette"]
    assert "0.8500*" in lines[4] and "0.9000*" not in lines[3]
    assert "0.1000*" in lines[2]
    assert len({len(line) for line in lines[1:6]}) == 1   # fixed width
    control = lines.index("random_init encoder (untrained control), test values:")
    assert [line.split()[0] for line in lines[control + 2:control + 4]] == ["0.000", "1.000"]
    assert "0.1000*" in lines[control + 3]


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


def test_sweep_probes_the_control_identically(separable):
    train_x, train_y, test_x, test_y = separable
    rng = np.random.default_rng(1)
    untrained = (rng.normal(size=train_x.shape), rng.normal(size=test_x.shape))
    calls = []
    spec = EvaluateSpec(probes=["svc", "silhouette"], label_budgets=[100])
    result = probe_sweep({0.0: (train_x, test_x), 1.0: (train_x, test_x)}, train_y, test_y, spec,
                         progress=lambda done, total: calls.append((done, total)),
                         control={0.0: untrained, 1.0: untrained})
    assert calls == [(1, 2), (2, 2)]   # one distinct pair each: probed once
    assert [r["t"] for r in result.control_rows] == [0.0, 1.0]
    assert set(result.control_rows[0]) == set(result.rows[0])
    assert result.control_rows[0]["svc_100"] < 0.3 < 0.95 < result.rows[0]["svc_100"]
    assert set(result.best("random_init")) == set(result.columns)
    # The same embeddings give the same row, whichever encoder they are filed under.
    same = probe_sweep({0.0: (train_x, test_x)}, train_y, test_y, spec,
                       control={0.0: (train_x.copy(), test_x.copy())})
    assert same.control_rows == same.rows


def test_sweep_finds_the_informative_t(separable):
    train_x, train_y, test_x, test_y = separable
    rng = np.random.default_rng(0)
    noise = (rng.normal(size=train_x.shape), rng.normal(size=test_x.shape))
    calls = []
    spec = EvaluateSpec(probes=["svc", "silhouette"], label_budgets=[100])
    result = probe_sweep({0.0: noise, 0.7: (train_x, test_x)}, train_y, test_y, spec,
                         progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    assert result.columns == ["svc_100", "svc_100_std", "silhouette"]
    best = result.best()
    assert best["svc_100"]["t"] == 0.7 and best["svc_100"]["value"] > 0.95
    assert best["svc_100_std"]["t"] == 0.7
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

"""Downstream probes of a frozen encoder's embeddings, per diffusion time t.

Every probe takes embeddings of shape (N, D) with their class labels and returns one number:
- `few_shot_svc`: scikit-learn `SVC()` with its default hyperparameters (RBF kernel, C = 1,
  gamma = 'scale') fitted on n labelled training embeddings, accuracy on the test split
  (paper appendix E: n = 100 and n = 1000); on raw codes (the paper's protocol, column
  svc_<n>) and on codes standardized by a scaler fitted on the n labelled ones (svc_<n>_std):
  gamma = 'scale' is 1 / (D * variance of all the numbers), which large per-dimension offsets
  inflate without changing any distance, so on such codes the raw SVC's kernel is nearly
  constant and it predicts one class;
- `linear_probe`: logistic regression on all training labels (appendix F);
- `mlp_probe`: a one-hidden-layer MLP on all training labels (appendix F);
- `silhouette`: mean silhouette of the test embeddings grouped by class, euclidean
  (appendix H): s(i) = (b(i) - a(i)) / max(a(i), b(i)) with a(i) the mean distance to its own
  class and b(i) the smallest mean distance to another class.

`probe_embeddings` runs the probes named in `EvaluateSpec.probes` for one t; `probe_sweep`
runs them over a grid of t and returns a `ProbeTable` (the whole curve, and the best t per
probe). Every subset of labels is drawn by `stratified_subset` with `EvaluateSpec.seed`, so
the same labelled examples are used at every t and the curve compares like with like.

Choosing t is model selection, so it never looks at the test split: `validation_split` holds
out `EvaluateSpec.validation_size` training embeddings (the same ones at every t), every probe
is fitted on the rest and scored on both, and `ProbeTable.best` picks the t with the best
validation value. A table also carries the untrained control (`random_init`: the same
architecture and seed before any training step) probed identically, so a curve that an
untrained encoder reaches too is seen as such.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from .spec import RANDOM_INIT, TRAINED, EncoderWeights, EvaluateSpec

# One hidden layer of this many ReLU units (our choice: wide enough for 8..512-d codes, small
# enough that 60k embeddings train in seconds on a CPU).
MLP_HIDDEN_UNITS = 256
# Early stopping holds out this fraction of the probe's training set.
MLP_VALIDATION_FRACTION = 0.1
# Upper bound only: early stopping (or, on tiny sets, the training-loss plateau) ends sooner.
MLP_MAX_EPOCHS = 500
# The validation split takes at most this fraction of a small training split, so the probes
# still train on most of it (on MNIST's 60k, validation_size = 1000 is under 2%).
VALIDATION_MAX_FRACTION = 0.2
# ... and at least this many embeddings per class, so that a validation accuracy and a
# silhouette (which needs fewer classes than points) mean something.
VALIDATION_MIN_PER_CLASS = 2
# A column's validation value is stored beside its test value under this prefix.
VALIDATION_PREFIX = "val_"

ProgressFn = Callable[[int, int], None]


# --- inputs ------------------------------------------------------------------------------

def _features(x: Any, name: str) -> np.ndarray:
    """Embeddings as a float (N, D) array; (N, ...) is flattened, NaN/inf are refused."""
    if x is None:
        raise ValueError(f"{name}: embeddings are missing (got None)")
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.ndim < 2:
        raise ValueError(f"{name}: expected embeddings of shape (N, D), got shape {arr.shape}")
    arr = arr.reshape(arr.shape[0], -1).astype(np.float64, copy=False)
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: no embeddings (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: embeddings contain NaN or inf (a diverged encoder?)")
    return arr


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    """Class labels as a 1-d array matching n embeddings."""
    if y is None:
        raise ValueError(f"{name}: the probes need the dataset labels, got None "
                         "(a dataset without labels can only be encoded, not probed)")
    arr = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name}: {arr.shape[0]} labels for {n} embeddings")
    return arr


def _probe_inputs(train_x, train_y, test_x, test_y
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated (train_x, train_y, test_x, test_y) for a supervised probe."""
    train_x, test_x = _features(train_x, "train embeddings"), _features(test_x, "test embeddings")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train and test embeddings differ in width: {train_x.shape[1]} "
                         f"vs {test_x.shape[1]}")
    return (train_x, _labels(train_y, len(train_x), "train labels"),
            test_x, _labels(test_y, len(test_x), "test labels"))


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of exactly min(n, len(y)) samples, classes in proportion to their counts.

    Class k of c_k samples gets n * c_k / N of the draws (largest remainder rounding), at least
    one per class when n >= number of classes, never more than c_k (a rare class gives all it
    has and the others make up the difference). Reproducible for a given seed.
    """
    y = np.asarray(y).reshape(-1)
    if n < 1:
        raise ValueError(f"subset size must be >= 1, got {n}")
    if n >= len(y):
        return np.arange(len(y))
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    quota = n * counts / len(y)
    alloc = np.floor(quota).astype(int)
    if n >= len(classes):
        alloc = np.maximum(alloc, 1)
    alloc = np.minimum(alloc, counts)
    # n < N, so there is always room to add and always a class above its minimum to trim.
    while alloc.sum() < n:
        room = np.where(alloc < counts, quota - alloc, -np.inf)
        alloc[np.argmax(room)] += 1
    floor_ = 1 if n >= len(classes) else 0
    while alloc.sum() > n:
        excess = np.where(alloc > floor_, alloc - quota, -np.inf)
        alloc[np.argmax(excess)] -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(inverse == k), size=a, replace=False)
              for k, a in enumerate(alloc) if a > 0]
    return np.sort(np.concatenate(picked))


def _train_subset(train_x: np.ndarray, train_y: np.ndarray, max_train: int | None,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    if max_train is None or max_train >= len(train_y):
        return train_x, train_y
    idx = stratified_subset(train_y, max_train, seed)
    return train_x[idx], train_y[idx]


def _need_two_classes(y: np.ndarray, what: str) -> None:
    if len(np.unique(y)) < 2:
        raise ValueError(f"{what}: needs at least two classes in the dataset labels, "
                         f"got only {np.unique(y).tolist()}")


@dataclass(frozen=True)
class ValidationSplit:
    """Sorted, disjoint indices into the training embeddings: `validation` (the best t is
    chosen on these) and `fit` (the rest: what every probe is fitted on). They depend on the
    labels and the spec only, so they are the same at every t and for every encoder."""

    validation: np.ndarray
    fit: np.ndarray


def validation_split(y_train, spec: EvaluateSpec) -> ValidationSplit:
    """Hold out a seeded stratified subset of the training labels for choosing t.

    Its size is `spec.validation_size`, capped at VALIDATION_MAX_FRACTION of the training
    split and, when the few-shot SVC runs, so that the largest label budget still fits in
    what remains (a budget above the whole split uses all that remains, with a warning, as
    before). Below VALIDATION_MIN_PER_CLASS per class there is nothing to choose t on: a
    ValueError names the field to change.
    """
    y = _labels(y_train, 0 if y_train is None else len(y_train), "train labels")
    n, n_classes = len(y), len(np.unique(y))
    size = min(spec.validation_size, int(VALIDATION_MAX_FRACTION * n))
    largest_budget = max(spec.label_budgets)
    if "svc" in spec.probes and largest_budget < n:
        size = min(size, n - largest_budget)
    minimum = VALIDATION_MIN_PER_CLASS * n_classes
    if spec.validation_size < minimum:
        raise ValueError(f"evaluate.validation_size: the best t is chosen on at least "
                         f"{VALIDATION_MIN_PER_CLASS} validation embeddings per class "
                         f"({minimum} for {n_classes} classes), got {spec.validation_size}")
    if size < minimum:
        raise ValueError(
            f"evaluate.validation_size: {n} training embeddings cannot hold out the {minimum} "
            f"validation embeddings the best t is chosen on (at most "
            f"{VALIDATION_MAX_FRACTION:.0%} of them"
            + (f", keeping {largest_budget} for evaluate.label_budgets" if "svc" in spec.probes
               else "") + "); use more training data or smaller evaluate.label_budgets")
    validation = stratified_subset(y, size, spec.seed)
    return ValidationSplit(validation=validation, fit=np.setdiff1d(np.arange(n), validation))


# --- the probes --------------------------------------------------------------------------

# Each probe is a `_fit_*` function (validated arrays in, fitted classifier out, so one fit is
# scored on the validation and the test split alike) and a public function giving its test
# accuracy.

def _fit_few_shot_svc(train_x: np.ndarray, train_y: np.ndarray, n_labels: int, seed: int,
                      standardize: bool):
    if n_labels < 2:
        raise ValueError(f"evaluate.label_budgets: every budget must be >= 2, got {n_labels}")
    if n_labels > len(train_y):
        warnings.warn(f"evaluate.label_budgets: budget {n_labels} exceeds the {len(train_y)} "
                      f"training labels; the few-shot SVC uses all {len(train_y)}", stacklevel=2)
    idx = stratified_subset(train_y, n_labels, seed)
    x, y = train_x[idx], train_y[idx]
    if len(np.unique(y)) < 2:
        raise ValueError(f"evaluate.label_budgets: the {len(y)}-label subset holds a single "
                         "class; the few-shot SVC needs at least two (raise the budget or "
                         "check the dataset labels)")
    # The scaler sees the n labelled embeddings only: a few-shot user has no others.
    return (make_pipeline(StandardScaler(), SVC()) if standardize else SVC()).fit(x, y)


def few_shot_svc(train_x, train_y, test_x, test_y, n_labels: int, seed: int,
                 standardize: bool = False) -> float:
    """Test accuracy of `SVC()` (default hyperparameters) fitted on n_labels training embeddings.

    The labelled examples are `stratified_subset(train_y, n_labels, seed)`, so the same ones
    are used at every t. A budget above the number of training labels uses them all (with a
    warning). Features are raw, as in the paper's few-shot protocol; `standardize` puts a
    StandardScaler fitted on the n labelled embeddings only in front (column svc_<n>_std).
    """
    train_x, train_y, test_x, test_y = _probe_inputs(train_x, train_y, test_x, test_y)
    model = _fit_few_shot_svc(train_x, train_y, n_labels, seed, standardize)
    return float(model.score(test_x, test_y))


def _fit_linear_probe(train_x: np.ndarray, train_y: np.ndarray, seed: int,
                      max_train: int | None):
    x, y = _train_subset(train_x, train_y, max_train, seed)
    _need_two_classes(y, "linear probe")
    # lbfgs' default 100 iterations stops short on 60k samples; 1000 converges.
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    return model.fit(x, y)


def linear_probe(train_x, train_y, test_x, test_y, seed: int,
                 max_train: int | None = None) -> float:
    """Test accuracy of multinomial logistic regression on standardised embeddings.

    Features are standardised with mean and std fitted on the (subset of) training
    embeddings only, then an L2-regularised (C = 1) softmax regression is fitted with lbfgs.
    Trains on all training labels, or on a seeded stratified subset of at most `max_train`
    (`EvaluateSpec.probe_train_limit`).
    """
    train_x, train_y, test_x, test_y = _probe_inputs(train_x, train_y, test_x, test_y)
    return float(_fit_linear_probe(train_x, train_y, seed, max_train).score(test_x, test_y))


def _can_hold_out(y: np.ndarray, fraction: float) -> bool:
    """Whether a stratified validation split of `fraction` keeps every class on both sides."""
    _, counts = np.unique(y, return_counts=True)
    n_val = math.ceil(fraction * len(y))
    return counts.min() >= 2 and n_val >= len(counts) and len(y) - n_val >= len(counts)


def _fit_mlp_probe(train_x: np.ndarray, train_y: np.ndarray, seed: int, max_train: int | None):
    x, y = _train_subset(train_x, train_y, max_train, seed)
    _need_two_classes(y, "mlp probe")
    mlp = MLPClassifier(hidden_layer_sizes=(MLP_HIDDEN_UNITS,),
                        early_stopping=_can_hold_out(y, MLP_VALIDATION_FRACTION),
                        validation_fraction=MLP_VALIDATION_FRACTION, max_iter=MLP_MAX_EPOCHS,
                        random_state=seed)
    return make_pipeline(StandardScaler(), mlp).fit(x, y)


def mlp_probe(train_x, train_y, test_x, test_y, seed: int,
              max_train: int | None = None) -> float:
    """Test accuracy of a one-hidden-layer MLP (MLP_HIDDEN_UNITS ReLU units, Adam).

    Features are standardised on the training embeddings only. Training stops early when the
    accuracy on a stratified 10% held out from the training set stops improving (when the
    training set is too small to hold out every class, it stops when the training loss
    plateaus, within MLP_MAX_EPOCHS).
    Same training-subset rule as `linear_probe`.
    """
    train_x, train_y, test_x, test_y = _probe_inputs(train_x, train_y, test_x, test_y)
    return float(_fit_mlp_probe(train_x, train_y, seed, max_train).score(test_x, test_y))


def silhouette(test_x, test_y, seed: int, max_points: int = 5000) -> float:
    """Mean silhouette of the test embeddings by class, euclidean distance, in [-1, 1].

    s(i) = (b(i) - a(i)) / max(a(i), b(i)). The cost is quadratic in the number of points, so
    a test set larger than `max_points` is replaced by a seeded stratified subset of
    `max_points` embeddings.
    """
    test_x = _features(test_x, "test embeddings")
    test_y = _labels(test_y, len(test_x), "test labels")
    idx = stratified_subset(test_y, max_points, seed)
    x, y = test_x[idx], test_y[idx]
    _need_two_classes(y, "silhouette")
    if len(np.unique(y)) >= len(y):
        raise ValueError(f"silhouette: every one of the {len(y)} test points is its own class; "
                         "check the dataset labels")
    return float(silhouette_score(x, y, metric="euclidean"))


def chance_accuracy(labels: Any) -> float:
    """The accuracy of guessing: 1 / the number of classes among `labels` (probes.png's chance
    line; a probe near it has found no class in the code)."""
    classes = len(np.unique(np.asarray(labels)))
    if classes == 0:
        raise ValueError("chance accuracy: no labels")
    return 1.0 / classes


# --- one t, and a sweep over t -----------------------------------------------------------

def probe_columns(spec: EvaluateSpec) -> list[str]:
    """Column names in the order of `spec.probes`; 'svc' expands to svc_<n> per label budget
    (raw codes, the paper's protocol), then svc_<n>_std per budget (standardized codes)."""
    columns: list[str] = []
    for probe in spec.probes:
        if probe == "svc":
            columns += [f"svc_{n}" for n in spec.label_budgets]
            columns += [f"svc_{n}_std" for n in spec.label_budgets]
        else:
            columns.append(probe)
    return list(dict.fromkeys(columns))


def validation_column(column: str) -> str:
    """The key of a column's validation value in a row: val_<column>."""
    return VALIDATION_PREFIX + column


def _fit_column(column: str, train_x: np.ndarray, train_y: np.ndarray, spec: EvaluateSpec):
    """The fitted classifier behind an accuracy column."""
    limit, seed = spec.probe_train_limit, spec.seed
    if column.startswith("svc_"):
        budget, _, variant = column.removeprefix("svc_").partition("_")
        return _fit_few_shot_svc(train_x, train_y, int(budget), seed, standardize=variant == "std")
    if column == "linear":
        return _fit_linear_probe(train_x, train_y, seed, limit)
    if column == "mlp":
        return _fit_mlp_probe(train_x, train_y, seed, limit)
    raise ValueError(f"probe column {column!r}: not an accuracy probe")


def probe_embeddings(train_x, train_y, test_x, test_y, spec: EvaluateSpec,
                     split: ValidationSplit | None = None) -> dict[str, float]:
    """Run the probes in `spec.probes` on one t's embeddings.

    Returns {column: test value, val_<column>: validation value}. Every probe is fitted on
    the `split.fit` training embeddings and scored on the `split.validation` ones and on the
    test split; the silhouette, which fits nothing, is taken of each. `split` defaults to
    `validation_split(train_y, spec)` (pass it to reuse it over many t).
    """
    train_x, train_y, test_x, test_y = _probe_inputs(train_x, train_y, test_x, test_y)
    split = validation_split(train_y, spec) if split is None else split
    fit_x, fit_y = train_x[split.fit], train_y[split.fit]
    val_x, val_y = train_x[split.validation], train_y[split.validation]
    result: dict[str, float] = {}
    for column in probe_columns(spec):
        if column == "silhouette":
            result[column] = silhouette(test_x, test_y, spec.seed)
            result[validation_column(column)] = silhouette(val_x, val_y, spec.seed)
        else:
            model = _fit_column(column, fit_x, fit_y, spec)
            result[column] = float(model.score(test_x, test_y))
            result[validation_column(column)] = float(model.score(val_x, val_y))
    return result


def _finite_or_none(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


@dataclass
class ProbeTable:
    """Probe results over t, one row per t (sorted): {"t": t, column: test value,
    "val_<column>": validation value, ...}.

    `rows` are the trained encoder's; `control_rows` the untrained control's (random_init:
    the same architecture and seed before any training step), probed on the same splits, or
    empty when no control was probed.
    """

    columns: list[str]
    rows: list[dict[str, float]] = field(default_factory=list)
    control_rows: list[dict[str, float]] = field(default_factory=list)

    def rows_of(self, encoder: EncoderWeights = TRAINED) -> list[dict[str, float]]:
        if encoder not in (TRAINED, RANDOM_INIT):
            raise ValueError(f"encoder: expected {TRAINED!r} or {RANDOM_INIT!r}, got {encoder!r}")
        return self.rows if encoder == TRAINED else self.control_rows

    def best(self, encoder: EncoderWeights = TRAINED) -> dict[str, dict[str, float]]:
        """Per column, the t with the largest VALIDATION value, never chosen on the test split:
        {column: {"t": t, "value": test value at t, "validation": validation value at t}}.

        Ties go to the smallest t; rows without a (non-NaN) validation value are skipped, and a
        column with none left is omitted.
        """
        out: dict[str, dict[str, float]] = {}
        for column in self.columns:
            key = validation_column(column)
            scored = [(r[key], r["t"], r.get(column, math.nan)) for r in self.rows_of(encoder)
                      if key in r and not math.isnan(r[key])]
            if scored:
                validation, t, value = max(scored, key=lambda vt: (vt[0], -vt[1]))
                out[column] = {"t": t, "value": value, "validation": validation}
        return out

    def to_csv(self, path: str | Path) -> None:
        """Header `encoder,t,<columns>,val_<columns>`: the trained encoder's rows, then the
        untrained control's (encoder random_init); t with 3 decimals, values with 6."""
        keys = [*self.columns, *map(validation_column, self.columns)]
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["encoder", "t", *keys])
            for encoder in (TRAINED, RANDOM_INIT):
                for row in self.rows_of(encoder):
                    writer.writerow([encoder, f"{row['t']:.3f}",
                                     *(f"{row.get(k, math.nan):.6f}" for k in keys)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: {"columns", "rows", "best", "control_rows", "control_best"}; NaN becomes
        None (JSON has no NaN)."""
        def clean_rows(rows: list[dict[str, float]]) -> list[dict[str, float | None]]:
            return [{k: _finite_or_none(v) for k, v in row.items()} for row in rows]

        def clean_best(best: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
            return {c: {k: _finite_or_none(v) for k, v in b.items()} for c, b in best.items()}

        return {"columns": list(self.columns),
                "rows": clean_rows(self.rows), "best": clean_best(self.best()),
                "control_rows": clean_rows(self.control_rows),
                "control_best": clean_best(self.best(RANDOM_INIT))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProbeTable:
        """Inverse of `to_dict` ("best" and "control_best" are recomputed, not read); a table
        stored without "control_rows" has none."""
        def parse(rows) -> list[dict[str, float]]:
            return [{k: math.nan if v is None else float(v) for k, v in r.items()} for r in rows]

        try:
            columns, rows = list(d["columns"]), d["rows"]
        except (KeyError, TypeError):
            raise ValueError("probe table: expected a mapping with 'columns' and 'rows'") from None
        return cls(columns=columns, rows=parse(rows), control_rows=parse(d.get("control_rows", [])))

    def format_table(self) -> str:
        """Fixed-width text tables of the test values, the trained encoder's and then the
        untrained control's; '*' marks each column's best t (chosen on validation)."""
        widths = [max(len(c), 7) + 1 for c in self.columns]
        lines: list[str] = []
        for encoder in (TRAINED, RANDOM_INIT):
            if not self.rows_of(encoder):
                continue
            best = self.best(encoder)
            if lines:
                lines.append("")
            lines.append(f"{encoder} encoder" + (" (untrained control)" if encoder == RANDOM_INIT
                                                 else "") + ", test values:")
            lines.append("    t  " + "  ".join(c.rjust(w) for c, w in zip(self.columns, widths)))
            for row in self.rows_of(encoder):
                cells = []
                for c, w in zip(self.columns, widths):
                    v = row.get(c, math.nan)
                    mark = "*" if c in best and best[c]["t"] == row["t"] else " "
                    cells.append((f"{v:.4f}" + mark).rjust(w))
                lines.append(f"{row['t']:5.3f}  " + "  ".join(cells))
        lines.append("* best t per column, chosen on the validation split")
        return "\n".join(lines)


EmbeddingPairs = Mapping[float, tuple[Any, Any]]


def probe_sweep(embeddings: EmbeddingPairs, y_train, y_test, spec: EvaluateSpec,
                progress: ProgressFn | None = None,
                control: EmbeddingPairs | None = None) -> ProbeTable:
    """Probe the embeddings at every t: {t: (train_emb, test_emb)} -> ProbeTable.

    `control` holds the untrained control's embeddings in the same form (random_init, the
    table's `control_rows`); both are probed with one `validation_split`, so every row of
    either is fitted and validated on the same training embeddings.
    A static encoder's embeddings do not depend on t: when the same array objects are given
    for several t (detected by identity), the probes run once and the row is reused.
    `progress(done, total)` is called after each probe run, where total is the number of
    distinct (train, test) pairs, i.e. the runs actually needed.
    """
    if y_train is None or y_test is None:
        which = "y_train" if y_train is None else "y_test"
        raise ValueError(f"dataset labels: {which} is None; the probes need labelled train "
                         "and test splits")
    sets = {TRAINED: embeddings, RANDOM_INIT: control or {}}
    distinct: dict[tuple[int, int], tuple[Any, Any]] = {}
    for encoder, pairs in sets.items():
        for t, pair in pairs.items():
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise ValueError(f"{encoder} embeddings at t={t}: expected a (train_emb, "
                                 "test_emb) pair")
            distinct.setdefault((id(pair[0]), id(pair[1])), pair)
    split = validation_split(y_train, spec)
    computed: dict[tuple[int, int], dict[str, float]] = {}
    for key, (train_x, test_x) in distinct.items():
        computed[key] = probe_embeddings(train_x, y_train, test_x, y_test, spec, split)
        if progress is not None:
            progress(len(computed), len(distinct))

    def rows(pairs: EmbeddingPairs) -> list[dict[str, float]]:
        return [{"t": float(t), **computed[(id(a), id(b))]}
                for t, (a, b) in sorted(pairs.items(), key=lambda kv: kv[0])]

    return ProbeTable(columns=probe_columns(spec), rows=rows(embeddings),
                      control_rows=rows(sets[RANDOM_INIT]))

"""How far an FD-LeNet can be trusted: a bootstrap interval beside each Frechet distance, and
the real-vs-real floor beside the samples' FD.

Why an interval, and which one. The plug-in FD of finite feature sets (fd_lenet.py) is biased
upward: its mean term alone has E ||m_1 - m_2||^2 = ||mu_1 - mu_2||^2 + Tr C_1 / N + Tr C_2 / M,
and the trace term adds more. On 84-d Gaussian features at N = 1000 the bias was 2.9 against a
spread of 0.24, so ranking samplers needs the spread and a reference measured at the same N.

Interval: the basic (reverse-percentile) bootstrap. Both feature sets are drawn again with
replacement, B times (seeded); FD*_b is the plug-in FD of the b-th pair and q_a the
a-quantile of the FD*:
    [2 FD - q_{(1+level)/2},  2 FD - q_{(1-level)/2}],  clipped at 0.
It is an interval for the population FD: the FD* sit about one bias above FD as FD sits one
bias above the truth, and reflecting them takes that bias off. The plain percentile interval
[q_{(1-level)/2}, q_{(1+level)/2}] sits about two biases above the truth: on Gaussian features
with a known FD (B = 200, level 0.95) it covered the truth in 40, 19 and 0 of 50 draws (8-d,
N = 1000; 16-d, N = 1000; 16-d, N = 300, the case tests/test_fd_interval.py checks) and in 0
of 10 (84-d, N = 1000), the basic interval in 47, 50, 50 and 10. So the plug-in `value` may
lie above its own interval, by about `estimated_bias` (mean FD* - FD); values at one N share
most of their bias.

Each resample's statistics come from counts c_i (how often row i was drawn, sum_i c_i = N):
    m* = sum_i c_i f_i / N,   C* = (sum_i c_i f_i f_i^T - N m* m*^T) / (N - 1)
(rows centred on their mean first, for accuracy), and Tr (C*_1 C*_2)^{1/2} comes from stacked
eigendecompositions (fd_lenet.trace_sqrt_products). The reference's resamples (10,000 84-d
test features: ~3 s on one core at B = 200) are drawn once and shared by every set compared
against it (`BootstrapReference`), so the samples' and the floor's intervals are paired.

Floor (real-vs-real): the FD-LeNet of N real training images (N = the number of samples; a
seeded subset of the training split, disjoint from any `exclude`d images such as those whose
codes the samples use) against the same test split, with its own interval: what real data
scores at this N. The LeNet was trained on the training split, so the floor is, if anything,
a little optimistic.

Smoke: an FD of fewer than RELIABLE_SAMPLES samples is a smoke-test number (issue 11: at 64
samples FD-LeNet ranked noisy digits above clean ones in 35% of paired draws, at 1,000 never),
comparable only with FDs of the same count, and marked `smoke`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .datasets import ImageDataset
from .fd_lenet import (LeNetSettings, check_sample_shape, feature_statistics, frechet_distance,
                       frechet_from_parts, lenet_features, load_or_train_lenet,
                       trace_sqrt_products)

RELIABLE_SAMPLES = 1000    # fewer samples: a smoke-test FD
BOOTSTRAP_RESAMPLES = 200
CI_LEVEL = 0.95
BOOTSTRAP_SEED = 0
FLOOR_SPLIT = "train"      # where the floor's real images come from


@dataclass(frozen=True)
class FrechetInterval:
    """One plug-in Frechet distance with its basic-bootstrap interval (module docstring)."""

    value: float
    ci_low: float
    ci_high: float
    n_samples: int          # rows of the set compared with the reference
    estimated_bias: float   # mean of the resampled FDs minus `value`

    def to_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "samples": self.n_samples, "estimated_bias": self.estimated_bias}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}]"


@dataclass(frozen=True)
class FDResult(FrechetInterval):
    """The samples' FD-LeNet with its interval, the real-vs-real floor at the same N (None
    when the training split has fewer than 2 images to give), and how it was measured."""

    floor: FrechetInterval | None
    level: float = CI_LEVEL
    resamples: int = BOOTSTRAP_RESAMPLES

    @property
    def smoke(self) -> bool:
        """Fewer than RELIABLE_SAMPLES samples: not a result, only a smoke test."""
        return self.n_samples < RELIABLE_SAMPLES

    def to_dict(self) -> dict:
        """What metrics.json and a sample job's meta store (`samples` is n_samples)."""
        return {**super().to_dict(), "ci_level": self.level, "resamples": self.resamples,
                "smoke": self.smoke,
                "floor": self.floor and {**self.floor.to_dict(), "split": FLOOR_SPLIT}}


def resampled_statistics(features: np.ndarray, resamples: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Means (B, D) and unbiased covariances (B, D, D) of `resamples` draws with replacement
    of the rows of features (N, D), N >= 2, from the draw counts (module docstring)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features: expected (N, D) with N >= 2, got shape {f.shape}")
    n, d = f.shape
    centre = f.mean(0)
    centred = f - centre
    means, covs = np.empty((resamples, d)), np.empty((resamples, d, d))
    for b in range(resamples):
        counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        mean = counts @ centred / n
        covs[b] = ((centred * counts[:, None]).T @ centred - n * np.outer(mean, mean)) / (n - 1)
        means[b] = mean
    return means + centre, covs


def basic_interval(value: float, resampled: np.ndarray, level: float,
                   n_samples: int) -> FrechetInterval:
    """[2 FD - q_{(1+level)/2}, 2 FD - q_{(1-level)/2}] of the resampled FDs, clipped at 0."""
    q_low, q_high = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
    return FrechetInterval(value, max(2 * value - float(q_high), 0.0),
                           max(2 * value - float(q_low), 0.0), n_samples,
                           float(resampled.mean()) - value)


class BootstrapReference:
    """A reference feature set (the test split's) and its resampled statistics, drawn once:
    every set compared against it gets its FD and interval from the same reference draws."""

    def __init__(self, reference: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED, level: float = CI_LEVEL):
        if resamples < 2:
            raise ValueError(f"resamples: expected at least 2, got {resamples}")
        if not 0.0 < level < 1.0:
            raise ValueError(f"level: expected a confidence level in (0, 1), got {level}")
        self.resamples, self.level = resamples, level
        self.rng = np.random.default_rng(seed)
        self.statistics = feature_statistics(reference)
        self.means, self.covs = resampled_statistics(reference, resamples, self.rng)

    def interval(self, features: np.ndarray) -> FrechetInterval:
        """The plug-in FD of `features` against the reference, with its interval."""
        value = frechet_distance(*feature_statistics(features), *self.statistics)
        means, covs = resampled_statistics(features, self.resamples, self.rng)
        resampled = frechet_from_parts(means, covs, self.means, self.covs,
                                       trace_sqrt_products(covs, self.covs))
        return basic_interval(value, resampled, self.level, len(features))


def floor_indices(train_size: int, count: int, seed: int = BOOTSTRAP_SEED,
                  exclude: Sequence[int] | np.ndarray = ()) -> np.ndarray:
    """`count` distinct indices into the training split (all that remain, if fewer), none of
    them in `exclude`: a seeded draw, sorted."""
    allowed = np.setdiff1d(np.arange(train_size), np.asarray(exclude, dtype=np.int64))
    return np.sort(np.random.default_rng(seed).permutation(allowed)[:count])


def fd_lenet_result(samples: np.ndarray | torch.Tensor, dataset: ImageDataset,
                    cache_dir: str | Path | None = None,
                    settings: LeNetSettings = LeNetSettings(),
                    device: torch.device | str = "cpu", *,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                    level: float = CI_LEVEL,
                    exclude_train: Sequence[int] | np.ndarray = ()) -> FDResult:
    """FD-LeNet of `samples` (uint8 pixels or floats in [0, 1], N >= 2) against the test
    split (its value is `fd_lenet`'s), its interval, and the floor: as many training images
    (none of `exclude_train`) against the same test split."""
    check_sample_shape(samples, dataset)
    net = load_or_train_lenet(dataset, cache_dir, settings, device).model
    reference = BootstrapReference(lenet_features(net, dataset.x_test.cpu(), device=device),
                                   resamples, seed, level)
    measured = reference.interval(lenet_features(net, samples, device=device))
    real = floor_indices(len(dataset.x_train), len(samples), seed, exclude_train)
    floor = (reference.interval(lenet_features(net, dataset.x_train.cpu()[torch.as_tensor(real)],
                                               device=device))
             if len(real) >= 2 else None)
    return FDResult(**vars(measured), floor=floor, level=level, resamples=resamples)


def format_fd(fd: dict) -> str:
    """'value [ci_low, ci_high]' of a stored FD dict; the value alone for one stored before
    intervals were measured."""
    if fd.get("value") is None or not math.isfinite(fd["value"]):
        return "n/a"
    if fd.get("ci_low") is None or fd.get("ci_high") is None:
        return f"{fd['value']:.3f}"
    return f"{fd['value']:.3f} [{fd['ci_low']:.3f}, {fd['ci_high']:.3f}]"


def describe_fd(fd: dict) -> str:
    """One line for logs and reports: the FD and its interval, the floor, and 'smoke'."""
    text = format_fd(fd)
    if fd.get("ci_low") is not None:
        text += f" ({fd.get('ci_level', CI_LEVEL):.0%} interval, basic bootstrap)"
    floor = fd.get("floor")
    if floor:
        text += (f"; real-vs-real floor ({floor['samples']} {floor.get('split', FLOOR_SPLIT)} "
                 f"images against the same test split): {format_fd(floor)}")
    if fd.get("smoke"):
        text += f"; smoke run: fewer than {RELIABLE_SAMPLES} samples, not a result"
    return text

"""FD-LeNet's bootstrap interval against a Frechet distance known in closed form, the
real-vs-real floor on a disjoint training subset, and the smoke mark below 1,000 samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drl_engine.datasets import ImageDataset
from drl_engine.datasets.digits import load_digits_dataset
from drl_engine.fd_interval import (RELIABLE_SAMPLES, BootstrapReference, FDResult,
                                    FrechetInterval, basic_interval, describe_fd,
                                    fd_lenet_result, floor_indices, format_fd,
                                    resampled_statistics)
from drl_engine.fd_lenet import LeNetSettings, fd_lenet, frechet_distance

FAST = LeNetSettings(epochs=8, batch_size=64, min_steps=0)   # as tests/test_fd_lenet.py


def gaussian(d: int, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A mean and a well-conditioned covariance, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(scale=scale, size=d), a @ a.T + 0.5 * np.eye(d)


def test_the_interval_covers_the_true_fd_of_two_gaussians_most_of_the_time():
    # Two known Gaussians: the population FD is frechet_distance of their parameters (the
    # closed form, checked in tests/test_fd_lenet.py). At 300 draws of 16-d features the
    # plug-in estimate sits above the truth by about twice its spread, so the plain
    # percentile interval covered it in 0 of these 50 seeded draws; the basic interval must
    # cover it in most of them (measured: 50 of 50).
    d, n, m, draws = 16, 300, 1000, 50
    (mu1, c1), (mu2, c2) = gaussian(d, 1, 0.1), gaussian(d, 2, 0.1)
    truth = frechet_distance(mu1, c1, mu2, c2)
    l1, l2 = np.linalg.cholesky(c1), np.linalg.cholesky(c2)
    covered = above = 0
    corrected = []
    for draw in range(draws):
        rng = np.random.default_rng(1000 + draw)
        x1 = mu1 + rng.normal(size=(n, d)) @ l1.T
        x2 = mu2 + rng.normal(size=(m, d)) @ l2.T
        interval = BootstrapReference(x2, resamples=200, seed=draw).interval(x1)
        assert interval.ci_low <= interval.ci_high and interval.n_samples == n
        covered += interval.ci_low <= truth <= interval.ci_high
        above += interval.value > truth
        corrected.append(interval.value - interval.estimated_bias)
    assert covered >= 0.8 * draws, (covered, truth)
    assert above >= 0.9 * draws             # the upward bias the interval takes off
    assert abs(np.mean(corrected) - truth) < 0.5 * np.std(corrected)


def test_identical_sets_have_zero_fd_and_the_interval_zero():
    # Resampling alone moves two equal sets apart (a positive bias); reflected around an
    # estimate of 0 and clipped, the interval for the population FD is [0, 0].
    x = np.random.default_rng(0).normal(size=(300, 4))
    interval = BootstrapReference(x, resamples=50).interval(x)
    assert interval.value == pytest.approx(0.0, abs=1e-9)
    assert (interval.ci_low, interval.ci_high) == (0.0, 0.0)
    assert interval.estimated_bias > 0


def test_resampled_statistics_are_those_of_the_drawn_rows():
    features = np.random.default_rng(1).normal(size=(40, 3)) + 5.0
    means, covs = resampled_statistics(features, 3, np.random.default_rng(7))
    rng = np.random.default_rng(7)   # the same draws, made explicit
    for b in range(3):
        rows = features[rng.integers(0, 40, 40)]
        np.testing.assert_allclose(means[b], rows.mean(0), rtol=1e-12)
        np.testing.assert_allclose(covs[b], np.cov(rows, rowvar=False), rtol=1e-10, atol=1e-12)


def test_basic_interval_reflects_the_resampled_quantiles_around_the_estimate():
    resampled = np.linspace(2.0, 4.0, 201)   # 2.5% and 97.5% quantiles: 2.05 and 3.95
    interval = basic_interval(2.5, resampled, 0.95, 10)
    assert (interval.ci_low, interval.ci_high) == pytest.approx((2 * 2.5 - 3.95, 2 * 2.5 - 2.05))
    assert interval.estimated_bias == pytest.approx(0.5)
    assert basic_interval(0.1, resampled, 0.95, 10).ci_low == 0.0   # clipped at 0


def test_the_seed_fixes_the_interval():
    x, y = (np.random.default_rng(s).normal(size=(100, 3)) for s in (1, 2))
    first = BootstrapReference(y, 30, seed=5).interval(x)
    assert BootstrapReference(y, 30, seed=5).interval(x) == first
    assert BootstrapReference(y, 30, seed=6).interval(x) != first
    with pytest.raises(ValueError, match="resamples: expected at least 2"):
        BootstrapReference(y, 1)
    with pytest.raises(ValueError, match=r"level: expected a confidence level in \(0, 1\)"):
        BootstrapReference(y, 10, level=95)


def test_floor_indices_are_distinct_seeded_and_disjoint_from_the_excluded():
    excluded = np.arange(0, 1000, 3)
    chosen = floor_indices(1000, 500, seed=4, exclude=excluded)
    assert len(chosen) == 500 == len(set(chosen.tolist()))
    assert not set(chosen.tolist()) & set(excluded.tolist())
    assert chosen.min() >= 0 and chosen.max() < 1000
    np.testing.assert_array_equal(chosen, floor_indices(1000, 500, seed=4, exclude=excluded))
    # Fewer left than asked for: all that remain.
    assert floor_indices(10, 50, exclude=[0, 1]).tolist() == list(range(2, 10))


def result(n: int, floor: FrechetInterval | None = None) -> FDResult:
    return FDResult(3.0, 2.5, 3.4, n, 0.2, floor=floor)


def test_fewer_than_a_thousand_samples_is_a_smoke_run():
    assert RELIABLE_SAMPLES == 1000
    assert result(999).smoke and result(64).smoke
    assert not result(1000).smoke and not result(5000).smoke
    stored = result(64, FrechetInterval(1.0, 0.8, 1.1, 64, 0.1)).to_dict()
    assert stored["smoke"] is True and stored["samples"] == 64
    assert stored["floor"] == {"value": 1.0, "ci_low": 0.8, "ci_high": 1.1, "samples": 64,
                               "estimated_bias": 0.1, "split": "train"}
    assert (stored["ci_level"], stored["resamples"]) == (0.95, 200)
    assert "smoke run: fewer than 1000 samples" in describe_fd(stored)
    assert "smoke" not in describe_fd(result(1000).to_dict())
    assert result(1000).to_dict()["floor"] is None


def test_format_fd_reads_fds_stored_before_intervals():
    assert format_fd({"value": 1.23456}) == "1.235"
    assert format_fd({"value": None}) == "n/a"
    assert format_fd(result(1000).to_dict()) == "3.000 [2.500, 3.400]"
    assert describe_fd({"value": 2.0, "samples": 64}) == "2.000"


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_digits_dataset()


def test_fd_lenet_result_on_digits_has_fd_lenets_value_and_a_floor_of_as_many_train_images(
        digits, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("cache")
    clean = digits.x_test[:120].float() / 255.0
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    samples = (clean + 0.5 * noise).clamp(0, 1)
    excluded = np.arange(0, len(digits.x_train), 2)   # e.g. the images whose codes were used
    measured = fd_lenet_result(samples, digits, cache_dir, FAST, resamples=50,
                               exclude_train=excluded)
    assert measured.value == pytest.approx(fd_lenet(samples, digits, cache_dir, FAST), rel=1e-9)
    assert measured.n_samples == 120 and measured.smoke
    # The floor: 120 training images, none excluded, against the same test split.
    real = floor_indices(len(digits.x_train), 120, exclude=excluded)
    assert len(real) == 120 and not set(real.tolist()) & set(excluded.tolist())
    floor = measured.floor
    assert floor.n_samples == 120
    assert floor.value == pytest.approx(
        fd_lenet(digits.x_train[torch.as_tensor(real)], digits, cache_dir, FAST), rel=1e-9)
    # Real digits score below noisy ones. At 120 samples in 84-d features the bias is most
    # of either value, so both intervals reach down to 0: a smoke run cannot rank anything.
    assert floor.value < measured.value
    assert 0 <= floor.ci_low <= floor.ci_high and 0 <= measured.ci_low <= measured.ci_high

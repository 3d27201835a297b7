"""FD-LeNet: the Frechet distance against closed forms, and the cached LeNet on tiny digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drl_engine.datasets import ImageDataset
from drl_engine.datasets.digits import load_digits_dataset
from drl_engine.fd_lenet import (FEATURE_DIM, LeNetSettings, as_unit_images, fd_lenet,
                                 feature_statistics, frechet_distance, lenet_features,
                                 load_or_train_lenet, reconstruction_agreement,
                                 trace_sqrt_product)

METHODS = ["scipy", "eigh"]
FAST = LeNetSettings(epochs=8, batch_size=64, min_steps=0)   # ~180 steps on 1,438 digits


def random_spd(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


@pytest.mark.parametrize("method", METHODS)
def test_diagonal_gaussians_match_the_closed_form(method):
    # For diagonal covariances (C1 C2)^{1/2} = diag(sqrt(a b)), so
    # FD = ||m1 - m2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    m1, m2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b), method) == pytest.approx(expected, rel=1e-10)
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2, the W2 distance between two normals squared.
    assert frechet_distance(np.array([3.0]), np.array([[4.0]]), np.array([0.0]), np.array([[1.0]]),
                            method) == pytest.approx(9.0 + 1.0)


@pytest.mark.parametrize("method", METHODS)
def test_fd_is_zero_on_itself_symmetric_and_the_two_methods_agree(method):
    c1, c2 = random_spd(6, 1), random_spd(6, 2)
    m1, m2 = np.arange(6.0), np.ones(6)
    assert frechet_distance(m1, c1, m1, c1, method) == pytest.approx(0.0, abs=1e-9)
    forward = frechet_distance(m1, c1, m2, c2, method)
    assert forward == pytest.approx(frechet_distance(m2, c2, m1, c1, method), rel=1e-9)
    assert trace_sqrt_product(c1, c2, method) == pytest.approx(trace_sqrt_product(c1, c2, "eigh"), rel=1e-8)
    # Commuting covariances (same eigenvectors): Tr (C1 C2)^{1/2} = sum sqrt(l1 l2).
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(6, 6)))
    l1, l2 = np.linspace(0.5, 3, 6), np.linspace(2, 0.1, 6)
    assert trace_sqrt_product(q * l1 @ q.T, q * l2 @ q.T, method) == pytest.approx(np.sqrt(l1 * l2).sum())


def test_statistics_of_gaussian_samples_approach_the_closed_form():
    rng = np.random.default_rng(0)
    c1, c2 = random_spd(3, 4), random_spd(3, 5)
    m1, m2 = np.zeros(3), np.array([1.0, -1.0, 0.5])
    x1 = rng.multivariate_normal(m1, c1, size=200_000)
    x2 = rng.multivariate_normal(m2, c2, size=200_000)
    estimate = frechet_distance(*feature_statistics(x1), *feature_statistics(x2))
    assert estimate == pytest.approx(frechet_distance(m1, c1, m2, c2), rel=0.02)


def test_bad_inputs_name_what_was_expected():
    with pytest.raises(ValueError, match="samples: float images must be finite and lie in"):
        as_unit_images(torch.full((2, 1, 4, 4), 2.0))
    with pytest.raises(ValueError, match=r"samples: expected images of shape \(N, C, H, W\)"):
        as_unit_images(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="method: expected"):
        trace_sqrt_product(np.eye(2), np.eye(2), "svd")
    with pytest.raises(ValueError, match="features: expected"):
        feature_statistics(np.zeros((1, 3)))


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_digits_dataset()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_lenet_is_trained_once_then_reused_from_the_cache(digits, cache_dir):
    first = load_or_train_lenet(digits, cache_dir, FAST)
    assert first.trained and first.path.is_file()
    assert first.path.parent == cache_dir / "fd_lenet" and first.path.name.startswith("digits_1x16x16_")
    assert first.test_accuracy > 0.8       # chance is 0.1
    mtime = first.path.stat().st_mtime_ns

    second = load_or_train_lenet(digits, cache_dir, FAST)
    assert not second.trained and second.path == first.path
    assert first.path.stat().st_mtime_ns == mtime
    assert second.test_accuracy == first.test_accuracy
    x = digits.x_test[:16]
    np.testing.assert_allclose(lenet_features(second.model, x), lenet_features(first.model, x), rtol=1e-6)

    # Other settings or other training data: another network, another file.
    other = load_or_train_lenet(digits, cache_dir, LeNetSettings(epochs=1, batch_size=64, min_steps=0))
    assert other.trained and other.path != first.path


def test_fd_lenet_of_the_test_set_itself_is_zero_and_grows_with_noise(digits, cache_dir):
    net = load_or_train_lenet(digits, cache_dir, FAST)
    assert lenet_features(net.model, digits.x_test[:5]).shape == (5, FEATURE_DIM)
    assert fd_lenet(digits.x_test, digits, cache_dir, FAST) == pytest.approx(0.0, abs=1e-6)
    clean = digits.x_test.float() / 255.0
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    scores = [fd_lenet((clean + s * noise).clamp(0, 1), digits, cache_dir, FAST) for s in (0.05, 0.2, 0.5)]
    assert 0 < scores[0] < scores[1] < scores[2]
    # uint8 and float input of the same images agree.
    assert fd_lenet(digits.x_train[:300], digits, cache_dir, FAST) == pytest.approx(
        fd_lenet(digits.x_train[:300].float() / 255.0, digits, cache_dir, FAST), rel=1e-5)
    with pytest.raises(ValueError, match=r"samples: expected images of shape \(1, 16, 16\)"):
        fd_lenet(torch.zeros(4, 1, 8, 8), digits, cache_dir, FAST)


def test_small_training_sets_get_enough_steps_and_large_ones_their_epochs():
    settings = LeNetSettings()   # 3 epochs, batch 128, at least 1400 steps
    assert settings.epochs_for(60_000) == 3                  # 469 steps per epoch: 1,407 steps
    assert settings.epochs_for(10_000) == 18                 # 79 per epoch: 1,422 steps
    assert settings.epochs_for(10_000) * 79 >= settings.min_steps
    assert LeNetSettings(min_steps=0).epochs_for(10_000) == 3



def test_reconstruction_agreement_is_the_classifier_accuracy_on_perfect_reconstructions(
        digits, cache_dir):
    """Reconstructions identical to their sources agree as often as LeNet is right on them;
    reconstructions of other images (a derangement of the labels) agree far less."""
    net = load_or_train_lenet(digits, cache_dir, FAST)
    exact = reconstruction_agreement(digits.x_test, digits.y_test, digits, cache_dir, FAST)
    assert exact == pytest.approx(net.test_accuracy, abs=1e-9) and exact > 0.8
    wrong_source = torch.roll(digits.y_test, 1)
    mismatched = reconstruction_agreement(digits.x_test, wrong_source, digits, cache_dir, FAST)
    assert mismatched < 0.3
    with pytest.raises(ValueError, match="reconstruction agreement: 5 reconstructions for 4"):
        reconstruction_agreement(digits.x_test[:5], digits.y_test[:4], digits, cache_dir, FAST)


def test_lenet_trains_even_when_asked_from_inside_no_grad(digits, tmp_path):
    """A baseline's reconstructions ask for their labels inside torch.no_grad(); the first
    such request on a dataset trains the LeNet, which needs gradients."""
    tiny = LeNetSettings(epochs=1, batch_size=64, min_steps=0)
    with torch.no_grad():
        agreement = reconstruction_agreement(digits.x_test[:8], digits.y_test[:8], digits,
                                             tmp_path, tiny)
    assert 0.0 <= agreement <= 1.0

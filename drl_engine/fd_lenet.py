"""FD-LeNet: the Frechet distance between sample and test images in a small classifier's features.

There are no Inception weights offline, so sample quality is measured the way FID is, in the
feature space of a LeNet-style classifier trained once per dataset. Every number this module
gives is an "FD-LeNet", never an FID, and must be reported under that name (`FD_LENET`).

Network (LeNet-5 layout, made size-agnostic so 16x16 digits, 28x28 MNIST and 32x32 CIFAR fit):
    conv 5x5 (C -> 6, pad 2), ReLU, max-pool 2
    conv 5x5 (6 -> 16, pad 2), ReLU, adaptive average pool to 4x4
    dense 256 -> 120, ReLU, dense 120 -> 84, ReLU   = the features (84-d, penultimate layer)
    dense 84 -> num_classes
Inputs are images in [0, 1], standardised as (x - 0.5) / 0.5.

Training: Adam, cross-entropy, seeded (`LeNetSettings`), for `epochs` passes but at least
`min_steps` optimizer steps: 3 epochs of all of MNIST (1,407 steps) reach 96% test accuracy,
while 3 epochs of a 10k subset (237 steps) stopped at 79%, too weak a classifier to label
samples or to give features worth comparing. The trained weights are cached as
`<cache_dir>/fd_lenet/<dataset>_<C>x<H>x<W>_<key>.pt`, where the key hashes the settings, the
number of training images and their bytes, so a rerun reuses the network and any change to
what it would be trained on trains a new one. cache_dir defaults to $DRL_HOME/cache (DRL_HOME
defaults to ~/.drl).

Frechet distance of the Gaussians fitted to two feature sets (Dowson & Landau 1982):
    FD = ||mu_1 - mu_2||^2 + Tr(C_1 + C_2 - 2 (C_1 C_2)^{1/2})
Tr (C_1 C_2)^{1/2} is computed with scipy.linalg.sqrtm when scipy is installed (as FID's
reference code does, with a small diagonal offset if the product is singular), else from
eigendecompositions: with S = C_1^{1/2} (symmetric), C_1 C_2 is similar to S C_2 S, which is
symmetric PSD, so Tr (C_1 C_2)^{1/2} = sum_i sqrt(lambda_i(S C_2 S)).

How far an FD-LeNet can be trusted (its bootstrap interval, the real-vs-real floor, smoke runs
below 1,000 samples) is fd_interval.py's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .datasets import ImageDataset

FD_LENET = "FD-LeNet"   # the name every sample-quality number is reported under
FEATURE_DIM = 84
# Added to both covariances' diagonals when their product's square root is not finite.
SQRTM_OFFSET = 1e-6

try:
    import scipy.linalg as _scipy_linalg
except ImportError:   # the eigendecomposition route below needs only numpy
    _scipy_linalg = None


class LeNet(nn.Module):
    def __init__(self, image_channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(image_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=2)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, FEATURE_DIM)
        self.classifier = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 84-d penultimate activations of images x in [0, 1], (B, C, H, W)."""
        h = (x - 0.5) / 0.5
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)
        h = F.adaptive_avg_pool2d(F.relu(self.conv2(h)), 4)
        return F.relu(self.fc2(F.relu(self.fc1(h.flatten(1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass(frozen=True)
class LeNetSettings:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    min_steps: int = 1400   # small training sets get more epochs (see the module docstring)

    def epochs_for(self, train_images: int) -> int:
        """`epochs`, raised until the passes over `train_images` make `min_steps` steps."""
        per_epoch = max(1, math.ceil(train_images / self.batch_size))
        return max(self.epochs, math.ceil(self.min_steps / per_epoch))


@dataclass
class TrainedLeNet:
    model: LeNet
    test_accuracy: float | None   # on the dataset's test split; None without labels
    path: Path | None = None      # the cache file, when cached
    trained: bool = True          # False when loaded from the cache


def as_unit_images(images: np.ndarray | torch.Tensor, name: str = "samples") -> torch.Tensor:
    """uint8 pixels (k / 255) or floats already in [0, 1] -> float32 tensor (N, C, H, W)."""
    x = torch.as_tensor(images)
    if x.dim() != 4:
        raise ValueError(f"{name}: expected images of shape (N, C, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected uint8 pixels or floats in [0, 1], got {x.dtype}")
    x = x.to(torch.float32)
    if x.numel() and (not torch.isfinite(x).all() or x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise ValueError(f"{name}: float images must be finite and lie in [0, 1], got values "
                         f"in [{float(x.min()):.4g}, {float(x.max()):.4g}]")
    return x.clamp(0.0, 1.0)


def _labelled_classes(dataset: ImageDataset) -> int:
    if dataset.y_train is None or dataset.num_classes is None:
        raise ValueError(f"dataset {dataset.name}: FD-LeNet trains a classifier and needs labels")
    return dataset.num_classes


@torch.no_grad()
def predict_labels(model: LeNet, images: np.ndarray | torch.Tensor, batch_size: int = 1000,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """The classifier's label of each image (uint8 pixels or floats in [0, 1]), on the CPU."""
    x = as_unit_images(images, "images")
    model.eval()
    out = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def classifier_accuracy(model: LeNet, x_uint8: torch.Tensor, y: torch.Tensor,
                        batch_size: int = 1000, device: torch.device | str = "cpu") -> float:
    predicted = predict_labels(model, x_uint8.cpu(), batch_size, device)
    return int((predicted == y.cpu()).sum()) / max(len(x_uint8), 1)


@torch.enable_grad()   # callers may sit in no_grad (a baseline's reconstructions ask for labels)
def train_lenet(dataset: ImageDataset, settings: LeNetSettings = LeNetSettings(),
                device: torch.device | str = "cpu") -> TrainedLeNet:
    """Train LeNet on the training split (seeded: same settings and data, same weights on CPU)."""
    num_classes = _labelled_classes(dataset)
    torch.manual_seed(settings.seed)
    model = LeNet(dataset.image_shape[0], num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    x_train, y_train = dataset.x_train.cpu(), dataset.y_train.cpu()
    model.train()
    for _ in range(settings.epochs_for(len(x_train))):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            x = as_unit_images(x_train[idx], "x_train").to(device)
            loss = F.cross_entropy(model(x), y_train[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    accuracy = (classifier_accuracy(model, dataset.x_test, dataset.y_test, device=device)
                if dataset.y_test is not None and len(dataset.x_test) else None)
    return TrainedLeNet(model, accuracy)


def default_cache_dir() -> Path:
    """$DRL_HOME/cache, DRL_HOME defaulting to ~/.drl (the service's home folder)."""
    return Path(os.environ.get("DRL_HOME") or Path.home() / ".drl").expanduser() / "cache"


def cache_path(dataset: ImageDataset, settings: LeNetSettings, cache_dir: Path) -> Path:
    """<cache_dir>/fd_lenet/<name>_<C>x<H>x<W>_<16 hex digits of the key>.pt."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"settings": asdict(settings), "train": len(dataset.x_train),
                              "num_classes": _labelled_classes(dataset)}, sort_keys=True).encode())
    digest.update(dataset.x_train.cpu().contiguous().numpy().tobytes())
    digest.update(dataset.y_train.cpu().numpy().tobytes())
    c, h, w = dataset.image_shape
    return Path(cache_dir) / "fd_lenet" / f"{dataset.name}_{c}x{h}x{w}_{digest.hexdigest()[:16]}.pt"


def load_or_train_lenet(dataset: ImageDataset, cache_dir: str | Path | None = None,
                        settings: LeNetSettings = LeNetSettings(),
                        device: torch.device | str = "cpu") -> TrainedLeNet:
    """The dataset's FD-LeNet network: from the cache if it is there, else trained and cached."""
    path = cache_path(dataset, settings, Path(cache_dir) if cache_dir else default_cache_dir())
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = LeNet(dataset.image_shape[0], int(saved["num_classes"]))
        model.load_state_dict(saved["model"])
        return TrainedLeNet(model.to(device).eval(), saved["test_accuracy"], path, trained=False)
    result = train_lenet(dataset, settings, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written to a temp file and renamed, so a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"model": {k: v.cpu() for k, v in result.model.state_dict().items()},
                    "num_classes": result.model.classifier.out_features,
                    "test_accuracy": result.test_accuracy, "settings": asdict(settings),
                    "dataset": dataset.name, "image_shape": list(dataset.image_shape)}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    result.path = path
    return result


@torch.no_grad()
def lenet_features(model: LeNet, images: np.ndarray | torch.Tensor, batch_size: int = 500,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """(N, 84) float64 penultimate features of uint8 images or floats in [0, 1]."""
    x = as_unit_images(images)
    model.eval()
    out = [model.features(x[i:i + batch_size].to(device)).double().cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features: expected (N, D) with N >= 2, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray, method: str = "auto") -> float:
    """Tr (C_1 C_2)^{1/2} for symmetric PSD C_1, C_2; method 'scipy', 'eigh' or 'auto'."""
    if method == "auto":
        method = "scipy" if _scipy_linalg is not None else "eigh"
    if method == "scipy":
        if _scipy_linalg is None:
            raise ValueError("method: 'scipy' needs scipy, which is not installed; use 'eigh'")
        with warnings.catch_warnings():
            # A singular product (dead ReLU features have zero variance) only warns; retry
            # with the offset then, as for a non-finite root.
            warnings.simplefilter("error", _scipy_linalg.LinAlgWarning)
            try:
                root = _scipy_linalg.sqrtm(cov1 @ cov2)
            except _scipy_linalg.LinAlgWarning:
                root = np.full_like(cov1, np.nan)
        if not np.isfinite(root).all():
            offset = np.eye(len(cov1)) * SQRTM_OFFSET
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", _scipy_linalg.LinAlgWarning)
                root = _scipy_linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
        return float(np.real(np.trace(root)))
    if method == "eigh":
        return float(trace_sqrt_products(cov1, cov2))
    raise ValueError(f"method: expected 'auto', 'scipy' or 'eigh', got {method!r}")


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray,
                     method: str = "auto") -> float:
    """||mu_1 - mu_2||^2 + Tr(C_1 + C_2 - 2 (C_1 C_2)^{1/2}), clipped at 0 (rounding)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"frechet_distance: expected means (D,) and covariances (D, D) of one D, "
                         f"got {mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape}")
    return max(float(frechet_from_parts(mu1, cov1, mu2, cov2,
                                        trace_sqrt_product(cov1, cov2, method))), 0.0)


def trace_sqrt_products(cov1: np.ndarray, cov2: np.ndarray) -> np.ndarray:
    """Tr (C_1 C_2)^{1/2} of each pair in stacks (..., D, D) of symmetric PSD matrices, by
    eigendecompositions (the module docstring's 'eigh' route): sum_i sqrt(lambda_i(S C_2 S)),
    S = C_1^{1/2}. numpy's eigh works on stacks, so a bootstrap's B pairs take one call."""
    vals, vecs = np.linalg.eigh(cov1)
    s = (vecs * np.sqrt(np.clip(vals, 0.0, None))[..., None, :]) @ np.swapaxes(vecs, -1, -2)
    inner = np.linalg.eigvalsh(s @ cov2 @ s)
    return np.sqrt(np.clip(inner, 0.0, None)).sum(-1)


def frechet_from_parts(mu1, cov1, mu2, cov2, trace_root):
    """||mu_1 - mu_2||^2 + Tr C_1 + Tr C_2 - 2 Tr (C_1 C_2)^{1/2}, given the last trace;
    over stacks (..., D) and (..., D, D) too. Not clipped."""
    diff = mu1 - mu2
    return ((diff * diff).sum(-1) + np.trace(cov1, axis1=-2, axis2=-1)
            + np.trace(cov2, axis1=-2, axis2=-1) - 2 * trace_root)


def check_sample_shape(samples: np.ndarray | torch.Tensor, dataset: ImageDataset) -> None:
    """Samples must have the dataset's image shape, or their features compare nothing."""
    if tuple(samples.shape[1:]) != dataset.image_shape:
        raise ValueError(f"samples: expected images of shape {dataset.image_shape} like the "
                         f"{dataset.name} test images, got {tuple(samples.shape[1:])}")


def fd_lenet(samples: np.ndarray | torch.Tensor, dataset: ImageDataset,
             cache_dir: str | Path | None = None, settings: LeNetSettings = LeNetSettings(),
             device: torch.device | str = "cpu") -> float:
    """FD-LeNet between `samples` (uint8 pixels or floats in [0, 1], (N, C, H, W), N >= 2)
    and the dataset's test images, with the dataset's cached LeNet (trained if missing)."""
    check_sample_shape(samples, dataset)
    net = load_or_train_lenet(dataset, cache_dir, settings, device).model
    stats_samples = feature_statistics(lenet_features(net, samples, device=device))
    stats_test = feature_statistics(lenet_features(net, dataset.x_test.cpu(), device=device))
    return frechet_distance(*stats_samples, *stats_test)


def classifier_labels(images: np.ndarray | torch.Tensor, dataset: ImageDataset,
                      cache_dir: str | Path | None = None,
                      settings: LeNetSettings = LeNetSettings(),
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """The dataset's FD-LeNet classifier's label of each image (uint8 pixels or floats in
    [0, 1]), on the CPU: what samples.png writes under each reconstruction."""
    net = load_or_train_lenet(dataset, cache_dir, settings, device).model
    return predict_labels(net, images, device=device)


def reconstruction_agreement(reconstructions: np.ndarray | torch.Tensor,
                             source_labels: np.ndarray | torch.Tensor, dataset: ImageDataset,
                             cache_dir: str | Path | None = None,
                             settings: LeNetSettings = LeNetSettings(),
                             device: torch.device | str = "cpu") -> float:
    """The share of reconstructions (decoded from a test image's code; uint8 pixels or floats
    in [0, 1]) that the dataset's FD-LeNet classifier labels as their source image's class:
    whether the code carries the class through the decoder."""
    labels = torch.as_tensor(source_labels).reshape(-1).cpu()
    if len(labels) != len(reconstructions) or len(labels) == 0:
        raise ValueError(f"reconstruction agreement: {len(reconstructions)} reconstructions "
                         f"for {len(labels)} source labels (expected as many, at least one)")
    predicted = classifier_labels(reconstructions, dataset, cache_dir, settings, device)
    return float((predicted == labels).double().mean())

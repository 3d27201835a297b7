"""Trainer, EMA and checkpoints on a tiny CPU config (digits 16x16, an 8-channel U-Net)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from drl_engine.checkpoint import (KEEP_LAST, checkpoint_path, latest_checkpoint, list_checkpoints,
                                   load_checkpoint, load_model)
from drl_engine.datasets import ImageDataset, load_dataset
from drl_engine.device import resolve_device
from drl_engine.ema import EMA
from drl_engine.model import DRLModel
from drl_engine.spec import ExperimentSpec, parse_spec
from drl_engine.trainer import TrainProgress, train, warmup_lr


def tiny_spec(**train: object) -> ExperimentSpec:
    """Digits, 256 training images, an 8-channel two-level U-Net, dropout on (the default 0.1)."""
    return parse_spec({
        "dataset": {"name": "digits", "train_limit": 256, "test_limit": 64},
        "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attn_resolutions": [], "latent_dim": 4},
        "train": {"iterations": 4, "batch_size": 16, "warmup": 5, "checkpoint_every": 1000,
                  "log_every": 1000, "device": "cpu", "seed": 3, **train},
    })


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    # The test machine's 2 cores are shared; two intra-op threads under contention run
    # these tiny convolutions ~5x slower than one. Restored for the other test modules.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_dataset(tiny_spec().dataset)


def assert_same_tree(a: object, b: object, where: str = "checkpoint") -> None:
    """Every tensor bit-identical (torch.equal), every other leaf equal, same keys throughout."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys differ"
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# --- EMA -------------------------------------------------------------------------------------

def test_ema_warmup_decay_closed_form() -> None:
    layer = nn.Linear(3, 2)
    ema = EMA(layer, decay=0.5)
    start = layer.weight.detach().clone()
    expected = start.clone()
    for n in range(1, 13):
        d = min(0.5, (1 + n) / (10 + n))
        assert ema.current_decay() == pytest.approx(d)
        with torch.no_grad():
            layer.weight.add_(torch.randn_like(layer.weight))
        ema.update(layer)
        expected = d * expected + (1 - d) * layer.weight.detach()
        torch.testing.assert_close(ema.shadow["weight"], expected)
    assert ema.num_updates == 12
    # The warm-up ends where (1 + n) / (10 + n) first exceeds the decay (n = 9 for 0.5).
    assert EMA(layer, 0.999).current_decay() == pytest.approx(2 / 11)


def test_ema_swapped_in_restores_trained_weights_and_state_round_trips() -> None:
    layer = nn.Linear(3, 2)
    ema = EMA(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.mul_(3.0)
    ema.update(layer)
    trained = layer.weight.detach().clone()
    with ema.swapped_in(layer):
        assert torch.equal(layer.weight, ema.shadow["weight"])
        assert not torch.equal(layer.weight, trained)
    assert torch.equal(layer.weight, trained)

    other = EMA(nn.Linear(3, 2), decay=0.1)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1 and other.decay == 0.9
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="shape"):
        EMA(nn.Linear(4, 2), 0.9).load_state_dict(ema.state_dict())


def test_ema_rejects_bad_decay() -> None:
    with pytest.raises(ValueError, match="train.ema_decay"):
        EMA(nn.Linear(1, 1), decay=1.0)


# --- device ----------------------------------------------------------------------------------

def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="train.device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="train.device"):
        resolve_device("tpu")


# --- training --------------------------------------------------------------------------------

def test_warmup_lr_reaches_base_rate_linearly() -> None:
    assert [warmup_lr(1.0, 4, k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_lr(2e-4, 0, 0) == 2e-4


def test_loss_falls_and_progress_reports_every_interval(digits: ImageDataset) -> None:
    spec = tiny_spec(iterations=100, lr=2e-3, warmup=10, log_every=1)
    reports: list[TrainProgress] = []
    result = train(spec, digits, None, progress=reports.append)

    assert [r.step for r in reports] == list(range(1, 101))
    assert all(r.total == 100 and r.images_per_s > 0 for r in reports)
    # The warm-up is applied as specified: lr * min(1, k / warmup) at the k-th step.
    assert [r.lr for r in reports[:12]] == pytest.approx([2e-3 * min(1, k / 10) for k in range(1, 13)])
    assert {"dsm", "penalty", "grad_norm"} <= set(reports[0].stats)
    first = sum(r.loss for r in reports[:10]) / 10
    last = sum(r.loss for r in reports[-10:]) / 10
    # Seeds 0, 1, 3 give last/first of 0.13-0.16, so 0.5 leaves a wide margin.
    assert last < 0.5 * first, (first, last)
    assert result.step == 100 and not result.stopped and result.last_checkpoint is None
    assert result.final_loss == pytest.approx(reports[-1].loss)
    assert not result.model.training


def test_progress_at_log_interval_and_last_step(digits: ImageDataset) -> None:
    reports: list[TrainProgress] = []
    train(tiny_spec(iterations=5, log_every=2), digits, None, progress=reports.append)
    assert [r.step for r in reports] == [2, 4, 5]


def test_resume_is_bit_for_bit(digits: ImageDataset, tmp_path: Path) -> None:
    """6 steps in one run == 3 steps, resume, 3 more: weights, EMA, Adam state and RNG states.

    Dropout is on (0.1), so this fails unless the global RNG is restored too, and the
    warm-up (5 steps) spans the break, so it fails unless the step count is restored.
    """
    one_run = train(tiny_spec(iterations=6), digits, tmp_path / "one")
    train(tiny_spec(iterations=3), digits, tmp_path / "two")
    resumed = train(tiny_spec(iterations=6), digits, tmp_path / "two")

    assert resumed.step == 6
    a = load_checkpoint(checkpoint_path(tmp_path / "one", 6))
    b = load_checkpoint(checkpoint_path(tmp_path / "two", 6))
    for key in ("model", "ema", "optimizer", "rng", "step"):
        assert_same_tree(a[key], b[key], key)
    assert_same_tree(one_run.model.state_dict(), resumed.model.state_dict(), "result.model")
    # The same seed gives the same run, and the run really trained (weights left their init).
    rerun = train(tiny_spec(iterations=6), digits, None)
    assert_same_tree(rerun.model.state_dict(), one_run.model.state_dict(), "rerun")
    torch.manual_seed(3)
    init = DRLModel(tiny_spec(), digits.image_shape).state_dict()
    assert any(not torch.equal(init[name], a["model"][name]) for name in a["ema"]["shadow"])


def test_should_stop_saves_and_returns_at_the_next_step(digits: ImageDataset, tmp_path: Path) -> None:
    calls = 0

    def stop_after_three() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    seen: list[tuple[Path, int]] = []
    evaluated: list[int] = []
    result = train(tiny_spec(iterations=50), digits, tmp_path,
                   should_stop=stop_after_three, on_checkpoint=lambda p, s: seen.append((p, s)),
                   on_checkpoint_model=lambda model, step: evaluated.append(step))
    assert result.stopped and result.step == 3 and calls == 4
    assert result.last_checkpoint == checkpoint_path(tmp_path, 3) == latest_checkpoint(tmp_path)
    assert seen == [(result.last_checkpoint, 3)]
    assert load_checkpoint(result.last_checkpoint)["step"] == 3
    # An evaluation at the checkpoint a stop saves would only delay the stop someone asked for.
    assert evaluated == []

    resumed_at: list[tuple[Path, int]] = []
    again = train(tiny_spec(iterations=5), digits, tmp_path,
                  on_resume=lambda path, step: resumed_at.append((path, step)))
    assert resumed_at == [(checkpoint_path(tmp_path, 3), 3)] and again.step == 5


def test_checkpoint_model_callback_sees_the_ema_weights_and_changes_nothing(
        digits: ImageDataset, tmp_path: Path) -> None:
    """on_checkpoint_model gets the EMA weights in eval mode after each checkpoint is saved; a
    callback that draws from the global RNG (dropout's) and leaves eval mode on still leaves
    the run bit-for-bit the run without it (dropout is on, so a lost RNG draw or a model left
    in eval mode would change the steps after the first checkpoint)."""
    seen: list[int] = []

    def evaluate(model: nn.Module, step: int) -> None:
        saved = load_checkpoint(checkpoint_path(tmp_path / "with", step))
        assert not any(module.training for module in model.modules())
        params = dict(model.named_parameters())
        assert all(torch.equal(params[name], value) for name, value in saved["ema"]["shadow"].items())
        torch.rand(3)
        seen.append(step)

    train(tiny_spec(iterations=5, checkpoint_every=2), digits, tmp_path / "with",
          on_checkpoint_model=evaluate)
    train(tiny_spec(iterations=5, checkpoint_every=2), digits, tmp_path / "without")
    assert seen == [2, 4, 5]
    a = load_checkpoint(checkpoint_path(tmp_path / "with", 5))
    b = load_checkpoint(checkpoint_path(tmp_path / "without", 5))
    for key in ("model", "ema", "optimizer", "rng"):
        assert_same_tree(a[key], b[key], key)


def test_checkpoints_every_interval_with_retention(digits: ImageDataset, tmp_path: Path) -> None:
    seen: list[tuple[int, bool]] = []
    train(tiny_spec(iterations=7, checkpoint_every=2), digits, tmp_path,
          on_checkpoint=lambda path, step: seen.append((step, path == checkpoint_path(tmp_path, step)
                                                        and path.is_file())))
    assert seen == [(2, True), (4, True), (6, True), (7, True)]
    assert KEEP_LAST == 2
    assert list_checkpoints(tmp_path) == [checkpoint_path(tmp_path, 6), checkpoint_path(tmp_path, 7)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000006.pt", "ckpt_00000007.pt"]

    ckpt = load_checkpoint(checkpoint_path(tmp_path, 7))
    assert ckpt["format_version"] == 1 and ckpt["step"] == 7 and ckpt["image_shape"] == [1, 16, 16]
    assert ExperimentSpec.model_validate(ckpt["spec"]) == tiny_spec(iterations=7, checkpoint_every=2)
    assert ckpt["rng"]["torch_cpu"].dtype == torch.uint8 and ckpt["rng"]["data_device"] == "cpu"


def test_resume_at_or_past_the_end_trains_nothing(digits: ImageDataset, tmp_path: Path) -> None:
    first = train(tiny_spec(iterations=3), digits, tmp_path)
    again = train(tiny_spec(iterations=2), digits, tmp_path,
                  on_checkpoint=lambda p, s: pytest.fail("nothing new to save"))
    assert again.step == 3 and again.final_loss is None
    assert_same_tree(first.model.state_dict(), again.model.state_dict(), "model")


def test_resume_with_a_different_spec_names_the_fields(digits: ImageDataset, tmp_path: Path) -> None:
    train(tiny_spec(iterations=1), digits, tmp_path)
    changed = tiny_spec(iterations=2, lr=1e-3)
    changed.model.dropout = 0.2
    with pytest.raises(ValueError, match=r"ckpt_00000001\.pt") as err:
        train(changed, digits, tmp_path)
    assert "train.lr" in str(err.value) and "model.dropout" in str(err.value)
    assert "train.iterations" not in str(err.value)


def test_load_model_gives_the_ema_weights(digits: ImageDataset, tmp_path: Path) -> None:
    result = train(tiny_spec(iterations=4), digits, tmp_path)
    ckpt = load_checkpoint(result.last_checkpoint)
    before = torch.get_rng_state()

    ema_model = load_model(result.last_checkpoint, device="cpu")
    raw_model = load_model(result.last_checkpoint, device="cpu", ema=False)

    assert torch.equal(torch.get_rng_state(), before), "loading must not move the caller's RNG"
    assert not ema_model.training and ema_model.image_shape == (1, 16, 16)
    params = dict(ema_model.named_parameters())
    for name, averaged in ckpt["ema"]["shadow"].items():
        assert torch.equal(params[name], averaged), name
    assert_same_tree(ema_model.state_dict(), result.model.state_dict(), "ema model")
    assert_same_tree(raw_model.state_dict(), ckpt["model"], "raw model")
    assert any(not torch.equal(params[n], ckpt["model"][n]) for n in ckpt["ema"]["shadow"])


def test_latest_checkpoint_ignores_temp_files_and_bad_files_are_named(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "missing") is None
    for name in ("ckpt_00000002.pt", "ckpt_00000010.pt", ".ckpt_00000011.pt.x1.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_00000010.pt"
    with pytest.raises(ValueError, match=r"ckpt_00000010\.pt"):
        load_checkpoint(tmp_path / "ckpt_00000010.pt")
    with pytest.raises(FileNotFoundError, match="ckpt_00000099"):
        load_checkpoint(tmp_path / "ckpt_00000099.pt")

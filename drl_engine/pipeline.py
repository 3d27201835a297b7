"""`drl run`: train -> [bits/dim] -> encode on the t grid -> probe -> sample, into one folder.

Output layout (the service stores the same files under its artifact keys):
    DIR/checkpoints/ckpt_XXXXXXXX.pt
    DIR/embeddings/<split>_t=<t:.3f>.npy, DIR/embeddings/<split>_labels.npy
    DIR/embeddings/random_init/<split>_t=<t:.3f>.npy   (the untrained control's codes)
    DIR/probes.csv   (encoder,t,<columns>,val_<columns>: test and validation values per t,
                      for encoder trained and for its untrained control random_init)
    DIR/probes.png   (accuracy against t; the untrained control dashed, chance dotted)
    DIR/code_usage.csv (step,t,error_true,error_shuffled,error_class_shuffled,code_gain,class_gain)
    DIR/code_usage.png (code_gain and class_gain as shares of error_shuffled against t, one
                        curve per checkpoint)
    DIR/samples.png  (encoded codes: rows of test images, each over a row of their
                      reconstructions; with labels, each image captioned with its class and
                      each reconstruction with FD-LeNet's classifier's label of it)
    DIR/metrics.json (spec, provenance (code, software, machine, dataset fingerprint:
                      provenance.py), training summary, probe table with best t chosen on
                      validation and its control's, sampling summary)

Every kind that samples adds the FD-LeNet of samples.png's images against the test images
(`fd_lenet`; needs labels), with its 95% bootstrap interval, the real-vs-real floor (as many
training images against the test images) and `smoke` below 1,000 samples (fd_interval.py);
VDM kinds add the test-set bits/dim and each ELBO term
(`bits_per_dim`). drl and vdrl measure the code-usage diagnostic (code_usage.py) at every
checkpoint and at the end; metrics.json's `code_usage` is the final one.
`vdm_vae`: samples.png from z ~ N(0, I), plus reconstructions.png (test images over their
reconstructions) and interpolations.png (each row: image a, decodes along the segment between
the two codes, image b). `vdm` has no encoder: no embeddings or probes; samples.png is
unconditional. The baselines (ae, vae, dae, cdae, simclr_gauss) do not sample: no
samples.png and metrics.json's `sample` is null; those with a decoder write
reconstructions.png (test images over their reconstructions, per noise level for dae/cdae).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .baselines import has_decoder, save_reconstructions
from .code_usage import CodeUsageTracker
from .code_usage_table import write_code_usage_csv
from .datasets import ImageDataset, load_dataset
from .device import resolve_device
from .encode import Encodings, embedding_filename, encode_at
from .fd_interval import RELIABLE_SAMPLES, describe_fd, fd_lenet_result
from .fd_lenet import FD_LENET, classifier_labels, reconstruction_agreement
from .generate import Generation, generate, generate_interpolations
from .plots import plot_code_usage, plot_probe_curves, save_captioned_grid, save_image_grid
from .probes import ProbeTable, chance_accuracy, probe_sweep
from .provenance import collect_provenance
from .registry import kind_entry, untrained_model
from .spec import (RANDOM_INIT, TRAINED, EncoderWeights, ExperimentSpec, SampleSpec,
                   generation_sample_spec, has_encoder, has_sampler)
from .trainer import TrainProgress, train
from .vdm.evaluate import evaluate_bits_per_dim

Log = Callable[[str], None]


@dataclass
class RunSummary:
    out_dir: Path
    metrics: dict
    probes: ProbeTable | None
    timings: dict[str, float] = field(default_factory=dict)


def write_embeddings(out_dir: Path, split: str, encodings: Encodings,
                     labels: torch.Tensor | None) -> list[Path]:
    """One .npy per t, plus the split's labels; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, codes in encodings.by_t.items():
        path = out_dir / embedding_filename(split, t)
        np.save(path, codes.astype(np.float32, copy=False))
        paths.append(path)
    if labels is not None:
        path = out_dir / f"{split}_labels.npy"
        np.save(path, labels.cpu().numpy().astype(np.int64))
        paths.append(path)
    return paths


def embeddings_dir(out_dir: Path, encoder: EncoderWeights) -> Path:
    """DIR/embeddings for the trained encoder's codes, DIR/embeddings/random_init for the
    untrained control's (its labels are the trained encoder's, stored once)."""
    return out_dir / "embeddings" if encoder == TRAINED else out_dir / "embeddings" / encoder


def probe_pairs(codes: dict[str, Encodings]) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """{t: (train codes, test codes)}, what `probe_sweep` takes."""
    return {t: (codes["train"].by_t[t], codes["test"].by_t[t]) for t in codes["test"].by_t}


def grid_width(n: int, target: int) -> int:
    """The smallest divisor of n that is >= target, so a grid of n images has no gaps; n (one
    row) when target exceeds n, as for a single encoded image over its reconstruction."""
    return next(d for d in range(max(1, min(target, n)), n + 1) if n % d == 0) if n else 1


@dataclass
class ReconstructionLabels:
    """The classes of encoded test images, and FD-LeNet's classifier's label of each of their
    reconstructions: whether the code carried the class through the decoder, image by image."""
    source: torch.Tensor      # (B,) the test images' classes
    predicted: torch.Tensor   # (B,) the classifier's label of each reconstruction

    @property
    def agreement(self) -> float:
        """The share of reconstructions labelled as their source's class."""
        return float((self.predicted == self.source).double().mean())


def reconstruction_labels(gen: Generation, ds: ImageDataset, device) -> ReconstructionLabels | None:
    """None unless each image is the reconstruction of one labelled source image (code_source
    'encoded', not interpolations or prior samples; `generate` encodes the first test images)
    and every image is finite."""
    if (gen.references is None or len(gen.references) != len(gen.images) or ds.y_test is None
            or ds.y_train is None or not torch.isfinite(gen.images).all()):
        return None
    source = ds.y_test[:len(gen.images)].cpu()
    return ReconstructionLabels(source, classifier_labels(gen.images, ds, device=device))


def paired_rows(references: torch.Tensor, images: torch.Tensor, nrow: int) -> torch.Tensor:
    """Rows of `nrow` references, each followed by the row of their images, so every image
    lies right below its source (len(images) a multiple of nrow)."""
    rows = []
    for start in range(0, len(images), nrow):
        rows += [references[start:start + nrow], images[start:start + nrow]]
    return torch.cat(rows)


# Caption colours (Okabe-Ito: sky blue and orange stay distinct under either common colour
# blindness): a test image's class, and a reconstruction's label that agrees or differs.
SOURCE_COLOUR, AGREES_COLOUR, DIFFERS_COLOUR = "white", "#56b4e9", "#e69f00"


def save_generation(gen: Generation, path: Path, labels: ReconstructionLabels | None = None) -> None:
    """Encoded codes: rows of originals, each over the row of their reconstructions; with
    `labels`, each original captioned with its class and each reconstruction with the
    classifier's label of it (blue: agrees, orange: differs). Else the samples alone."""
    n = len(gen.images)
    if gen.references is None:
        save_image_grid(gen.images, path, nrow=grid_width(n, int(np.ceil(np.sqrt(n)))))
        return
    nrow = grid_width(n, int(np.ceil(np.sqrt(2 * n))))
    grid = paired_rows(gen.references, gen.images, nrow)
    if labels is None:
        save_image_grid(grid, path, nrow=nrow)
        return
    captions: list[str] = []
    colours: list[str] = []
    for start in range(0, n, nrow):
        source = labels.source[start:start + nrow].tolist()
        predicted = labels.predicted[start:start + nrow].tolist()
        captions += [str(y) for y in source] + [str(p) for p in predicted]
        colours += [SOURCE_COLOUR] * len(source)
        colours += [AGREES_COLOUR if p == y else DIFFERS_COLOUR for p, y in zip(predicted, source)]
    agreeing = int((labels.predicted == labels.source).sum())
    title = (f"test images (their class) over their reconstructions (FD-LeNet classifier's "
             f"label: blue agrees, orange differs): {agreeing} of {n} agree")
    save_captioned_grid(grid, path, nrow, captions, colours, title)


def save_interpolations(gen: Generation, path: Path) -> None:
    """One row per pair: source image a, the interpolated decodes, source image b."""
    pairs = len(gen.references) // 2
    points = len(gen.images) // pairs
    rows = []
    for i in range(pairs):
        rows += [gen.references[2 * i:2 * i + 1], gen.images[i * points:(i + 1) * points],
                 gen.references[2 * i + 1:2 * i + 2]]
    save_image_grid(torch.cat(rows), path, nrow=points + 2)


def training_objective(spec: ExperimentSpec) -> str:
    """What the VDM kinds were trained on: the ELBO, or the ELBO changed by annealing / free bits."""
    changes = []
    if spec.model.kind == "vdm_vae" and spec.vdm.kl_anneal_steps > 0:
        changes.append(f"KL annealed over {spec.vdm.kl_anneal_steps} steps")
    if spec.model.kind == "vdm_vae" and spec.vdm.free_bits > 0:
        changes.append(f"free bits {spec.vdm.free_bits} nats per latent dimension")
    return "elbo" + (f" ({'; '.join(changes)})" if changes else "")


def bits_per_dim_report(model, spec: ExperimentSpec, x_test: torch.Tensor, device,
                      progress: Callable[[int, int], None] | None = None) -> dict:
    """The test-set bits/dim of a VDM kind (`evaluate_bits_per_dim`: total and each ELBO
    term), with the split and what training optimised (`training_objective`)."""
    return {**evaluate_bits_per_dim(model, x_test, spec.evaluate.batch_size, spec.evaluate.seed,
                                    device, progress=progress),
            "split": "test", "training_objective": training_objective(spec)}


def describe_bits_per_dim(bits: dict) -> str:
    """One line: the total and its four terms."""
    return ("test bits/dim {total:.4f} = diffusion {diffusion:.4f} + prior {prior:.4f} + "
            "reconstruction {reconstruction:.4f} + kl {kl:.4f}".format(**bits))


def fd_lenet_skip_reason(dataset: ImageDataset, images: torch.Tensor) -> str | None:
    """Why FD-LeNet cannot be computed for the drawn `images` (None: it can). LeNet is a
    classifier; both feature sets need >= 2 images for a covariance; a diverged sampler's
    NaN images have no features (and must not fail the run or job that stores them)."""
    if dataset.y_train is None:
        return f"dataset {dataset.name} has no labels to train LeNet on"
    if len(images) < 2:
        return f"it needs at least 2 samples, got {len(images)}"
    if len(dataset.x_test) < 2:
        return f"it needs at least 2 test images, dataset {dataset.name} has {len(dataset.x_test)}"
    if not torch.isfinite(images).all():
        return "some samples are not finite (the sampler diverged)"
    return None


def fd_lenet_report(gen: Generation, ds: ImageDataset, device) -> dict:
    """FD-LeNet of the generated images against the test split (`fd_lenet_result`: the value,
    its bootstrap interval, the real-vs-real floor of as many training images, `smoke` below
    RELIABLE_SAMPLES), with the sample count and steps: metrics.json's and a sample job's."""
    result = fd_lenet_result(gen.images, ds, device=device)
    report = {**result.to_dict(), "steps": gen.result.steps, "name": FD_LENET, "reference": "test"}
    if result.smoke:
        report["note"] = (f"only {result.n_samples} samples (< {RELIABLE_SAMPLES}): a smoke run, "
                          "biased upward, comparable only with FD-LeNet at the same sample count")
    return report


def describe_fd_lenet_report(report: dict) -> str:
    """The log line of `fd_lenet_report`: count, steps, value, interval, floor, smoke."""
    return f"{FD_LENET} of {report['samples']} samples ({report['steps']} steps): {describe_fd(report)}"


def sampler_name(kind: str, sample_spec: SampleSpec) -> str:
    """The sampler that draws `kind`'s samples: VDM kinds sample ancestrally, whatever
    `sample.sampler` says."""
    return "ancestral" if kind_entry(kind).reports_bits_per_dim else sample_spec.sampler


def baseline_reconstructions(model, spec: ExperimentSpec, ds: ImageDataset, out_dir: Path,
                             device, log: Log) -> dict | None:
    """The baselines have no sampler: reconstructions.png for those with a decoder, else None."""
    if not has_decoder(model):
        log(f"model.kind {spec.model.kind!r} has no decoder and no sampler: sample stage skipped")
        return None
    log(f"model.kind {spec.model.kind!r} does not sample: writing reconstructions.png instead")
    def agreement(images: torch.Tensor) -> float | None:
        if ds.y_test is None or ds.y_train is None or not torch.isfinite(images).all():
            return None
        return reconstruction_agreement(images, ds.y_test[:len(images)], ds, device=device)
    return save_reconstructions(model, ds.x_test, out_dir / "reconstructions.png",
                                spec.sample.count, spec.sample.seed, device, agreement)


def chain_callbacks(*callbacks: Callable | None) -> Callable | None:
    """One callback calling each of the given ones (None skipped) in order; None if none."""
    present = [c for c in callbacks if c is not None]
    if not present:
        return None

    def call_each(*args) -> None:
        for callback in present:
            callback(*args)
    return call_each


# What a fresh start discards of an earlier run in the same folder: the checkpoints training
# would resume from, and embeddings at t values the new grid may not have. Every other file
# is rewritten by the new run.
PREVIOUS_RUN_FOLDERS = ("checkpoints", "embeddings")


def discard_previous_run(out_dir: Path) -> None:
    for name in PREVIOUS_RUN_FOLDERS:
        if (out_dir / name).is_dir():
            shutil.rmtree(out_dir / name)


class RunInterrupted(Exception):
    """`should_stop` ended the run; training's checkpoint at `step` is saved, and running the
    same spec into the same folder again resumes from it."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint saved; rerun the same command "
                         "to resume")
        self.step = step


def run_experiment(spec: ExperimentSpec, out_dir: Path, *,
                   on_train_progress: Callable[[TrainProgress], None] | None = None,
                   on_train_resume: Callable[[int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   log: Log = print, dataset: ImageDataset | None = None,
                   on_checkpoint_model: Callable[[torch.nn.Module, int], None] | None = None,
                   fresh: bool = False) -> RunSummary:
    """Every stage into `out_dir` (the module docstring lists the files). `on_checkpoint_model`
    (e.g. a study's learning curve) is called at every checkpoint with the EMA model, after
    the code-usage diagnostic. Training resumes from `out_dir`'s last checkpoint (of the same
    spec, else checkpoint.ResumeError; logged as "resuming from step N", and
    `on_train_resume(N)` called) unless `fresh`, which first discards the earlier run's
    PREVIOUS_RUN_FOLDERS.

    `should_stop` is polled before every training step, where stopping saves a checkpoint, and
    between the stages after training (none of them is resumable midway; a rerun does them
    again from the final checkpoint); either way RunInterrupted is raised."""
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    device = resolve_device(spec.train.device)

    start = time.perf_counter()
    ds = dataset or load_dataset(spec.dataset)
    ds = ds.to(device)
    timings["load_s"] = time.perf_counter() - start
    # Only now: bad input (a missing dataset, a wrong device) leaves no empty folder behind.
    out_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        discard_previous_run(out_dir)
    log(f"dataset {ds.name}: {len(ds.x_train)} train / {len(ds.x_test)} test images "
        f"of shape {tuple(ds.image_shape)} on {device}")
    provenance = collect_provenance(spec.dataset, device)

    code_usage = CodeUsageTracker(spec, ds, device)
    if code_usage.skip_reason is not None:
        log(f"code-usage diagnostic skipped: {code_usage.skip_reason}")
    def resumed(path: Path, step: int) -> None:
        log(f"resuming from step {step} of {spec.train.total_steps} ({path})")
        if on_train_resume is not None:
            on_train_resume(step)

    start = time.perf_counter()
    result = train(spec, ds, out_dir / "checkpoints", progress=on_train_progress, device=device,
                   should_stop=should_stop, on_resume=resumed,
                   on_checkpoint_model=chain_callbacks(code_usage.callback, on_checkpoint_model))
    timings["train_s"] = time.perf_counter() - start - code_usage.seconds

    def stop_if_asked() -> None:
        if result.stopped or (should_stop is not None and should_stop()):
            raise RunInterrupted(result.step)

    stop_if_asked()
    model = result.model
    entry = kind_entry(spec.model.kind)
    final_usage = code_usage.finish(model, result.step)
    if final_usage is not None:
        timings["code_usage_s"] = code_usage.seconds
        write_code_usage_csv(code_usage.series, out_dir / "code_usage.csv")
        plot_code_usage(code_usage.series, out_dir / "code_usage.png", title=spec.name or ds.name)
        log(final_usage.format_table())

    bits = None
    if entry.reports_bits_per_dim:
        stop_if_asked()
        start = time.perf_counter()
        bits = bits_per_dim_report(model, spec, ds.x_test, device)
        timings["bits_per_dim_s"] = time.perf_counter() - start
        log(describe_bits_per_dim(bits))

    # {encoder: {split: codes}}: the trained encoder's, and its untrained control's (the same
    # architecture and seed before any step), which is encoded and probed identically.
    encodings: dict[str, dict[str, Encodings]] = {}
    table = None
    if has_encoder(spec.model.kind):
        stop_if_asked()
        start = time.perf_counter()
        encoders = {TRAINED: model, RANDOM_INIT: untrained_model(spec, ds).to(device)}
        for encoder, net in encoders.items():
            encodings[encoder] = {}
            for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
                codes = encode_at(net, x, spec.evaluate.t_grid, spec.evaluate.batch_size, device)
                write_embeddings(embeddings_dir(out_dir, encoder), split, codes,
                                 y if encoder == TRAINED else None)
                encodings[encoder][split] = codes
        timings["encode_s"] = time.perf_counter() - start
    else:
        log(f"model.kind {spec.model.kind!r} has no encoder: encode and probe stages skipped")

    if encodings and ds.y_train is not None and ds.y_test is not None:
        stop_if_asked()
        start = time.perf_counter()
        table = probe_sweep(probe_pairs(encodings[TRAINED]), ds.y_train.cpu().numpy(),
                            ds.y_test.cpu().numpy(), spec.evaluate,
                            control=probe_pairs(encodings[RANDOM_INIT]))
        table.to_csv(out_dir / "probes.csv")
        plot_probe_curves(table, out_dir / "probes.png", title=spec.name or ds.name,
                          chance=chance_accuracy(ds.y_test.cpu().numpy()))
        timings["probe_s"] = time.perf_counter() - start
        log(table.format_table())
    elif encodings:
        log("no labels in this dataset: probes skipped")

    stop_if_asked()
    start = time.perf_counter()
    sample_spec = generation_sample_spec(spec)
    gen = reconstructions = labels = None
    if not has_sampler(spec.model.kind):
        reconstructions = baseline_reconstructions(model, spec, ds, out_dir, device, log)
    elif spec.model.kind == "vdm_vae":
        # The VAE's generative claim is p(x) = E_p(z) p(x|z): samples.png draws z from the prior;
        # reconstructions and interpolations of test images' codes go to their own files.
        encoded = generate(model, spec.sample.model_copy(update={"code_source": "encoded"}),
                           ds.x_test, device)
        save_generation(encoded, out_dir / "reconstructions.png",
                        reconstruction_labels(encoded, ds, device))
        if len(ds.x_test) >= 2:
            interpolations = generate_interpolations(model, spec.sample, ds.x_test, device)
            save_interpolations(interpolations, out_dir / "interpolations.png")
    if has_sampler(spec.model.kind):
        gen = generate(model, sample_spec, ds.x_test, device)
        # The classifier's labels caption samples.png (encoded codes) and give the agreement.
        labels = reconstruction_labels(gen, ds, device)
        save_generation(gen, out_dir / "samples.png", labels)
    timings["sample_s"] = time.perf_counter() - start

    fd = agreement = None
    if gen is not None:
        # samples.png's images: prior samples (vdm_vae), unconditional ones (vdm), or samples
        # for the spec's code source (drl, vdrl); the service's sample jobs report the same.
        skip = fd_lenet_skip_reason(ds, gen.images)
        if skip is not None:
            log(f"{FD_LENET} skipped: {skip}")
        else:
            start = time.perf_counter()
            fd = fd_lenet_report(gen, ds, device)
            timings["fd_lenet_s"] = time.perf_counter() - start
            log(describe_fd_lenet_report(fd))
        agreement = labels.agreement if labels is not None else None
        if agreement is not None:
            log(f"reconstruction agreement: {agreement:.3f} of {len(gen.images)} reconstructions "
                "labelled as their source's class")

    metrics = {
        "spec": spec.model_dump(mode="json"),
        "provenance": provenance,
        "dataset": {"name": ds.name, "image_shape": list(ds.image_shape),
                    "train": len(ds.x_train), "test": len(ds.x_test)},
        "train": {"steps": result.step, "final_loss": result.final_loss,
                  "images_per_s": spec.train.batch_size * result.step / max(timings["train_s"], 1e-9),
                  "device": str(device)},
        "bits_per_dim": bits,
        "encode": ({"t_grid": sorted(encodings[TRAINED]["test"].by_t),
                    "t_independent": encodings[TRAINED]["test"].t_independent,
                    "control": RANDOM_INIT} if encodings else None),
        "probes": table.to_dict() if table else None,
        "code_usage": final_usage.to_dict() if final_usage is not None else None,
        "sample": gen and {"sampler": sampler_name(spec.model.kind, sample_spec),
                   "code_source": sample_spec.code_source if has_encoder(spec.model.kind) else None,
                   "count": len(gen.images), "steps": gen.result.steps, "nfe": gen.result.nfe,
                   "seconds": gen.result.seconds,
                   "finite": bool(torch.isfinite(gen.images).all()),
                   "reconstruction_agreement": agreement},
        "fd_lenet": fd,
        "reconstructions": reconstructions,
        "timings": timings,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return RunSummary(out_dir, metrics, table, timings)

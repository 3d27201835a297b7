"""Sample job: `generate` with the job's sample settings, stored as `samples/<job_id>.png`.

The settings are the job's `params["sample"]` (validated and merged over the experiment's
generation settings when the job was requested), else `spec.generation_sample_spec`: the
spec's `sample` section, with z from the prior for vdm_vae. `generate` dispatches on the
model (the SDE samplers for drl/vdrl, ancestral sampling for vdm/vdm_vae) and on the code
source. Encoded and interpolated codes come from the test split.

The PNG is the grid `drl run` draws for the same settings: each row of originals over the row
of their reconstructions ('encoded'; on a labelled dataset captioned with each original's
class and FD-LeNet's classifier's label of each reconstruction), one row per pair for
'interpolation' (source a, the decodes, source b: `save_interpolations`, as drl run's
interpolations.png), else the samples alone.

The artifact's meta reports what `drl run` reports of its samples: count, sampler, steps,
network evaluations per sample (nfe), the sampler's wall time (seconds), code source, and
`fd_lenet` (`fd_lenet_report`: the FD-LeNet of the drawn images against the test split, its
95% bootstrap interval, the real-vs-real floor and `smoke` below 1,000 samples) when
the dataset has labels to train LeNet on and there are >= 2 images to compare. The LeNet is
cached per dataset under $DRL_HOME/cache (fd_lenet's default, the same folder `drl run`
uses), so only a dataset's first sample job trains it.
"""

from __future__ import annotations

from pathlib import Path

from drl_core.artifact_keys import ArtifactKind, sample_key
from drl_engine.datasets import ImageDataset
from drl_engine.fd_lenet import FD_LENET
from drl_engine.generate import Generation, generate
from drl_engine.pipeline import (ReconstructionLabels, describe_fd_lenet_report, fd_lenet_report,
                                 fd_lenet_skip_reason, reconstruction_labels, sampler_name,
                                 save_generation, save_interpolations)
from drl_engine.spec import SampleSpec, generation_sample_spec, has_encoder
from worker.context import JobContext
from worker.jobs.common import job_dataset, job_device, load_trained_model

# Code sources whose codes come from encoding the test split's images.
CODES_FROM_IMAGES = ("encoded", "interpolation")


def run(ctx: JobContext) -> None:
    kind = ctx.spec.model.kind
    spec = job_sample_spec(ctx)
    code_source = spec.code_source if has_encoder(kind) else None
    device = job_device(ctx)
    model = load_trained_model(ctx, device)
    # Loaded for every kind: the source of encoded codes and FD-LeNet's reference images.
    dataset = job_dataset(ctx)
    x_source = dataset.x_test if code_source in CODES_FROM_IMAGES else None
    generation = generate(model, spec, x_source, device, progress=ctx.progress_check())
    sampler = sampler_name(kind, spec)
    result = generation.result
    meta = {"job_id": ctx.job_id, "count": len(generation.images), "sampler": sampler,
            "steps": result.steps, "nfe": result.nfe, "seconds": result.seconds,
            "code_source": code_source}
    ctx.log(f"{len(generation.images)} samples ({sampler}, {result.steps} steps, {result.nfe} "
            f"network evaluations, {result.seconds:.1f} s"
            + (f", codes: {code_source}" if code_source else "") + ")")
    ctx.check()   # the labels and FD-LeNet may train a LeNet first: not after a cancel
    labels = reconstruction_labels(generation, dataset, device)
    path = ctx.workdir / "samples.png"
    save_sample_grid(generation, code_source, path, labels)
    fd = sample_quality(ctx, generation, dataset, device)
    if fd is not None:
        meta["fd_lenet"] = fd
    if labels is not None:
        meta["reconstruction_agreement"] = labels.agreement
        ctx.log(f"reconstruction agreement: {labels.agreement:.3f}")
    ctx.store_file(sample_key(ctx.experiment_id, ctx.job_id), path, ArtifactKind.SAMPLE, meta)


def job_sample_spec(ctx: JobContext) -> SampleSpec:
    """The requested settings, else the experiment's generation settings (pipeline job)."""
    if "sample" in ctx.params:
        return SampleSpec.model_validate(ctx.params["sample"])
    return generation_sample_spec(ctx.spec)


def save_sample_grid(generation: Generation, code_source: str | None, path: Path,
                     labels: ReconstructionLabels | None = None) -> None:
    """The PNG drl run writes for these codes: interpolation rows, or samples (under their
    originals, captioned with `labels`)."""
    if code_source == "interpolation":
        save_interpolations(generation, path)
    else:
        save_generation(generation, path, labels)


def sample_quality(ctx: JobContext, generation: Generation, dataset: ImageDataset,
                   device) -> dict | None:
    """`fd_lenet_report` of the drawn images against the test split, or None with a log line."""
    reason = fd_lenet_skip_reason(dataset, generation.images)
    if reason is not None:
        ctx.log(f"{FD_LENET} skipped: {reason}")
        return None
    report = fd_lenet_report(generation, dataset, device)
    ctx.log(describe_fd_lenet_report(report))
    return report

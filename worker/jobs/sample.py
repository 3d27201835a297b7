"""Sample job: `generate` with the job's sample settings, stored as `samples/<job_id>.png`.

The settings are the job's `params["sample"]` (validated and merged over the spec's when the
job was requested), else the spec's `sample` section. Encoded codes come from the test split.
"""

from __future__ import annotations

from drl_core.artifact_keys import ArtifactKind, sample_key
from drl_engine.generate import generate
from drl_engine.pipeline import save_generation
from drl_engine.spec import SampleSpec
from worker.context import JobContext
from worker.jobs.common import job_dataset, job_device, load_trained_model


def run(ctx: JobContext) -> None:
    spec = SampleSpec.model_validate(ctx.params["sample"]) if "sample" in ctx.params else ctx.spec.sample
    device = job_device(ctx)
    model = load_trained_model(ctx, device)
    x_source = job_dataset(ctx).x_test if spec.code_source == "encoded" else None
    generation = generate(model, spec, x_source, device, progress=ctx.progress_check())
    path = ctx.workdir / "samples.png"
    save_generation(generation, path)
    ctx.store_file(sample_key(ctx.experiment_id, ctx.job_id), path, ArtifactKind.SAMPLE,
                   {"job_id": ctx.job_id, "count": len(generation.images),
                    "sampler": spec.sampler, "steps": generation.result.steps})
    ctx.log(f"{len(generation.images)} samples ({spec.sampler}, {generation.result.steps} steps)")

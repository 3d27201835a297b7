"""Sample job: `generate` with the job's sample settings, stored as `samples/<job_id>.png`.

The settings are the job's `params["sample"]` (validated and merged over the experiment's
generation settings when the job was requested), else `spec.generation_sample_spec`: the
spec's `sample` section, with z from the prior for vdm_vae. `generate` dispatches on the
model (the SDE samplers for drl/vdrl, ancestral sampling for vdm/vdm_vae). Encoded codes
come from the test split; the unconditional vdm has none and never loads the dataset.
"""

from __future__ import annotations

from drl_core.artifact_keys import ArtifactKind, sample_key
from drl_engine.generate import generate
from drl_engine.pipeline import sampler_name, save_generation
from drl_engine.spec import SampleSpec, generation_sample_spec, has_encoder
from worker.context import JobContext
from worker.jobs.common import job_dataset, job_device, load_trained_model


def run(ctx: JobContext) -> None:
    kind = ctx.spec.model.kind
    spec = (SampleSpec.model_validate(ctx.params["sample"]) if "sample" in ctx.params
            else generation_sample_spec(ctx.spec))
    code_source = spec.code_source if has_encoder(kind) else None
    device = job_device(ctx)
    model = load_trained_model(ctx, device)
    x_source = job_dataset(ctx).x_test if code_source == "encoded" else None
    generation = generate(model, spec, x_source, device, progress=ctx.progress_check())
    path = ctx.workdir / "samples.png"
    save_generation(generation, path)
    sampler = sampler_name(kind, spec)
    ctx.store_file(sample_key(ctx.experiment_id, ctx.job_id), path, ArtifactKind.SAMPLE,
                   {"job_id": ctx.job_id, "count": len(generation.images), "sampler": sampler,
                    "steps": generation.result.steps, "code_source": code_source})
    ctx.log(f"{len(generation.images)} samples ({sampler}, {generation.result.steps} steps"
            + (f", codes: {code_source}" if code_source else "") + ")")

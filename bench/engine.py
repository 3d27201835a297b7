"""Engine benchmark: prints one JSON object of speed figures for this machine.

    python bench/engine.py [--device auto|cpu|cuda] [--quick] [--out FILE]

Figures (the MNIST default network = ModelSpec defaults on 28x28x1, batch 128):
- matmul_peak_flops: a large float32 matmul, the practical peak the training figure is
  compared with (baseline named in `train.fraction_of_matmul_peak`);
- train: images/s and achieved FLOP/s of real trainer steps (`drl_engine.trainer.train`),
  FLOPs per step counted by torch.utils.flop_counter (forward + backward of the loss);
- encode: images/s of E(x0, t) over the default 11-point t grid (time-conditioned encoder);
- sample: score-network evaluations per second of the predictor-corrector sampler;
- probes: seconds for the probe sweep at MNIST size (60000 x 8 train, 10000 x 8 test
  embeddings, default EvaluateSpec) on synthetic class-clustered codes, per t and for the grid.
`--quick` shrinks every size so the script runs in well under a minute (a smoke run: its
numbers are not the benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drl_engine.datasets import ImageDataset, load_dataset, to_model_range  # noqa: E402
from drl_engine.device import resolve_device  # noqa: E402
from drl_engine.encode import encode_at  # noqa: E402
from drl_engine.model import DRLModel  # noqa: E402
from drl_engine.objective import drl_loss  # noqa: E402
from drl_engine.probes import probe_embeddings  # noqa: E402
from drl_engine.samplers import sample  # noqa: E402
from drl_engine.spec import EvaluateSpec, SampleSpec, parse_spec  # noqa: E402
from drl_engine.trainer import train  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, n: int, repeats: int) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def bench_spec(quick: bool, **model):
    size = ({"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": []}
            if quick else {})
    return parse_spec({"dataset": {"name": "mnist"}, "model": {**size, **model},
                       "train": {"batch_size": 16 if quick else 128, "warmup": 10,
                                 "log_every": 1, "checkpoint_every": 10 ** 9}})


def mnist(quick: bool) -> ImageDataset:
    try:
        return load_dataset(parse_spec({"dataset": {"name": "mnist", "train_limit": 2048,
                                                    "test_limit": 1024}}).dataset)
    except ValueError:  # no MNIST files: same-shaped random images keep the figures comparable
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (2048, 1, 28, 28), generator=g, dtype=torch.uint8)
        return ImageDataset("random-28x28", x, None, x[:1024].clone(), None)


def train_figures(ds: ImageDataset, device: torch.device, quick: bool) -> dict:
    spec = bench_spec(quick)
    model = DRLModel(spec, ds.image_shape).to(device)
    x0 = to_model_range(ds.x_train[:spec.train.batch_size].to(device), model.sde.data_range)
    with FlopCounterMode(display=False) as counter:
        loss, _ = drl_loss(model, x0, spec.objective)
        loss.backward()
    flops_per_step = counter.get_total_flops()

    steps = 3 if quick else (20 if device.type == "cuda" else 4)
    reports = []
    spec = parse_spec({**spec.model_dump(), "train": {**spec.train.model_dump(),
                                                       "iterations": steps + 1}})
    train(spec, ds.to(device), None, progress=reports.append, device=device)
    steady = reports[1:]  # the first step pays for allocation and warm-up
    step_s = sum(spec.train.batch_size / r.images_per_s for r in steady) / len(steady)
    return {"network": "quick" if quick else "MNIST default (ModelSpec defaults, 28x28x1)",
            "params": sum(p.numel() for p in model.parameters()),
            "batch_size": spec.train.batch_size, "steps_timed": len(steady),
            "seconds_per_step": step_s, "images_per_s": spec.train.batch_size / step_s,
            "flops_per_step": flops_per_step, "achieved_flops": flops_per_step / step_s}


def encode_figures(ds: ImageDataset, device: torch.device, quick: bool) -> dict:
    spec = bench_spec(quick, encoder="time_conditioned")
    model = DRLModel(spec, ds.image_shape).to(device).eval()
    x = ds.x_test[:256 if quick else 1024].to(device)
    t_grid = spec.evaluate.t_grid
    encode_at(model, x[:8], [0.5], 8, device)
    sync(device)
    start = time.perf_counter()
    encode_at(model, x, t_grid, spec.evaluate.batch_size, device)
    sync(device)
    elapsed = time.perf_counter() - start
    return {"images": len(x), "t_values": len(t_grid),
            "images_per_s": len(x) * len(t_grid) / elapsed}


def sample_figures(ds: ImageDataset, device: torch.device, quick: bool) -> dict:
    spec = bench_spec(quick)
    model = DRLModel(spec, ds.image_shape).to(device).eval()
    batch = 8 if quick else 64
    codes = torch.randn(batch, spec.model.latent_dim, device=device)
    sspec = SampleSpec(steps=4 if quick else 20, sampler="pc")
    start = time.perf_counter()
    result = sample(lambda x, t: model.score(x, t, codes), model.sde, (batch, *ds.image_shape),
                    sspec, generator=torch.Generator(device=device).manual_seed(0), device=device)
    sync(device)
    elapsed = time.perf_counter() - start
    return {"sampler": "pc", "batch": batch, "nfe": result.nfe,
            "network_evals_per_s": result.nfe / elapsed,
            "image_evals_per_s": result.nfe * batch / elapsed}


def probe_figures(quick: bool) -> dict:
    rng = np.random.default_rng(0)
    n_train, n_test, dim = (3000, 1000, 8) if quick else (60000, 10000, 8)
    centres = rng.normal(0, 1.5, size=(10, dim))
    y_train, y_test = rng.integers(0, 10, n_train), rng.integers(0, 10, n_test)
    train_x = (centres[y_train] + rng.normal(size=(n_train, dim))).astype(np.float32)
    test_x = (centres[y_test] + rng.normal(size=(n_test, dim))).astype(np.float32)
    out = {"train": n_train, "test": n_test, "dim": dim}
    for label, limit in (("all_labels", None), ("probe_train_limit_10000", 10000)):
        spec = EvaluateSpec(probe_train_limit=limit)
        start = time.perf_counter()
        probe_embeddings(train_x, y_train, test_x, test_y=y_test, spec=spec)
        per_t = time.perf_counter() - start
        out[label] = {"seconds_per_t": per_t,
                      "seconds_for_11_t_time_conditioned": per_t * len(spec.t_grid),
                      "seconds_for_static_encoder": per_t}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    ds = mnist(args.quick)
    peak = matmul_peak(device, 512 if args.quick else (8192 if device.type == "cuda" else 2048),
                       3 if args.quick else 10)
    result = {
        "machine": {"device": str(device), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
        "quick": args.quick,
        "dataset": ds.name,
        "matmul_peak_flops": peak,
    }
    result["train"] = train_figures(ds, device, args.quick)
    result["train"]["fraction_of_matmul_peak"] = result["train"]["achieved_flops"] / peak
    result["encode"] = encode_figures(ds, device, args.quick)
    result["sample"] = sample_figures(ds, device, args.quick)
    result["probes"] = probe_figures(args.quick)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

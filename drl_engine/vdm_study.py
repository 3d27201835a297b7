"""`drl vdm-study`: the VDM-VAE capacity study, written to VDM_VAE.md.

For each decoder width (the U-Net's base_channels) the same conditional VDM decoder is trained
twice at an equal number of steps: as `vdm_vae` (with an encoder q(z|x) and prior N(0, I),
on the ELBO at KL weight 1) and as the unconditional `vdm`. Each run is a plain `drl run`
(`run_experiment`), so the study reports exactly what metrics.json holds:

    test bits/dim = diffusion + prior + reconstruction + KL      (KL = 0 for vdm)
    FD-LeNet of samples.png (z ~ N(0, I) for vdm_vae, unconditional for vdm) against the test set
    the probe accuracy of the code z (vdm_vae), and the KL in nats per image

and, read from the run's final (EMA) checkpoint, the schedule's endpoints gamma(0), gamma(1)
(learned, as in the paper) and, for vdm_vae, whether its decoder uses z: the same model's
diffusion term with its own posterior codes against shuffled and prior codes
(vdm/code_use.py), the test the verdict comes from.

Budgets are data (`STUDY_BUDGETS`): `small` takes about 10 minutes on 2 shared CPU cores
(OMP_NUM_THREADS=1); `full` is what docs/VDM_VAE.md shows, sized to the 2-core build machine
this project has (about an hour on one core); `paper` is the paper's scale and needs a GPU;
`tiny` exists for the tests only and its numbers mean nothing.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .checkpoint import latest_checkpoint, load_model
from .datasets import ImageDataset, load_dataset
from .device import resolve_device
from .fd_interval import format_fd
from .fd_lenet import FD_LENET
from .pipeline import run_experiment
from .registry import build_model
from .spec import RANDOM_INIT, ExperimentSpec, VDMSpec, parse_spec
from .vdm.code_use import CodeUseTest, measure_code_use

Log = Callable[[str], None]
KINDS = ("vdm_vae", "vdm")
REPORT_NAME = "VDM_VAE.md"
IMAGE_DIR = "vdm_vae"


@dataclass(frozen=True)
class Cell:
    """One run of the study: a model kind at a decoder width, optionally with free bits."""

    kind: str
    width: int
    free_bits: float = 0.0

    @property
    def name(self) -> str:
        """Its run folder and image name: vdm_vae_c8, vdm_c16, vdm_vae_fb0.5_c8."""
        return f"{self.kind}{f'_fb{self.free_bits:g}' if self.free_bits else ''}_c{self.width}"

    @property
    def label(self) -> str:
        """Its name in the report's tables."""
        return f"{self.kind} (free bits {self.free_bits:g})" if self.free_bits else self.kind


@dataclass(frozen=True)
class StudyBudget:
    name: str
    description: str
    dataset: str                      # "mnist"; "digits" only for the tests' tiny budget
    train_limit: int | None           # the first N training / test images (None = all)
    test_limit: int | None
    widths: tuple[int, ...]           # decoder (and encoder) base_channels, one pair of runs each
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float
    latent_dim: int
    iterations: int                   # the same for both kinds: equal steps
    batch_size: int
    lr: float
    warmup: int
    ema_decay: float
    schedule_features: int            # hidden width of the learned gamma(t) network
    sample_count: int                 # samples per FD-LeNet number
    sample_steps: int                 # ancestral steps T
    label_budgets: tuple[int, ...]    # SVC probes of z (vdm_vae)
    probe_train_limit: int | None
    seed: int = 0
    # One more cell, when > 0: vdm_vae at the narrowest width trained with free bits (each
    # latent dimension's KL counted as at least this many nats), to see whether a decoder
    # that ignores z under the plain ELBO uses it once a little information is free.
    free_bits: float = 0.0

    def cells(self) -> list[Cell]:
        """Every run of the study, in report order: per width vdm_vae and vdm, then the
        free-bits vdm_vae (if any)."""
        cells = [Cell(kind, width) for width in self.widths for kind in KINDS]
        if self.free_bits > 0:
            cells.append(Cell("vdm_vae", self.widths[0], self.free_bits))
        return cells

    def as_rows(self) -> list[tuple[str, str]]:
        """(setting, value) pairs for the report's budget table."""
        return [(k, str(v)) for k, v in asdict(self).items() if k != "description"]


STUDY_BUDGETS: dict[str, StudyBudget] = {
    "tiny": StudyBudget(
        name="tiny", description="test-only smoke budget (seconds; numbers mean nothing)",
        dataset="digits", train_limit=200, test_limit=40, widths=(4, 8), channel_mult=(1,),
        num_res_blocks=1, attn_resolutions=(), dropout=0.0, latent_dim=2, iterations=4,
        batch_size=16, lr=5e-3, warmup=0, ema_decay=0.0, schedule_features=16,
        sample_count=8, sample_steps=4, label_budgets=(20,), probe_train_limit=None,
        free_bits=0.5),
    "small": StudyBudget(
        name="small",
        description="2 CPU cores, about 10 minutes with OMP_NUM_THREADS=1: small U-Nets, an MNIST subset, 500 steps",
        dataset="mnist", train_limit=5000, test_limit=1000, widths=(8, 16), channel_mult=(1, 2),
        num_res_blocks=1, attn_resolutions=(), dropout=0.0, latent_dim=8, iterations=500,
        batch_size=32, lr=2e-3, warmup=50, ema_decay=0.99, schedule_features=256,
        sample_count=200, sample_steps=100, label_budgets=(100, 1000), probe_train_limit=None),
    "full": StudyBudget(
        name="full",
        description="the committed report: one CPU core, about an hour: small U-Nets, 20k MNIST "
                    "images, 2000 steps, 500 samples",
        dataset="mnist", train_limit=20_000, test_limit=2000, widths=(8, 16), channel_mult=(1, 2),
        num_res_blocks=1, attn_resolutions=(), dropout=0.0, latent_dim=8, iterations=2000,
        batch_size=32, lr=2e-3, warmup=100, ema_decay=0.995, schedule_features=256,
        sample_count=500, sample_steps=100, label_budgets=(100, 1000), probe_train_limit=None,
        free_bits=0.5),
    "paper": StudyBudget(
        name="paper",
        description="a GPU: all of MNIST, paper-size U-Nets, 80k steps, 10k samples of 1000 steps",
        dataset="mnist", train_limit=None, test_limit=None, widths=(64, 128),
        channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(7,), dropout=0.1,
        latent_dim=32, iterations=80_000, batch_size=128, lr=2e-4, warmup=5000,
        ema_decay=0.9999, schedule_features=1024, sample_count=10_000, sample_steps=1000,
        label_budgets=(100, 1000), probe_train_limit=None, free_bits=0.5),
}


def get_budget(name: str) -> StudyBudget:
    if name not in STUDY_BUDGETS:
        raise ValueError(f"--budget: expected one of {', '.join(STUDY_BUDGETS)}, got {name!r}")
    return STUDY_BUDGETS[name]


def study_spec(budget: StudyBudget, kind: str, width: int, data_dir: str | None = None,
               device: str = "auto", free_bits: float = 0.0) -> ExperimentSpec:
    """The `drl run` spec of one cell of the study: `kind` at decoder width `width`."""
    return parse_spec({
        "name": f"vdm-study {budget.name}: {Cell(kind, width, free_bits).name}",
        "dataset": {"name": budget.dataset, "data_dir": data_dir,
                    "train_limit": budget.train_limit, "test_limit": budget.test_limit},
        "model": {"kind": kind, "latent_dim": budget.latent_dim, "base_channels": width,
                  "channel_mult": list(budget.channel_mult), "num_res_blocks": budget.num_res_blocks,
                  "attn_resolutions": list(budget.attn_resolutions), "dropout": budget.dropout},
        "vdm": {"schedule_features": budget.schedule_features, "free_bits": free_bits},
        "train": {"iterations": budget.iterations, "batch_size": budget.batch_size,
                  "lr": budget.lr, "warmup": budget.warmup, "ema_decay": budget.ema_decay,
                  "seed": budget.seed, "checkpoint_every": budget.iterations,
                  "log_every": max(1, budget.iterations // 10), "device": device},
        # z is t-independent: one t is the whole probe sweep.
        "evaluate": {"t_grid": [0.0], "probes": ["svc", "linear"],
                     "label_budgets": list(budget.label_budgets),
                     "probe_train_limit": budget.probe_train_limit, "seed": budget.seed},
        "sample": {"count": budget.sample_count, "steps": budget.sample_steps, "seed": budget.seed},
    })


@dataclass
class StudyRow:
    cell: Cell
    parameters: int                   # the whole model's: decoder (+ schedule) and encoder
    encoder_parameters: int           # 0 for vdm
    steps: int
    bits: dict                        # metrics.json's bits_per_dim
    fd: dict | None                   # metrics.json's fd_lenet
    probe_best: dict | None           # the probe table's best accuracies (vdm_vae)
    kl_nats_per_image: float
    seconds: float
    run_dir: Path
    samples_png: str | None = None    # relative to the report
    control_best: dict | None = None  # the same probes of the untrained encoder (vdm_vae)
    endpoints: tuple[float, float] | None = None   # the trained schedule's gamma(0), gamma(1)
    code_use: CodeUseTest | None = None            # the within-model test of z (vdm_vae)

    @property
    def kind(self) -> str:
        return self.cell.kind

    @property
    def width(self) -> int:
        return self.cell.width


@dataclass
class StudyResult:
    budget: StudyBudget
    rows: list[StudyRow]
    report: Path
    seconds: float
    command: str


def count_parameters(spec: ExperimentSpec, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(all parameters, the encoder's) of the model `spec` builds."""
    model = build_model(spec, image_shape)
    encoder = getattr(model, "encoder", None)
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in encoder.parameters()) if encoder is not None else 0)


def run_cell(budget: StudyBudget, cell: Cell, ds: ImageDataset, runs_dir: Path,
             image_dir: Path, data_dir: str | None, device: str, log: Log) -> StudyRow:
    """Train and evaluate one cell with `run_experiment`; copy its samples.png."""
    spec = study_spec(budget, cell.kind, cell.width, data_dir, device, cell.free_bits)
    run_dir = runs_dir / cell.name
    log(f"--- {cell.label}, base_channels {cell.width}: {budget.iterations} steps -> {run_dir}")
    start = time.perf_counter()
    summary = run_experiment(spec, run_dir, log=log, dataset=ds, on_train_progress=lambda p: log(
        f"step {p.step}/{p.total}: loss {p.loss:.4g} bits/dim, {p.images_per_s:.0f} images/s"))
    seconds = time.perf_counter() - start
    metrics = summary.metrics
    bits = metrics["bits_per_dim"]
    params, encoder_params = count_parameters(spec, ds.image_shape)
    image_dir.mkdir(parents=True, exist_ok=True)
    png = image_dir / f"{cell.name}_samples.png"
    shutil.copyfile(run_dir / "samples.png", png)
    data_dims = math.prod(ds.image_shape)
    endpoints, code_use = trained_model_checks(spec, ds, run_dir, device)
    if code_use is not None:
        log(f"code use: diffusion {code_use.posterior:.4f} bits/dim with posterior codes, "
            f"{code_use.shuffled:.4f} shuffled, {code_use.prior:.4f} from the prior")
    return StudyRow(cell, params, encoder_params, metrics["train"]["steps"], bits,
                    metrics["fd_lenet"], summary.probes.best() if summary.probes else None,
                    bits["kl"] * data_dims * math.log(2.0), seconds, run_dir,
                    f"{image_dir.name}/{png.name}",
                    summary.probes.best(RANDOM_INIT) if summary.probes else None,
                    endpoints, code_use)


def trained_model_checks(spec: ExperimentSpec, ds: ImageDataset, run_dir: Path, device: str
                         ) -> tuple[tuple[float, float], CodeUseTest | None]:
    """From the run's final checkpoint (the EMA weights metrics.json was computed with): the
    schedule's endpoints, and the code-use test on the test split (vdm_vae), at the seed and
    batch size of the reported bits/dim so that its posterior-code diffusion is the table's."""
    torch_device = resolve_device(device)
    model = load_model(latest_checkpoint(run_dir / "checkpoints"), device=torch_device)
    endpoints = tuple(float(e.detach()) for e in model.schedule.endpoints())
    code_use = (measure_code_use(model, ds.x_test, spec.evaluate.batch_size, spec.evaluate.seed,
                                 torch_device) if model.has_encoder else None)
    return endpoints, code_use


def run_vdm_study(budget: str | StudyBudget, out_dir: str | Path, *, data_dir: str | None = None,
                  device: str = "auto", runs_dir: str | Path | None = None,
                  command: str | None = None, log: Log = print) -> StudyResult:
    """Every (width, kind) cell of `budget`, then out_dir/VDM_VAE.md and out_dir/vdm_vae/*.png.

    Runs (checkpoints, embeddings, metrics.json) go to `runs_dir`, default
    runs/vdm-study-<budget>, so that the report folder holds only the report and its images.
    """
    budget = get_budget(budget) if isinstance(budget, str) else budget
    out_dir = Path(out_dir)
    runs_dir = Path(runs_dir) if runs_dir else Path("runs") / f"vdm-study-{budget.name}"
    command = command or f"drl vdm-study --budget {budget.name} --out {out_dir}"
    start = time.perf_counter()
    # One load for every cell: they share the data.
    ds = load_dataset(study_spec(budget, KINDS[0], budget.widths[0], data_dir, device).dataset)
    rows = [run_cell(budget, cell, ds, runs_dir, out_dir / IMAGE_DIR, data_dir, device, log)
            for cell in budget.cells()]
    result = StudyResult(budget, rows, out_dir / REPORT_NAME, time.perf_counter() - start, command)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.report.write_text(render_report(result, ds))
    log(f"wrote {result.report}")
    return result


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def results_table(rows: list[StudyRow]) -> str:
    """The main table: one line per (width, kind), every ELBO term, FD-LeNet, the code's use."""
    head = ("| base_channels | kind | decoder params | encoder params | steps | bits/dim | diffusion | prior | "
            f"reconstruction | KL | KL (nats/image) | {FD_LENET} [95% CI] | linear probe on z | "
            "the same, untrained encoder |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        b = r.bits
        probe = (r.probe_best or {}).get("linear")
        control = (r.control_best or {}).get("linear")
        lines.append(
            f"| {r.width} | {r.cell.label} | {r.parameters - r.encoder_parameters:,} | "
            f"{r.encoder_parameters:,} | {r.steps} | {_fmt(b['total'])} | "
            f"{_fmt(b['diffusion'])} | {_fmt(b['prior'])} | {_fmt(b['reconstruction'])} | "
            f"{_fmt(b['kl'])} | {_fmt(r.kl_nats_per_image, 2)} | "
            f"{format_fd(r.fd) if r.fd else 'n/a'} | "
            f"{_fmt(probe['value']) if probe else 'n/a'} | "
            f"{_fmt(control['value']) if control else 'n/a'} |")
    return "\n".join(lines)


def comparison_lines(rows: list[StudyRow]) -> list[str]:
    """Per width: vdm_vae minus vdm in bits/dim and FD-LeNet (negative = the VAE is better)."""
    lines = []
    for vae, base in vae_vdm_pairs(rows, free_bits=False):
        fd = (f"{vae.fd['value'] - base.fd['value']:+.3f}" if vae.fd and base.fd else "n/a")
        lines.append(f"- base_channels {vae.width}: vdm_vae - vdm = "
                     f"{vae.bits['total'] - base.bits['total']:+.4f} bits/dim, "
                     f"{fd} {FD_LENET}; the VAE's KL is {vae.kl_nats_per_image:.2f} nats per "
                     f"image ({vae.bits['kl']:.4f} bits/dim).")
    return lines


def vae_vdm_pairs(rows: list[StudyRow], free_bits: bool) -> list[tuple[StudyRow, StudyRow]]:
    """(vdm_vae row, the vdm row of its width): the ELBO VAEs, or the free-bits ones."""
    vdm = {r.width: r for r in rows if r.kind == "vdm"}
    return [(r, vdm[r.width]) for r in rows
            if r.kind == "vdm_vae" and bool(r.cell.free_bits) == free_bits and r.width in vdm]


# Below this KL (nats per image) the code tells the decoder almost nothing: posterior collapse.
COLLAPSE_NATS = 1.0


def _gain(value: float, noise: float) -> str:
    return f"{value:+.4f} ± {noise:.4f}"


def code_use_table(rows: list[StudyRow]) -> list[str]:
    """Per vdm_vae: the same model's diffusion term with its posterior codes, shuffled codes
    and prior codes, and the paired differences (vdm/code_use.py)."""
    tested = [r for r in rows if r.code_use is not None]
    if not tested:
        return []
    lines = ["| base_channels | kind | diffusion, posterior codes | shuffled codes | prior codes | "
             "shuffled - posterior (± 2 SE) | prior - posterior (± 2 SE) | decoder uses z? |",
             "|---|---|---|---|---|---|---|---|"]
    for r in tested:
        c = r.code_use
        lines.append(f"| {r.width} | {r.cell.label} | {_fmt(c.posterior)} | {_fmt(c.shuffled)} | "
                     f"{_fmt(c.prior)} | {_gain(c.shuffled_gain, c.shuffled_noise)} | "
                     f"{_gain(c.prior_gain, c.prior_noise)} | "
                     f"{'yes' if c.uses_code else '**no**'} |")
    return lines


def code_use(vae: StudyRow, base: StudyRow | None) -> str:
    """Does the decoder use z? The verdict comes from the within-model test (code_use_table):
    the same model's diffusion term with other images' codes against its own. The KL says how
    much the code carries; `vdm`'s diffusion term (a model trained apart) is given beside it."""
    carried = f"the code carries {vae.kl_nats_per_image:.2f} nats per image (KL)" + (
        f", below {COLLAPSE_NATS:g}: posterior collapse" if vae.kl_nats_per_image < COLLAPSE_NATS
        else "")
    test = vae.code_use
    if test is None:
        verdict = "the within-model test was not run"
    elif test.uses_code:
        verdict = ("the decoder uses it: with other test images' codes the same model's "
                   f"diffusion term rises by {_gain(test.shuffled_gain, test.shuffled_noise)} "
                   "bits/dim (two standard errors)")
    else:
        verdict = ("the decoder does not measurably use it: with other test images' codes the "
                   f"same model's diffusion term changes by "
                   f"{_gain(test.shuffled_gain, test.shuffled_noise)} bits/dim, within two "
                   "standard errors")
    gap = None if base is None else base.bits["diffusion"] - vae.bits["diffusion"]
    against = "" if gap is None else (
        ". For comparison only (a different model, trained apart, so not the test): `vdm` of "
        f"the same width has a diffusion term {abs(gap):.4f} bits/dim "
        f"{'higher' if gap > 0 else 'lower'} than this one's")
    return f"{carried}; {verdict}{against}"


def endpoint_lines(rows: list[StudyRow]) -> list[str]:
    """The trained schedules' endpoints, and what the spec says about them."""
    shown = [r for r in rows if r.endpoints is not None]
    if not shown:
        return []
    start = VDMSpec()
    return ["The noise schedule's endpoints gamma(0), gamma(1) are learned on the ELBO, as in "
            f"the VDM paper (`vdm.schedule: learned`, starting at {start.gamma_min:g} and "
            f"{start.gamma_max:g}); the shape "
            "between them is trained for a low-variance loss. Trained values: " + "; ".join(
                f"{r.cell.name} ({r.endpoints[0]:.2f}, {r.endpoints[1]:.2f})" for r in shown) + ".",
            ""]


def reading_notes(rows: list[StudyRow]) -> list[str]:
    """What the tables can and cannot say, from their own numbers."""
    notes = ["- One seed per cell and one stochastic ELBO estimate per test image: there are no "
             "error bars between cells, so small differences between cells are not evidence of "
             "an effect. The within-model test is paired (the same t, eps and z draws under "
             "every code), so its two standard errors are those of the difference itself."]
    for vae, base in vae_vdm_pairs(rows, free_bits=False):
        use = code_use(vae, base)
        notes.append(f"- Does the VAE use z at base_channels {vae.width}? {use[0].upper()}{use[1:]}.")
    notes.append(
        "- The linear probe reads the encoder mean, which can separate classes even when its "
        "spread is tiny next to the prior's; the within-model test, not the probe, says "
        "whether the decoder gets anything from the code.")
    for vae, base in vae_vdm_pairs(rows, free_bits=True):
        notes.append(
            f"- Free bits ({vae.cell.free_bits:g} nats per latent dimension, base_channels "
            f"{vae.width}): each dimension's KL is floored during training, so training is "
            "*not* on the ELBO; the bits/dim in the table is still the true test ELBO at KL "
            f"weight 1 ({_fmt(vae.bits['total'])}, against {_fmt(base.bits['total'])} for "
            f"`vdm`). With free bits {code_use(vae, base)}.")
    notes.append(f"- {FD_LENET} is a LeNet feature distance on this dataset, not an FID; it is "
                 "comparable only between rows of this table (same LeNet, same sample count). "
                 "In brackets: its 95% bootstrap interval for the population distance, which "
                 "lies below the value by about the estimate's upward bias (fd_interval.py).")
    return notes


def render_report(result: StudyResult, ds: ImageDataset) -> str:
    b = result.budget
    rows = result.rows
    n_samples = rows[0].fd["samples"] if rows and rows[0].fd else b.sample_count
    small_note = next((r.fd.get("note") for r in rows if r.fd and r.fd.get("note")), None)
    parts = [
        f"# VDM-VAE capacity study ({b.name} budget)",
        "",
        f"**Budget: `{b.name}`** ({b.description}). " + (
            "A scaled-down CPU run: its numbers show the pipeline and the direction of the "
            "effects at this budget, not the paper-scale result; the paper-scale budget "
            "(`--budget paper`) needs a GPU and has not been run."
            if b.name != "paper" else "The paper-scale GPU budget."),
        "",
        "Each decoder width trains the same conditional VDM decoder twice at an equal number "
        "of steps: `vdm_vae` (encoder q(z|x), prior N(0, I), the ELBO at KL weight 1) and the "
        "unconditional `vdm`" + (f"; one more `vdm_vae` at base_channels {b.widths[0]} trains "
                                  f"with free bits ({b.free_bits:g} nats per latent dimension), "
                                  "reported as such" if b.free_bits else "")
        + ". Bits/dim is the test-set negative ELBO (one stochastic estimate per image, "
        "seeded), with every term; for `vdm` the KL term is 0 by construction. "
        f"{FD_LENET} (the Frechet distance in the features of a LeNet trained on the dataset, "
        "not an FID) compares samples.png's images, z ~ N(0, I) for `vdm_vae` and "
        "unconditional for `vdm`, with the test images. The linear probe is the accuracy of "
        "a logistic regression on the test codes z (chance 0.10); beside it, the same probe of "
        "the untrained encoder (same architecture and seed, never trained).",
        "",
        "Regenerate:",
        "",
        "```bash",
        result.command,
        "```",
        "",
        "MNIST is read from `--data-dir`, else $DRL_DATA_DIR, else ./data. On a shared CPU, "
        "set OMP_NUM_THREADS=1: with 2 threads on 2 busy cores a training step was measured "
        "dozens of times slower than with one (5.4 s against 0.11 s at base_channels 8).",
        "",
        f"Data: {ds.name}, {len(ds.x_train)} training / {len(ds.x_test)} test images "
        f"(the first ones of each split). Seed {b.seed} for everything seeded (initialisation, "
        f"batches, t and noise draws, evaluation, sampling, probes). {FD_LENET} from "
        f"{n_samples} samples of {b.sample_steps} ancestral steps each. "
        f"Total time: {result.seconds / 60:.1f} minutes.",
        "",
        "## Results",
        "",
        results_table(rows),
        "",
        *comparison_lines(rows),
        "",
    ]
    if small_note:
        parts += [f"{FD_LENET} note: {small_note}.", ""]
    code_table = code_use_table(rows)
    if code_table:
        parts += ["## Does the decoder use z? The test within each model", "",
                  "Each trained `vdm_vae` scores the test split three times with every random "
                  "draw shared (t, z ~ q(z|x), eps, eps_0; seed "
                  f"{b.seed}), changing only the code its decoder is conditioned on: its own "
                  "posterior sample z ~ q(z|x) (the ELBO's, so this column is the table's "
                  "diffusion term), the posterior samples of other test images (a seeded "
                  "derangement within each batch), or z ~ N(0, I). Only the diffusion term "
                  "sees the code (the prior and reconstruction terms read x and gamma(1), "
                  "gamma(0) alone), so it is the one compared; differences are per image, "
                  "paired, in bits/dim, with two standard errors over the test images. The "
                  "verdict reads the shuffled codes.", "", *code_table, ""]
    parts += endpoint_lines(rows)
    parts += ["## How to read it", "", *reading_notes(rows), ""]
    parts += ["Time per run (train + evaluate + sample): " + ", ".join(
        f"{r.cell.name} {r.seconds:.0f} s" for r in rows) + ".", ""]
    parts += ["## Samples from the prior", ""]
    for r in rows:
        if r.samples_png:
            parts += [f"{r.cell.label}, base_channels {r.width}:", "",
                      f"![{r.cell.name}]({r.samples_png})", ""]
    parts += ["## Budget", "", "| setting | value |", "|---|---|",
              *[f"| {k} | {v} |" for k, v in b.as_rows()], ""]
    return "\n".join(parts)


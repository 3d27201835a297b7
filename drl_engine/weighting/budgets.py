"""The budgets of `drl weighting-study`, as data, and the grid of cells each one runs.

A cell is one training run: a dataset, a variant (how the model is trained), an encoder
(static or time-conditioned) and a seed. Every variant of a dataset trains the same networks
for the same number of encoder steps, so the comparison is at equal steps.

`small` takes about 20 minutes on one CPU core; `full` is what docs/WEIGHTING.md shows, about
three and a half hours of one core (two shards on the 2-core build machine), cut to fit: small
U-Nets, 10k-image subsets, 1500 steps, the time-conditioned encoder on MNIST only and no window
on Fashion-MNIST (each would repeat another row's story); `paper` is the GPU-scale grid and has
not been run. `tiny`
exists for the tests only (seconds; its numbers mean nothing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# How each variant trains (spec overrides), in report order. `ae` is the baseline the issue
# measures against (the same encoder, a decoder instead of a score network).
VARIANTS: dict[str, dict] = {
    "paper": {"objective": {}},
    "edm": {"objective": {"parameterization": "edm"}},
    "window": {"objective": {"t_sampling": "window", "t_lo": 0.3, "t_hi": 0.6}},
    "ae": {"model": {"kind": "ae"}},
    # The second way to meet its target: EDM at twice the AE's steps.
    "edm_2x": {"objective": {"parameterization": "edm"}, "steps_factor": 2},
}
VARIANT_LABELS = {
    "paper": "DRL, paper objective (lambda = sigma^2, uniform t)",
    "edm": "DRL, EDM preconditioning and weight (uniform t)",
    "window": "DRL, window t ~ U(0.3, 0.6), then decoder fine-tune on uniform t",
    "ae": "AE (same encoder, equal steps)",
    "edm_2x": "DRL, EDM as above, at twice the steps of every other row",
}
# The variants that train at the budget's steps (the equal-steps comparison).
EQUAL_STEP_VARIANTS = ("paper", "edm", "window", "ae")
# The window variant's score network never saw t outside its window: after the main phase it
# trains this fraction of the main steps more on uniform t with the encoder frozen
# (train.decoder_finetune_steps), so its samples are drawn over the whole range.
WINDOW_FINETUNE_FRACTION = 0.2


@dataclass(frozen=True)
class Cell:
    dataset: str
    variant: str
    encoder: str          # 'static' | 'time_conditioned'
    seed: int

    @property
    def name(self) -> str:
        """Its run folder: mnist/edm-static-s0."""
        enc = "tcond" if self.encoder == "time_conditioned" else "static"
        return f"{self.dataset}/{self.variant}-{enc}-s{self.seed}"


ALL_DRL = ("paper", "edm", "window")


@dataclass(frozen=True)
class DatasetBudget:
    name: str                       # drl dataset name
    train_limit: int | None         # the first N training / test images (None = all)
    test_limit: int | None
    # The variants trained with a static encoder (the AE always is), and those also trained
    # with a time-conditioned one.
    variants: tuple[str, ...] = EQUAL_STEP_VARIANTS
    time_conditioned: tuple[str, ...] = ()


@dataclass(frozen=True)
class WeightingBudget:
    name: str
    description: str
    datasets: tuple[DatasetBudget, ...]
    seeds: tuple[int, ...]
    # Networks (score U-Net and encoder share them; see ModelSpec).
    latent_dim: int
    base_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    dropout: float
    # Training, equal for every variant.
    iterations: int
    batch_size: int
    lr: float
    warmup: int
    ema_decay: float
    # How often the checkpoints that give accuracy against steps (and code usage) are taken.
    checkpoints: int
    # Evaluation: the t grid of time-conditioned encoders (a static code is one t).
    t_grid: tuple[float, ...]
    label_budgets: tuple[int, ...]
    validation_size: int
    code_usage_images: int
    # Sampling: reconstructions of this many test images, for FD-LeNet and agreement.
    sample_count: int
    sample_steps: int
    cut: tuple[str, ...] = field(default_factory=tuple)   # what this budget leaves out, and why

    def cells(self) -> list[Cell]:
        """Every run, in report order: per dataset, the static encoders (every variant, every
        seed), then the time-conditioned ones, so a study cut short has the static comparison
        first. The AE's encoder is static by definition."""
        cells = []
        for ds in self.datasets:
            cells += [Cell(ds.name, variant, "static", seed)
                      for variant in ds.variants for seed in self.seeds]
            cells += [Cell(ds.name, variant, "time_conditioned", seed)
                      for variant in ds.variants
                      if variant in ds.time_conditioned and variant != "ae"
                      for seed in self.seeds]
        return cells

    def dataset(self, name: str) -> DatasetBudget:
        return next(d for d in self.datasets if d.name == name)

    def as_rows(self) -> list[tuple[str, str]]:
        """(setting, value) pairs for the report's budget table."""
        return [(k, str(v)) for k, v in asdict(self).items() if k not in ("description", "cut")]


FULL_T_GRID = tuple(round(0.1 * i, 1) for i in range(11))

BUDGETS: dict[str, WeightingBudget] = {
    "tiny": WeightingBudget(
        name="tiny", description="test-only smoke budget (seconds; numbers mean nothing)",
        datasets=(DatasetBudget("digits", 300, 100, variants=tuple(VARIANTS),
                                time_conditioned=ALL_DRL),),
        seeds=(0, 1), latent_dim=4, base_channels=4, channel_mult=(1,), num_res_blocks=1,
        dropout=0.0, iterations=4, batch_size=16, lr=1e-3, warmup=0, ema_decay=0.9,
        checkpoints=2, t_grid=(0.0, 0.5, 1.0), label_budgets=(20, 50), validation_size=40,
        code_usage_images=32, sample_count=8, sample_steps=4),
    "small": WeightingBudget(
        name="small",
        description="one CPU core, about 20 minutes: digits and a 3k MNIST subset, 400 steps, "
                    "3 seeds",
        datasets=(DatasetBudget("digits", None, None),
                  DatasetBudget("mnist", 3000, 1000)),
        seeds=(0, 1, 2), latent_dim=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
        dropout=0.0, iterations=400, batch_size=64, lr=1e-3, warmup=50, ema_decay=0.99,
        checkpoints=4, t_grid=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), label_budgets=(100, 1000),
        validation_size=500, code_usage_images=256, sample_count=64, sample_steps=100,
        cut=("Fashion-MNIST and the time-conditioned encoder (see `full`)",)),
    "full": WeightingBudget(
        name="full",
        description="the committed report: about 3.5 hours of one CPU core (two shards on 2 "
                    "cores); small U-Nets, digits and 10k-image MNIST and Fashion-MNIST "
                    "subsets, 1500 steps, 3 seeds",
        # MNIST first: it carries the targets, so it is done first on a tight machine.
        datasets=(DatasetBudget("mnist", 10_000, 2000, variants=(*EQUAL_STEP_VARIANTS, "edm_2x"),
                                time_conditioned=("paper", "edm")),
                  DatasetBudget("digits", None, None),
                  DatasetBudget("fashion_mnist", 10_000, 2000, variants=("paper", "edm", "ae"))),
        seeds=(0, 1, 2), latent_dim=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
        dropout=0.0, iterations=1500, batch_size=64, lr=1e-3, warmup=100, ema_decay=0.995,
        checkpoints=5, t_grid=FULL_T_GRID, label_budgets=(100, 1000), validation_size=1000,
        code_usage_images=256, sample_count=100, sample_steps=100,
        cut=("the time-conditioned encoder on digits and Fashion-MNIST, and for the window "
             "variant (MNIST's paper and edm rows answer the t-profile question)",
             "the window variant on Fashion-MNIST (digits and MNIST show what a window does)",
             "the MLP probe (linear, SVC and silhouette answer the question)",
             "FD-LeNet from 100 reconstructions of 100 PC steps: biased upward, comparable "
             "only within this report")),
    "paper": WeightingBudget(
        name="paper",
        description="a GPU: all of MNIST and Fashion-MNIST, appendix D's network, 80k steps",
        datasets=(DatasetBudget("digits", None, None, time_conditioned=ALL_DRL),
                  DatasetBudget("mnist", None, None, time_conditioned=ALL_DRL),
                  DatasetBudget("fashion_mnist", None, None, time_conditioned=ALL_DRL)),
        seeds=(0, 1, 2), latent_dim=8, base_channels=32, channel_mult=(1, 2), num_res_blocks=2,
        dropout=0.1, iterations=80_000, batch_size=128, lr=2e-4, warmup=5000, ema_decay=0.999,
        checkpoints=8, t_grid=FULL_T_GRID, label_budgets=(100, 1000), validation_size=5000,
        code_usage_images=1000, sample_count=1000, sample_steps=1000),
}
PUBLIC_BUDGETS = ("small", "full", "paper")


def get_budget(name: str) -> WeightingBudget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise ValueError(f"--budget: expected one of {list(PUBLIC_BUDGETS)}, got {name!r}") from None

"""The budgets of `drl reproduce`, as data: how big the nets, data, runs and sample sets are.

`small` fits in 20 minutes on 2 CPU cores (tiny U-Nets, MNIST subsets, a few hundred steps, a
few t values); `full` is what docs/REPRODUCTION.md shows, sized to the 2-core build machine this
project has (about an hour on one core: small U-Nets, 1500 steps, the 11-point t grid);
`paper` is the paper's scale (appendix D: the full-size U-Net, all of MNIST, 80k steps at
batch 128, N = 1000 sampler steps) and needs a GPU. `tiny` exists for the tests only (under
a minute) and is not offered by the CLI's help.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Budget:
    name: str
    description: str
    # Data: the first N MNIST training / test images (None = all 60k / 10k).
    train_limit: int | None
    test_limit: int | None
    # Networks (score U-Net and encoder share these; see ModelSpec).
    base_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float
    # Training, the same for every model kind of a section (equal steps).
    iterations: int
    batch_size: int
    lr: float
    warmup: int
    ema_decay: float
    # Probes.
    t_grid: tuple[float, ...]
    label_budgets: tuple[int, ...]
    probe_train_limit: int | None
    # b: the single training t of each fixed-t DRL.
    single_t_values: tuple[float, ...]
    # c: the decoded grid is grid_side x grid_side codes.
    grid_side: int
    # Sampling (c and e): N steps over the full [eps, 1], predictor-corrector.
    sample_steps: int
    # e: samples per FD-LeNet number, and the t_init values.
    fd_samples: int
    # d: pairs of test images whose x_t and code are swapped, the swap times, and the side of
    # the figure's grid (its first swap_grid test images).
    swap_pairs: int
    swap_grid: int
    swap_t_values: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    t_init_values: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    # One seed for everything seeded: training, label subsets, encoding noise, sampling.
    seed: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_rows(self) -> list[tuple[str, str]]:
        """(setting, value) pairs for the report's budget table."""
        return [(k, str(v)) for k, v in asdict(self).items() if k not in ("description", "notes")]


FULL_T_GRID = tuple(round(0.1 * i, 1) for i in range(11))

BUDGETS: dict[str, Budget] = {
    "tiny": Budget(
        name="tiny", description="test-only smoke budget (seconds; numbers mean nothing)",
        train_limit=300, test_limit=100, base_channels=4, channel_mult=(1,), num_res_blocks=1,
        attn_resolutions=(), dropout=0.0, iterations=3, batch_size=16, lr=1e-3, warmup=0,
        ema_decay=0.9, t_grid=(0.0, 1.0), label_budgets=(20, 50), probe_train_limit=None,
        single_t_values=(0.2, 0.8), grid_side=3, sample_steps=10, fd_samples=16,
        swap_pairs=12, swap_grid=3, swap_t_values=(0.5,), t_init_values=(0.5, 1.0)),
    "small": Budget(
        name="small",
        description="2 CPU cores, under 20 minutes: tiny U-Nets, MNIST subsets, a few hundred steps",
        train_limit=3000, test_limit=1000, base_channels=8, channel_mult=(1, 2),
        num_res_blocks=1, attn_resolutions=(), dropout=0.0, iterations=300, batch_size=32,
        lr=1e-3, warmup=30, ema_decay=0.99, t_grid=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        label_budgets=(100, 1000), probe_train_limit=None, single_t_values=(0.1, 0.5, 0.9),
        grid_side=8, sample_steps=100, fd_samples=200, swap_pairs=200, swap_grid=6),
    "full": Budget(
        name="full",
        description="the committed report, sized to the 2-core build machine: about an hour on "
                    "one CPU core; small U-Nets, 10k MNIST images, 1500 steps at batch 64, the "
                    "11-point t grid",
        train_limit=10_000, test_limit=2000, base_channels=8, channel_mult=(1, 2),
        num_res_blocks=1, attn_resolutions=(), dropout=0.0, iterations=1500, batch_size=64,
        lr=1e-3, warmup=100, ema_decay=0.995, t_grid=FULL_T_GRID, label_budgets=(100, 1000),
        probe_train_limit=None, single_t_values=(0.1, 0.5, 0.9), grid_side=10,
        sample_steps=100, fd_samples=500, swap_pairs=500, swap_grid=8),
    "paper": Budget(
        name="paper",
        description="paper scale (appendix D): full MNIST, full-size U-Net, 80k steps; a GPU",
        train_limit=None, test_limit=None, base_channels=64, channel_mult=(1, 2, 2),
        num_res_blocks=2, attn_resolutions=(7,), dropout=0.1, iterations=80_000,
        batch_size=128, lr=2e-4, warmup=5000, ema_decay=0.999, t_grid=FULL_T_GRID,
        label_budgets=(100, 1000), probe_train_limit=None,
        single_t_values=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        grid_side=16, sample_steps=1000, fd_samples=10_000, swap_pairs=2000, swap_grid=8),
}
PUBLIC_BUDGETS = ("small", "full", "paper")


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise ValueError(f"--budget: expected one of {list(PUBLIC_BUDGETS)}, got {name!r}") from None

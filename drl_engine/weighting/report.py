"""WEIGHTING.md from the cells' results: means and standard errors over seeds, the untrained
control beside every number, the issue's targets checked from the numbers, and figures.

Every accuracy is the test value at the t chosen on the validation split (`ProbeTable.best`),
per seed; a row's "mean ± SE" is over seeds (SE = sample std / sqrt(seeds)). The gap over the
untrained control is paired by seed (same architecture, same seed, same label subsets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .budgets import VARIANT_LABELS, VARIANTS, WeightingBudget  # noqa: E402
from .cells import CURVE_T, CellResult  # noqa: E402

IMAGE_DIR = "weighting"


def probe_columns(budget: WeightingBudget) -> dict[str, str]:
    """The probe columns of the tables, in order, with their headings: the SVC per label
    budget on raw codes (the paper's protocol) and standardized, then linear and silhouette."""
    columns = {}
    for n in budget.label_budgets:
        columns[f"svc_{n}"] = f"SVC-{n}"
        columns[f"svc_{n}_std"] = f"SVC-{n} std"
    return {**columns, "linear": "linear", "silhouette": "silhouette"}


def headline_svc(budget: WeightingBudget) -> str:
    """The SVC column the gaps, targets and learning curves use: the largest label budget,
    standardized codes."""
    return f"svc_{max(budget.label_budgets)}_std"

# The target: EDM's static SVC-1000 on MNIST within this of the AE's at equal steps.
AE_TARGET_GAP = 0.02
# A variant "beats its control" when its paired gap exceeds this many standard errors.
CONTROL_SE = 3.0
# Where along t the t-profile question looks: small t (detail) and large t (class).
SMALL_T, LARGE_T = 0.2, 0.6


@dataclass(frozen=True)
class Estimate:
    mean: float
    se: float        # NaN with fewer than two values
    n: int

    @classmethod
    def of(cls, values) -> Estimate:
        arr = np.asarray([v for v in values if v is not None], dtype=float)
        arr = arr[np.isfinite(arr)]
        if len(arr) == 0:
            return cls(math.nan, math.nan, 0)
        se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else math.nan
        return cls(float(arr.mean()), se, len(arr))

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a"
        return f"{self.mean:.3f}" + (f" ± {self.se:.3f}" if math.isfinite(self.se) else "")


def group(results: list[CellResult]) -> dict[tuple[str, str, str], list[CellResult]]:
    """(dataset, variant, encoder) -> its seeds' results, in the grid's order."""
    groups: dict[tuple[str, str, str], list[CellResult]] = {}
    for r in results:
        groups.setdefault((r.cell.dataset, r.cell.variant, r.cell.encoder), []).append(r)
    return groups


def best_values(rs: list[CellResult], column: str, control: bool = False) -> list[float | None]:
    key = "control_best" if control else "best"
    return [(r.probes.get(key) or {}).get(column, {}).get("value") for r in rs]


def paired_gap(rs: list[CellResult], column: str) -> Estimate:
    """Trained minus untrained control, per seed, then mean ± SE."""
    pairs = zip(best_values(rs, column), best_values(rs, column, control=True))
    return Estimate.of([a - b for a, b in pairs if a is not None and b is not None])


def row_label(variant: str, encoder: str) -> str:
    return f"{variant} ({'time-cond.' if encoder == 'time_conditioned' else 'static'})"


def results_table(groups, budget: WeightingBudget, dataset: str, control: bool) -> list[str]:
    columns = probe_columns(budget)
    head = "| model | " + " | ".join(columns.values()) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for (ds, variant, encoder), rs in groups.items():
        if ds != dataset:
            continue
        cells = [str(Estimate.of(best_values(rs, c, control))) for c in columns]
        lines.append(f"| {row_label(variant, encoder)} | " + " | ".join(cells) + " |")
    return lines


def gap_table(groups, budget: WeightingBudget, dataset: str) -> tuple[list[str], list[str]]:
    """The paired gap over the untrained control for the headline SVC and linear, and the
    rows that do not beat it by CONTROL_SE standard errors."""
    svc = headline_svc(budget)
    lines = [f"| model | {probe_columns(budget)[svc]} - control | linear - control | "
             f"beats control by > {CONTROL_SE:g} SE? |", "|---|---|---|---|"]
    failing = []
    for (ds, variant, encoder), rs in groups.items():
        if ds != dataset:
            continue
        gaps = [paired_gap(rs, c) for c in (svc, "linear")]
        beats = all(g.n > 1 and g.mean > CONTROL_SE * g.se for g in gaps)
        if not beats:
            failing.append(row_label(variant, encoder))
        lines.append(f"| {row_label(variant, encoder)} | {gaps[0]} | {gaps[1]} | "
                     f"{'yes' if beats else '**no**'} |")
    return lines, failing


def sample_table(groups, dataset: str) -> list[str]:
    lines = ["| model | reconstruction agreement | FD-LeNet (reconstructions) | seconds per run |",
             "|---|---|---|---|"]
    for (ds, variant, encoder), rs in groups.items():
        if ds != dataset:
            continue
        lines.append(f"| {row_label(variant, encoder)} | {Estimate.of(r.agreement for r in rs)} | "
                     f"{Estimate.of(r.fd_lenet for r in rs)} | "
                     f"{Estimate.of(r.seconds for r in rs).mean:.0f} |")
    return lines


def ae_target(groups, budget: WeightingBudget, dataset: str = "mnist") -> list[str]:
    """The issue's target: edm static SVC-1000 within AE_TARGET_GAP of the AE's."""
    edm, ae = groups.get((dataset, "edm", "static")), groups.get((dataset, "ae", "static"))
    if not edm or not ae:
        return []
    out = []
    svc, columns = headline_svc(budget), probe_columns(budget)
    for column in (svc.removesuffix("_std"), svc):
        e, a = Estimate.of(best_values(edm, column)), Estimate.of(best_values(ae, column))
        gap = a.mean - e.mean
        verdict = ("**holds**" if gap <= AE_TARGET_GAP else "**does not hold**")
        out.append(f"- {columns[column]} on {dataset}: edm {e} against AE {a} at equal steps: "
                   f"the AE leads by {gap:+.3f}; the target (within {AE_TARGET_GAP}) {verdict}.")
    ae_final = Estimate.of(best_values(ae, svc)).mean
    longer = groups.get((dataset, "edm_2x", "static"))
    for name, rs in (("edm", edm), ("edm at twice the steps", longer)):
        if not rs:
            continue
        reached = [s for s, v in mean_curve(rs, svc) if v >= ae_final - AE_TARGET_GAP]
        out.append(f"- Learning curve ({columns[svc]} at each checkpoint, mean over seeds): "
                   f"{name} " + (f"first comes within {AE_TARGET_GAP} of the AE's final value "
                                 f"({ae_final:.3f}) at step {reached[0]}." if reached else
                                 f"does not come within {AE_TARGET_GAP} of the AE's final value "
                                 f"({ae_final:.3f}) in the {rs[0].steps} steps it ran."))
    if longer:
        e2 = Estimate.of(best_values(longer, svc))
        verdict = "**holds**" if ae_final - e2.mean <= AE_TARGET_GAP else "**does not hold**"
        out.append(f"- At twice the AE's steps ({longer[0].steps}), edm reaches {columns[svc]} "
                   f"{e2} against the AE's {ae_final:.3f}: the target's second form (within "
                   f"{AE_TARGET_GAP} in at most twice the steps) {verdict}.")
    else:
        out.append("- Twice the steps (the target's second form) was not run in this report.")
    return out


def mean_curve(rs: list[CellResult], column: str) -> list[tuple[int, float]]:
    steps = sorted({p["step"] for r in rs for p in r.curve})
    return [(s, Estimate.of(p.get(column) for r in rs for p in r.curve if p["step"] == s).mean)
            for s in steps]


def t_profile(groups, dataset: str) -> list[str]:
    """For time-conditioned rows: does class information grow with t (detail at small t,
    class at large t)? Linear-probe test accuracy at t <= SMALL_T against t >= LARGE_T,
    per seed, paired."""
    out = []
    for (ds, variant, encoder), rs in groups.items():
        if ds != dataset or encoder != "time_conditioned":
            continue
        diffs, small_all, large_all = [], [], []
        for r in rs:
            rows = r.probes.get("rows", [])
            small = [row["linear"] for row in rows if row["t"] <= SMALL_T and row.get("linear") is not None]
            large = [row["linear"] for row in rows if row["t"] >= LARGE_T and row.get("linear") is not None]
            if small and large:
                diffs.append(np.mean(large) - np.mean(small))
                small_all.append(np.mean(small))
                large_all.append(np.mean(large))
        d = Estimate.of(diffs)
        holds = d.n > 1 and d.mean > 2 * d.se
        out.append(f"- {row_label(variant, encoder)}: linear accuracy at t <= {SMALL_T} "
                   f"{Estimate.of(small_all)}, at t >= {LARGE_T} {Estimate.of(large_all)}; "
                   f"difference {d}: class information "
                   + ("**does** grow with t (more than 2 SE)." if holds else
                      "does **not** grow with t by more than 2 SE."))
    return out


# --- figures ---------------------------------------------------------------------------------

def dataset_panels(datasets: list[str]):
    """One figure with a panel per dataset: (fig, [(ax, dataset), ...])."""
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.5), squeeze=False)
    return fig, list(zip(axes[0], datasets))


def save_panels(fig, panels, path: Path, xlabel: str, ylabel: str) -> None:
    """Title, labels and grid on every panel, the legend on the first, then the PNG."""
    for ax, ds in panels:
        ax.set_title(ds)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    panels[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(groups, budget: WeightingBudget, datasets: list[str], path: Path) -> None:
    """The headline SVC against training steps, static encoders, one panel per dataset."""
    svc = headline_svc(budget)
    fig, panels = dataset_panels(datasets)
    for ax, ds in panels:
        for variant in VARIANTS:
            rs = groups.get((ds, variant, "static"))
            if not rs:
                continue
            steps = sorted({p["step"] for r in rs for p in r.curve})
            est = [Estimate.of(p.get(svc) for r in rs for p in r.curve if p["step"] == s)
                   for s in steps]
            mean = np.array([e.mean for e in est])
            se = np.nan_to_num(np.array([e.se for e in est]))
            ax.plot(steps, mean, marker="o", label=variant)
            ax.fill_between(steps, mean - se, mean + se, alpha=0.2)
    save_panels(fig, panels, path, "training step", f"{probe_columns(budget)[svc]} (test)")


def relative_gain(row: dict, key: str) -> float | None:
    """A gain as a share of the error with shuffled codes: how much of the denoising error at
    t the code (or its class) removes. The raw gains span orders of magnitude over t."""
    gain, base = row.get(key), row.get("error_shuffled")
    return None if gain is None or not base else gain / base


def plot_code_usage_by_variant(groups, datasets: list[str], path: Path) -> None:
    """Final code_gain (solid) and class_gain (dashed) as shares of the shuffled-code error,
    against t, static encoders, mean over seeds."""
    fig, panels = dataset_panels(datasets)
    for ax, ds in panels:
        for i, variant in enumerate(v for v in VARIANTS if v != "ae"):
            rs = [r for r in groups.get((ds, variant, "static"), []) if r.code_usage]
            if not rs:
                continue
            ts = [row["t"] for row in rs[0].code_usage["rows"]]
            for key, style in (("code_gain", "-"), ("class_gain", "--")):
                mean = [Estimate.of(relative_gain(r.code_usage["rows"][j], key) for r in rs).mean
                        for j in range(len(ts))]
                ax.plot(ts, mean, style, color=f"C{i}", label=f"{variant} {key}")
    save_panels(fig, panels, path, "t", "share of the shuffled-code error removed")


def plot_t_profile(groups, dataset: str, path: Path) -> bool:
    """Linear accuracy against t for the time-conditioned rows, control dashed."""
    rows = {k: v for k, v in groups.items() if k[0] == dataset and k[2] == "time_conditioned"}
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, ((_, variant, _), rs) in enumerate(rows.items()):
        for key, style, label in (("rows", "-", variant), ("control_rows", "--", None)):
            ts = [row["t"] for row in rs[0].probes.get(key, [])]
            if not ts:
                continue
            mean = [Estimate.of(r.probes[key][j].get("linear") for r in rs).mean
                    for j in range(len(ts))]
            ax.plot(ts, mean, style, marker="o" if style == "-" else None, color=f"C{i}",
                    label=label)
    ax.set_xlabel("t")
    ax.set_ylabel("linear probe accuracy (test)")
    ax.set_title(f"{dataset}: time-conditioned codes (dashed: untrained control)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# --- the report ------------------------------------------------------------------------------

def render_report(budget: WeightingBudget, results: list[CellResult], out_dir: Path,
                  command: str, minutes: float, not_run: list[str] | None = None) -> str:
    groups = group(results)
    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    # Only the datasets with results (a report of an unfinished grid may lack some).
    ran = {r.cell.dataset for r in results}
    datasets = [d for d in budget.datasets if d.name in ran]
    names = [d.name for d in datasets]
    plot_curves(groups, budget, names, image_dir / "accuracy_vs_steps.png")
    plot_code_usage_by_variant(groups, names, image_dir / "code_usage.png")

    parts = [
        f"# Making the code learn class structure: loss weighting ({budget.name} budget)", "",
        f"**Budget `{budget.name}`** ({budget.description}). "
        + ("A scaled-down CPU run: small networks, subsets, short training; it measures what "
           "users can afford, not the paper's scale (`--budget paper`, a GPU; not run)."
           if budget.name != "paper" else "The GPU-scale grid."), "",
        "Variants, all with the same encoder and score network and, except `edm_2x`, at equal "
        "encoder steps:", "",
        *[f"- `{v}`: {VARIANT_LABELS[v]}" for v in VARIANTS], "",
        "Every number is the test accuracy at the t chosen on a validation split held out from "
        "the training split (never on the test split), mean ± standard error over "
        f"{len(budget.seeds)} seeds (seeds {', '.join(map(str, budget.seeds))}: training, label "
        "subsets, sampling). `std` columns fit the few-shot SVC on standardized codes (scaler "
        "fit on the labelled subset); the others are the paper's protocol on raw codes. The "
        "untrained control is the same encoder at its initialisation (same seed), probed "
        "the same way.", "",
        "Regenerate:", "", "```bash", command, "```", "",
        f"Total time: {minutes:.0f} minutes.", "",
    ]
    if budget.cut:
        parts += ["Cut from this budget, and why:", "", *[f"- {c}" for c in budget.cut], ""]
    if not_run:
        parts += [f"**Incomplete: {len(not_run)} of {len(budget.cells())} cells of this budget's "
                  "grid have not run**, so their rows are missing below (rerun the command: "
                  "cells that ran are read back from their cell.json): "
                  + ", ".join(f"`{name}`" for name in not_run) + ".", ""]

    parts += ["## Targets", ""]
    target = ae_target(groups, budget)
    parts += target or ["- The AE target needs MNIST's static edm and AE rows; they are not in "
                        "this report, so it is not measured here."]
    all_failing = []
    for ds in datasets:
        _, failing = gap_table(groups, budget, ds.name)
        all_failing += [f"{ds.name}: {f}" for f in failing if not f.startswith("ae")]
    parts += [f"- Untrained-control gap ({probe_columns(budget)[headline_svc(budget)]} and linear, "
              "paired by seed): "
              + ("every DRL variant beats its control by more than 3 SE." if not all_failing else
                 "these do **not** beat their control by more than 3 SE: "
                 + "; ".join(all_failing) + "."), ""]

    for ds in datasets:
        name = ds.name
        parts += [f"## {name}" + (f" ({ds.train_limit} / {ds.test_limit} images)"
                                  if ds.train_limit else ""), "",
                  "Trained encoders:", "", *results_table(groups, budget, name, control=False), "",
                  "Untrained control (same architecture and seeds):", "",
                  *results_table(groups, budget, name, control=True), "",
                  "Gap over the control:", "", *gap_table(groups, budget, name)[0], "",
                  "Samples (reconstructions of test images from their codes; agreement is the "
                  "share that the dataset's LeNet labels as the source's class):", "",
                  *sample_table(groups, name), ""]
        profile = t_profile(groups, name)
        if profile:
            png = image_dir / f"t_profile_{name}.png"
            plot_t_profile(groups, name, png)
            parts += ["Time-conditioned encoders: does the paper's t-profile appear (detail at "
                      "small t, class at large t)?", "", *profile, "",
                      f"![t-profile]({IMAGE_DIR}/{png.name})", ""]

    parts += [
        "## Accuracy against training steps", "",
        f"SVC-{max(budget.label_budgets)} on standardized codes at each checkpoint (t = {CURVE_T} "
        "for time-conditioned encoders), static encoders, mean ± SE over seeds:", "",
        f"![accuracy against steps]({IMAGE_DIR}/accuracy_vs_steps.png)", "",
        *(["`edm_2x` trains exactly as `edm` for the first "
           f"{budget.iterations} steps (same spec but the step count, same seeds), so its curve "
           "covers `edm`'s up to there.", ""]
          if any(r.cell.variant == "edm_2x" for r in results) else []),
        "## Where along t the code is used", "",
        "The code-usage diagnostic at the end of training (drl_engine/code_usage.py): "
        "code_gain = error(shuffled codes) - error(true codes), class_gain = error(shuffled) - "
        "error(shuffled within class), with error the per-pixel MSE of the denoised x_0 on "
        "held-out test images; plotted as shares of error(shuffled), i.e. the part of the "
        "denoising error at t that the code (solid) or its class (dashed) removes, mean over "
        "seeds:", "",
        f"![code usage]({IMAGE_DIR}/code_usage.png)", "",
        "## Budget", "", "| setting | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in budget.as_rows()], ""]
    return "\n".join(parts)

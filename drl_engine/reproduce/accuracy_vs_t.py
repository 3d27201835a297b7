"""a. Accuracy against t for DRL and the baselines (paper appendix E, figure 4).

Every model has an 8-d code, the budget's encoder architecture, data and number of training
steps. Each is encoded on the budget's t grid (t sets the noise level for DAE, CDAE and
SimCLR-Gauss and is ignored by AE and VAE) and probed there: SVC() on 100 and 1000 labels (raw
and standardized codes) and the logistic-regression probe (probes.py), on the test split with
seeded label subsets. Each model's best t is chosen on a validation split held out from the
training labels, and each is probed beside its untrained control (the same architecture and
seed before training), so a gain over an untrained encoder is what the table shows.
"""

from __future__ import annotations

import time

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..encode import encode_at
from ..probes import ProbeTable, probe_sweep
from ..registry import untrained_model
from ..spec import RANDOM_INIT
from .context import Number, SectionResult, StudyContext

# (label in the report, model.kind, model.encoder)
MODELS = (("DRL (t-cond.)", "drl", "time_conditioned"),
          ("VDRL (t-cond.)", "vdrl", "time_conditioned"),
          ("AE", "ae", "static"), ("VAE", "vae", "static"), ("DAE", "dae", "static"),
          ("CDAE", "cdae", "time_conditioned"), ("SimCLR-Gauss", "simclr_gauss", "static"))


def probe_model(ctx: StudyContext, spec) -> ProbeTable:
    """Train (once), encode both splits on the t grid with the trained model and with its
    untrained control, probe both at every t."""
    ds, bs = ctx.dataset, spec.evaluate.batch_size

    def pairs(model) -> dict:
        train_codes = encode_at(model, ds.x_train, spec.evaluate.t_grid, bs, ctx.device)
        test_codes = encode_at(model, ds.x_test, spec.evaluate.t_grid, bs, ctx.device)
        return {t: (train_codes.by_t[t], test_codes.by_t[t]) for t in test_codes.by_t}

    trained = pairs(ctx.trained(spec))
    control = pairs(untrained_model(spec, ds).to(ctx.device))
    return probe_sweep(trained, ds.y_train.cpu().numpy(), ds.y_test.cpu().numpy(), spec.evaluate,
                       control=control)


def accuracy_columns(table: ProbeTable) -> list[str]:
    return [c for c in table.columns if c != "silhouette"]


def column_title(column: str) -> str:
    """svc_100 -> 'SVC, 100 labels'; svc_100_std -> 'SVC, 100 labels, standardized'."""
    if not column.startswith("svc_"):
        return column
    budget, _, variant = column.removeprefix("svc_").partition("_")
    return f"SVC, {budget} labels" + (", standardized" if variant == "std" else "")


def plot_accuracy_vs_t(tables: dict[str, ProbeTable], path) -> None:
    """One panel per accuracy column, one line per model, its untrained control dashed."""
    columns = accuracy_columns(next(iter(tables.values())))
    fig = Figure(figsize=(4.5 * len(columns), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    for i, column in enumerate(columns):
        ax = fig.add_subplot(1, len(columns), i + 1)
        for label, table in tables.items():
            (line,) = ax.plot([r["t"] for r in table.rows], [r[column] for r in table.rows],
                              marker="o", markersize=3, label=label)
            ax.plot([r["t"] for r in table.control_rows], [r[column] for r in table.control_rows],
                    linestyle="--", linewidth=1, color=line.get_color())
        ax.set_title(column_title(column))
        ax.set_xlabel("diffusion time t")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    fig.axes[0].plot([], [], linestyle="--", color="grey", label="dashed: untrained control")
    fig.axes[0].legend(fontsize=7)
    fig.savefig(path, format="png", dpi=100)


def run(ctx: StudyContext) -> SectionResult:
    start = time.perf_counter()
    tables: dict[str, ProbeTable] = {}
    for label, kind, encoder in MODELS:
        spec = ctx.spec(f"a-{kind}", kind=kind, encoder=encoder, latent_dim=8)
        tables[label] = probe_model(ctx, spec)
        ctx.log(f"  a: probed {label}")
    path, link = ctx.figure_path("a_accuracy_vs_t.png")
    plot_accuracy_vs_t(tables, path)

    columns = accuracy_columns(next(iter(tables.values())))
    svc_column = f"svc_{max(ctx.budget.label_budgets)}"
    numbers: list[Number] = []
    lines = [ctx.provenance(), "",
             f"Models: {', '.join(tables)}; 8-d codes, {ctx.budget.iterations} training steps "
             "each, VE SDE, uniform t for DRL/VDRL. VDRL uses a time-conditioned encoder like "
             "DRL; AE and VAE codes do not depend on t (flat lines). Probes: `SVC()` on "
             f"{' and '.join(map(str, ctx.budget.label_budgets))} seeded stratified training "
             "labels (svc_<n> on raw codes as in the paper, svc_<n>_std on codes standardized "
             "by a scaler fitted on those labels), logistic regression on "
             f"{'all' if ctx.budget.probe_train_limit is None else ctx.budget.probe_train_limit}"
             " training labels; accuracy on the test split. The best t is chosen on a "
             "validation split held out from the training labels, never on the test split.", "",
             "Best t per model (test accuracy at the t chosen on validation):", "",
             "| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    best_svc: dict[str, dict] = {}
    for label, table in tables.items():
        best = table.best()
        lines.append(f"| {label} | " + " | ".join(
            f"{best[c]['value']:.4f} (t={best[c]['t']:g})" for c in columns) + " |")
        best_svc[label] = best.get(svc_column)
        for row in table.rows:
            numbers += [Number(f"a/{label}/{c}/t={row['t']:g}", "accuracy", row[c]) for c in columns]
    lines += ["", "Each model's untrained control (the same architecture and seed, before any "
              "training step), probed the same way:", "",
              "| control of | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    control_svc: dict[str, dict] = {}
    for label, table in tables.items():
        best = table.best(RANDOM_INIT)
        control_svc[label] = best.get(svc_column)
        lines.append(f"| {label} | " + " | ".join(
            f"{best[c]['value']:.4f} (t={best[c]['t']:g})" for c in columns) + " |")
        numbers += [Number(f"a/{label}/random_init/{c}", "accuracy", best[c]["value"])
                    for c in columns]
    for column in columns:
        lines += ["", f"Accuracy against t, `{column}`:", "",
                  "| t | " + " | ".join(tables) + " |", "|---" * (len(tables) + 1) + "|"]
        for i, t in enumerate(ctx.budget.t_grid):
            lines.append(f"| {t:g} | " + " | ".join(f"{tables[m].rows[i][column]:.4f}"
                                                    for m in tables) + " |")
    lines += ["", f"![accuracy against t]({link})"]
    return SectionResult("a", "Accuracy against t: DRL vs the baselines (appendix E, figure 4)",
                         True, "\n".join(lines), [link], numbers, time.perf_counter() - start,
                         {"best_svc": best_svc, "control_svc": control_svc,
                          "n_test": len(ctx.dataset.x_test), "svc_column": svc_column})

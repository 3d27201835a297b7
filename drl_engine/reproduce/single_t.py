"""b. Silhouette against t for DRL trained at a single t (paper appendix H, figure 12).

One static DRL (8-d code) per value in `single_t_values`, each trained with
`objective.t_sampling: fixed` at that t and nothing else changed. Its code does not depend on
t, so each model gives one silhouette score of its test codes grouped by class (euclidean),
plotted against the t it was trained at; the SVC accuracy on the most labels is given as well.
"""

from __future__ import annotations

import time

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..encode import encode_images
from ..probes import probe_embeddings
from .context import Number, SectionResult, StudyContext


def plot_silhouette(ts: list[float], values: list[float], path) -> None:
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(ts, values, marker="o")
    ax.set_xlabel("training t (fixed)")
    ax.set_ylabel("silhouette of test codes by class")
    ax.grid(alpha=0.3)
    fig.savefig(path, format="png", dpi=100)


def run(ctx: StudyContext) -> SectionResult:
    start = time.perf_counter()
    b, ds = ctx.budget, ctx.dataset
    svc_column = f"svc_{max(b.label_budgets)}"
    rows, numbers, silhouettes = [], [], []
    for t in b.single_t_values:
        spec = ctx.spec(f"b-fixed-{t:g}", t_sampling="fixed", t_fixed=t)
        model = ctx.trained(spec)
        z_train = encode_images(model, ds.x_train, None, spec.evaluate.batch_size, ctx.device)
        z_test = encode_images(model, ds.x_test, None, spec.evaluate.batch_size, ctx.device)
        evaluate = spec.evaluate.model_copy(update={"probes": ["svc", "silhouette"],
                                                    "label_budgets": [max(b.label_budgets)]})
        probes = probe_embeddings(z_train, ds.y_train.cpu().numpy(), z_test,
                                  ds.y_test.cpu().numpy(), evaluate)
        silhouettes.append(probes["silhouette"])
        rows.append(f"| {t:g} | {probes['silhouette']:.4f} | {probes[svc_column]:.4f} |")
        numbers += [Number(f"b/t={t:g}/silhouette", "silhouette", probes["silhouette"]),
                    Number(f"b/t={t:g}/{svc_column}", "accuracy", probes[svc_column])]
        ctx.log(f"  b: t={t:g} done")
    path, link = ctx.figure_path("b_silhouette_vs_t.png")
    plot_silhouette(list(b.single_t_values), silhouettes, path)
    best_t = b.single_t_values[max(range(len(silhouettes)), key=silhouettes.__getitem__)]
    lines = [ctx.provenance(), "",
             f"One static DRL per training t, 8-d code, {b.iterations} steps each.", "",
             f"| training t | silhouette | SVC ({max(b.label_budgets)} labels) |",
             "|---|---|---|", *rows, "", f"![silhouette against training t]({link})", "",
             f"The highest silhouette is at training t = {best_t:g} "
             f"({max(silhouettes):.4f}). Compare the curve's shape with the paper's figure 12; "
             "we state no verdict from it"
             + (" at this budget: every silhouette is near 0, meaning the classes are not "
                "separated as clusters at any training t." if max(silhouettes) < 0.1 else ".")]
    return SectionResult("b", "Silhouette against t for DRL trained at single t (appendix H, "
                         "figure 12)", True, "\n".join(lines), [link], numbers,
                         time.perf_counter() - start, {})

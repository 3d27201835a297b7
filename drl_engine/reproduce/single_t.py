"""b. Silhouette against t for DRL trained at a single t (paper appendix H, figure 12).

One static DRL (8-d code) per value in `single_t_values`, each trained with
`objective.t_sampling: fixed` at that t and nothing else changed. Its code does not depend on
t, so each model gives one silhouette score of its test codes grouped by class (euclidean),
plotted against the t it was trained at; the SVC accuracy on the most labels is given as well.

Two reference rows make the numbers readable: the same DRL trained on uniform t (section e's
model, the paper's objective: the same network, steps and batch) and the untrained control
(the same encoder, architecture and seed, before any step; every row starts from it). A
fixed-t model is trained at one noise level for as many steps as the uniform-t model spreads
over all of them, so when a mid t beats uniform t at equal steps the difference is in where
the loss puts its weight, not in the budget: with lambda(t) = sigma(t)^2 the loss measures the
error in eps, and what a code can remove from it at noise sigma is small at both ends (at
sigma far below the data's spread x_t already holds x0; far above it, at most
Var(x0) / sigma^2), so under uniform t only a narrow band of mid sigma gives the encoder a
gradient. `drl weighting-study` (docs/WEIGHTING.md) tests that weighting directly.
"""

from __future__ import annotations

import time

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..encode import encode_images
from ..probes import probe_embeddings
from ..registry import untrained_model
from .context import Number, SectionResult, StudyContext, accuracy_noise
from .t_init import e_spec


def plot_silhouette(ts: list[float], values: list[float], references: dict[str, float], path) -> None:
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(ts, values, marker="o", label="trained at a fixed t")
    for (label, value), style in zip(references.items(), ("--", ":")):
        ax.axhline(value, linestyle=style, color="grey", label=label)
    ax.set_xlabel("training t (fixed)")
    ax.set_ylabel("silhouette of test codes by class")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, format="png", dpi=100)


def probe_static(ctx: StudyContext, model, spec) -> dict:
    """Silhouette and SVC on the most labels of a static encoder's codes."""
    ds, b = ctx.dataset, ctx.budget
    z_train = encode_images(model, ds.x_train, None, spec.evaluate.batch_size, ctx.device)
    z_test = encode_images(model, ds.x_test, None, spec.evaluate.batch_size, ctx.device)
    evaluate = spec.evaluate.model_copy(update={"probes": ["svc", "silhouette"],
                                                "label_budgets": [max(b.label_budgets)]})
    return probe_embeddings(z_train, ds.y_train.cpu().numpy(), z_test, ds.y_test.cpu().numpy(),
                            evaluate)


def weighting_verdict(fixed: dict[float, float], uniform: float, control: float, n_test: int,
                      sigmas: dict[float, float], data_std: float) -> str:
    """What the SVC column says about weighting against budget, from its own numbers."""
    best_t = max(fixed, key=fixed.get)
    best = fixed[best_t]
    noise = accuracy_noise(uniform, n_test)
    trained = {**{f"fixed t = {t:g}": v for t, v in fixed.items()}, "uniform t": uniform}
    above = [name for name, v in trained.items() if v - control > accuracy_noise(control, n_test)]
    control_words = (f"Above the untrained control ({control:.4f}) by more than two standard "
                     f"errors: {', '.join(above) if above else 'none of these models'}.")
    if best - uniform > noise:
        return (f"At equal steps, batch and network, training at the single t = {best_t:g} "
                f"(sigma = {sigmas[best_t]:.3g}, against a data spread of {data_std:.2f}) gives SVC "
                f"{best:.4f} against {uniform:.4f} for uniform t (two standard errors: "
                f"{noise:.4f}). Both models took the same steps, so the difference is not the "
                "budget: it is where the loss puts its weight. With the paper's lambda = sigma^2 "
                "the loss measures the error in eps, and a code can lower that only in a narrow "
                "band of mid sigma (below it x_t already holds x0, above it the gain is at most "
                "Var(x0) / sigma^2); uniform t spends most steps outside that band, a fixed mid t "
                "spends all of them inside it. `drl weighting-study` (docs/WEIGHTING.md) tests "
                "the weighting directly. " + control_words)
    return (f"No fixed t beats uniform t by more than two standard errors ({noise:.4f}): the best "
            f"is t = {best_t:g} with SVC {best:.4f} against {uniform:.4f} for uniform t, so these "
            "numbers do not separate the weighting from the budget. " + control_words)


def run(ctx: StudyContext) -> SectionResult:
    start = time.perf_counter()
    b, ds = ctx.budget, ctx.dataset
    svc_column = f"svc_{max(b.label_budgets)}"
    rows, numbers, silhouettes, svc, sigmas = [], [], [], {}, {}
    for t in b.single_t_values:
        spec = ctx.spec(f"b-fixed-{t:g}", t_sampling="fixed", t_fixed=t)
        model = ctx.trained(spec)
        probes = probe_static(ctx, model, spec)
        sigmas[t] = float(model.sde.marginal_std(torch.tensor(t)))
        silhouettes.append(probes["silhouette"])
        svc[t] = probes[svc_column]
        rows.append(f"| fixed t = {t:g} | {sigmas[t]:.3g} | {probes['silhouette']:.4f} | "
                    f"{probes[svc_column]:.4f} |")
        numbers += [Number(f"b/t={t:g}/silhouette", "silhouette", probes["silhouette"]),
                    Number(f"b/t={t:g}/{svc_column}", "accuracy", probes[svc_column])]
        ctx.log(f"  b: t={t:g} done")
    # The references: e's uniform-t DRL (trained once for both sections) and the untrained
    # control every row starts from.
    uniform_spec = e_spec(ctx)
    uniform_model = ctx.trained(uniform_spec)
    references = {"uniform t (section e's DRL)": probe_static(ctx, uniform_model, uniform_spec),
                  "untrained control": probe_static(
                      ctx, untrained_model(uniform_spec, ds).to(ctx.device).eval(), uniform_spec)}
    for (label, probes), key, noise_level in zip(references.items(), ("uniform", "random_init"),
                                                  ("uniform", "none (untrained)")):
        rows.append(f"| {label} | {noise_level} | {probes['silhouette']:.4f} | "
                    f"{probes[svc_column]:.4f} |")
        numbers += [Number(f"b/{key}/silhouette", "silhouette", probes["silhouette"]),
                    Number(f"b/{key}/{svc_column}", "accuracy", probes[svc_column])]
    uniform, control = (references[k][svc_column] for k in references)
    path, link = ctx.figure_path("b_silhouette_vs_t.png")
    plot_silhouette(list(b.single_t_values), silhouettes,
                    {k: v["silhouette"] for k, v in references.items()}, path)
    x0 = uniform_model.pixels_to_model_range(ds.x_train[:2000].to(ctx.device))
    data_std = float(x0.std())
    best_t = b.single_t_values[max(range(len(silhouettes)), key=silhouettes.__getitem__)]
    lines = [ctx.provenance(), "",
             f"One static DRL per training t, 8-d code, {b.iterations} steps each; beside them "
             "the same DRL trained on uniform t (section e's model, same steps) and the untrained "
             "control (the same encoder before any step).", "",
             f"| model | sigma(t) | silhouette | SVC ({max(b.label_budgets)} labels) |",
             "|---|---|---|---|", *rows, "", f"![silhouette against training t]({link})", "",
             weighting_verdict(svc, uniform, control, len(ds.x_test), sigmas, data_std), "",
             f"The highest silhouette is at training t = {best_t:g} "
             f"({max(silhouettes):.4f}). Compare the curve's shape with the paper's figure 12; "
             "we state no verdict from it"
             + (" at this budget: every silhouette is near 0, meaning the classes are not "
                "separated as clusters at any training t." if max(silhouettes) < 0.1 else "."),
             "", "Each row is one training run (one seed): the two standard errors are the "
             "test-sampling noise of one model, not the spread over training seeds."]
    summary = {"fixed_svc": {f"{t:g}": v for t, v in svc.items()}, "uniform_svc": uniform,
               "control_svc": control, "svc_column": svc_column, "n_test": len(ds.x_test)}
    return SectionResult("b", "Silhouette against t for DRL trained at single t (appendix H, "
                         "figure 12)", True, "\n".join(lines), [link], numbers,
                         time.perf_counter() - start, summary)

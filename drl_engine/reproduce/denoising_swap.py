"""d. The denoising swap (paper figure 6): the same x_t, denoised with the codes of other images.

The DRL of section e (static, 8-d code, uniform t). A test image x_a is noised to
x_t = x_a + sigma(t) eps (the SDE's marginal at t) and the reverse SDE is run from that x_t
down to 0 (predictor-corrector, round(N t) steps of the N over [eps, 1]) with the code
z = E(x_b) of another test image x_b. If the code carries what denoising at t needs, the
result follows x_b rather than x_a, more so the larger t is (less of x_a survives in x_t).

The number, per swap t: over `swap_pairs` seeded pairs (a, b) of test images of different
classes, the fraction of swapped samples that the dataset's FD-LeNet classifier labels as b's
class (the code's source), and as a's class (the x_t's source). A reference column denoises
each x_t with its own code and gives the fraction labelled as a's class. Where that reference
is at chance (within two binomial standard errors of 1 / classes) the sampler loses the image
even with its own code, so the row cannot say whether a code steers the denoising: it is
marked uninformative, in the table and the text, and the closing note reads only
informative rows.

The figure (at the middle swap t): the first row holds the code sources x_b, the first column
the noisy starts x_t (clipped to [0, 1] to show), and cell (a, b) the sample from x_t of a with
the code of b; the diagonal is the plain reconstruction.
"""

from __future__ import annotations

import time

import torch

from ..encode import encode_images
from ..fd_lenet import load_or_train_lenet, predict_labels
from ..generate import decode_codes
from ..plots import save_image_grid
from ..sampling import num_steps
from .context import Number, SectionResult, StudyContext, accuracy_noise
from .t_init import e_spec

# Swapped samples per sampler call: bounds memory at the larger budgets.
SWAP_CHUNK = 500


def swap_pairs(y: torch.Tensor, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `count` seeded index pairs (a, b) into y with y[a] != y[b], no image used twice
    as an x_t source: a random permutation split in halves, pairs of equal class dropped."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=gen)
    half = len(perm) // 2
    a, b = perm[:half], perm[half:2 * half]
    keep = y[a] != y[b]
    return a[keep][:count], b[keep][:count]


def encode_static(model, x_uint8: torch.Tensor, device) -> torch.Tensor:
    """The static code E(x0) of each image, on `device` (the swap's DRL is t-independent)."""
    batch = model.spec.evaluate.batch_size
    return torch.from_numpy(encode_images(model, x_uint8, None, batch, device)).to(device)


@torch.no_grad()
def noised(model, x_uint8: torch.Tensor, t: float, gen: torch.Generator, device) -> torch.Tensor:
    """x_t ~ p_0t(. | x0) in the model's data range: the SDE's marginal at t."""
    x0 = model.pixels_to_model_range(x_uint8.to(device))
    mean, std = model.sde.marginal_prob(x0, torch.full((len(x0),), t, device=device))
    noise = torch.randn(x0.shape, generator=gen, device=device)
    return mean + std.view(-1, *([1] * (x0.dim() - 1))) * noise


def denoise_with_codes(ctx: StudyContext, model, x_t: torch.Tensor, codes: torch.Tensor, t: float,
                       seed: int) -> torch.Tensor:
    """Samples in [0, 1] from the reverse SDE started at x_t (time t), each with its code."""
    out = []
    for i, begin in enumerate(range(0, len(x_t), SWAP_CHUNK)):
        spec = model.spec.sample.model_copy(update={"t_init": t, "seed": seed + i})
        out.append(decode_codes(model, spec, codes[begin:begin + SWAP_CHUNK], ctx.device,
                                x_init=x_t[begin:begin + SWAP_CHUNK]).images)
    return torch.cat(out)


@torch.no_grad()
def swap_figure(ctx: StudyContext, model, t: float, name: str) -> str:
    """The (n + 1) x (n + 1) grid of the docstring for the first n test images; its link."""
    b, ds = ctx.budget, ctx.dataset
    n = min(b.swap_grid, len(ds.x_test))
    sources = ds.x_test[:n]
    gen = torch.Generator(device=ctx.device).manual_seed(b.seed)
    x_t = noised(model, sources, t, gen, ctx.device)
    codes = encode_static(model, sources, ctx.device)
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    samples = denoise_with_codes(ctx, model, x_t[rows.reshape(-1)], codes[cols.reshape(-1)], t,
                                 b.seed)
    shown_start = model.model_range_to_unit(x_t).clamp(0, 1).cpu()
    header = torch.cat([torch.zeros(1, *sources.shape[1:]), sources.float().cpu() / 255.0])
    cells = [header]
    for i in range(n):
        cells += [shown_start[i:i + 1], samples[i * n:(i + 1) * n]]
    path, link = ctx.figure_path(name)
    save_image_grid(torch.cat(cells), path, nrow=n + 1)
    return link


def own_code_at_chance(own_kept: float, classes: int, pairs: int) -> bool:
    """The own-code reference is within two binomial SEs of chance (1 / classes): the row is
    uninformative."""
    chance = 1.0 / classes
    return abs(own_kept - chance) <= accuracy_noise(chance, pairs)


def swap_winner(follows_code: float, follows_start: float, pairs: int) -> str:
    """Which label the swapped samples take more often, if beyond noise. The two shares come
    from the same samples (one multinomial draw each), so the difference's standard error is
    sqrt((p1 + p2 - (p1 - p2)^2) / n); within two of them neither wins."""
    diff = follows_code - follows_start
    noise = 2.0 * (max(follows_code + follows_start - diff ** 2, 0.0) / max(pairs, 1)) ** 0.5
    if abs(diff) <= noise:
        return f"neither image wins beyond two standard errors ({noise:.4f})"
    return f"{'the code' if diff > 0 else 'the x_t'}'s image wins by more than two standard errors"


def run(ctx: StudyContext) -> SectionResult:
    start = time.perf_counter()
    b, ds = ctx.budget, ctx.dataset
    spec = e_spec(ctx)
    model = ctx.trained(spec)   # trains (with gradients) unless section e already did
    lenet = load_or_train_lenet(ds, ctx.cache_dir, device=ctx.device)
    y_test = ds.y_test.cpu()
    a_idx, b_idx = swap_pairs(y_test, b.swap_pairs, b.seed)
    x_a, x_b = ds.x_test[a_idx.to(ds.x_test.device)], ds.x_test[b_idx.to(ds.x_test.device)]
    code_a, code_b = (encode_static(model, x, ctx.device) for x in (x_a, x_b))
    rows, numbers, summary = [], [], {}
    for k, t in enumerate(b.swap_t_values):
        gen = torch.Generator(device=ctx.device).manual_seed(b.seed + 1000 * k)
        x_t = noised(model, x_a, t, gen, ctx.device)
        swapped = predict_labels(lenet.model, denoise_with_codes(ctx, model, x_t, code_b, t, b.seed),
                                 device=ctx.device)
        own = predict_labels(lenet.model, denoise_with_codes(ctx, model, x_t, code_a, t, b.seed),
                             device=ctx.device)
        follows_code = float((swapped == y_test[b_idx]).float().mean())
        follows_start = float((swapped == y_test[a_idx]).float().mean())
        own_kept = float((own == y_test[a_idx]).float().mean())
        steps = num_steps(model.spec.sample.model_copy(update={"t_init": t}))
        informative = not own_code_at_chance(own_kept, ds.num_classes, len(a_idx))
        rows.append(f"| {t:g} | {steps} | {follows_code:.4f} | {follows_start:.4f} | {own_kept:.4f} | "
                    + ("yes |" if informative else "**no**: own code at chance |"))
        numbers += [Number(f"d/t={t:g}/code_source", "accuracy", follows_code),
                    Number(f"d/t={t:g}/xt_source", "accuracy", follows_start),
                    Number(f"d/t={t:g}/own_code", "accuracy", own_kept)]
        summary[f"{t:g}"] = {"code_source": follows_code, "xt_source": follows_start,
                             "own_code": own_kept, "informative": informative,
                             "winner": swap_winner(follows_code, follows_start, len(a_idx))}
        ctx.log(f"  d: t {t:g} done")
    t_fig = b.swap_t_values[len(b.swap_t_values) // 2]
    link = swap_figure(ctx, model, t_fig, "d_swap.png")
    sigmas = ", ".join(f"sigma({t:g}) = {float(model.sde.marginal_std(torch.tensor(t))):.3g}"
                       for t in b.swap_t_values)
    accuracy = "" if lenet.test_accuracy is None else f" (test accuracy {lenet.test_accuracy:.4f})"
    lines = [
        ctx.provenance(), "",
        f"Static DRL of section e (8-d code, {b.iterations} steps). {len(a_idx)} pairs of test "
        "images of different classes; each x_t is the first image noised to t, denoised with "
        f"the predictor-corrector sampler (N = {b.sample_steps} over [eps, 1]) and the code "
        f"of the second image; {sigmas}. Labels come from the FD-LeNet classifier{accuracy}.",
        "",
        "| swap t | sampler steps | label = code's source | label = x_t's source | "
        "own code: label = source | informative? |", "|---|---|---|---|---|---|", *rows, "",
        *informative_lines(summary, ds.num_classes, len(a_idx)), "",
        f"![denoising swap at t = {t_fig:g}]({link})", "",
        f"Figure at t = {t_fig:g}: the top row holds the code sources, the first column the "
        "noisy starts x_t (clipped to [0, 1]); cell (row a, column b) is x_t of a denoised with "
        "the code of b, the diagonal the plain reconstruction.", "",
        "The paper's figure 6 shows samples following the code's image once t is large enough "
        f"that little of the start survives. Chance for either label column is 1/{ds.num_classes}; "
        "the two label columns need not add to 1 (a sample may be neither class)."]
    return SectionResult("d", "Denoising swap (figure 6)", True, "\n".join(lines), [link],
                         numbers, time.perf_counter() - start, summary)


def informative_lines(summary: dict, classes: int, pairs: int) -> list[str]:
    """Which swap times can speak to the paper's claim, and what those say."""
    chance = 1.0 / classes
    noise = accuracy_noise(chance, pairs)
    dead = [t for t, row in summary.items() if not row["informative"]]
    alive = [t for t, row in summary.items() if row["informative"]]
    lines = []
    if dead:
        lines += [
            f"**Uninformative at t = {', '.join(dead)}**: there the own-code column is at chance "
            f"(within two binomial standard errors, {noise:.4f}, of 1/{classes} over {pairs} "
            "pairs): denoised with its own code, the sample keeps its class no more often than "
            "a guess, so a swapped code failing to steer it says nothing about the code. These "
            "rows are not evidence for or against the paper's claim.", ""]
    if alive:
        top = alive[-1]
        row = summary[top]
        lines.append(
            f"Informative rows: t = {', '.join(alive)}. At the largest of them, t = {top}, "
            f"{row['winner']} ({row['code_source']:.4f} follow the code, {row['xt_source']:.4f} "
            "the x_t).")
    else:
        lines.append("No swap time is informative at this budget.")
    return lines

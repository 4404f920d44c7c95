"""Gradient attacks on an ensemble of classifiers, in [0,1] pixel space.

One loop covers the family: projected gradient descent under an L∞ or L2
budget (optionally from a random start), with three composable transfer
boosters — momentum on the L1-normalised gradient (MI-FGSM), random
resize-and-pad of the input before each forward pass (DI) and a Gaussian
smoothing of the gradient before the momentum update (TI). The ensemble loss
is the weighted mean of per-model cross-entropies, the cross-entropy of the
weighted mean logits, or RAID's `random` strategy: each step one surrogate,
drawn with odds proportional to its weight.

DI comes in two variants. `enlarge` (the default) is the DI-FGSM paper's:
resize (nearest neighbour) to a random rnd ∈ [W, W/scale), pad with mid-grey
to W/scale at a random offset, with probability p, one draw per surrogate per
step (299 → [299, 330) is scale 299/330). `shrink` is torchattacks': bilinear
resize to rnd ∈ [int(scale·W), W), black padding back to W, one draw shared by
all surrogates (torchattacks draws once per batch; here once per sample).

Randomness (random start, DI, the random ensemble) comes from one
`torch.Generator` per sample, drawn on the CPU, so a sample's perturbation
does not depend on its batch neighbours or on the device (RAID draws one
model per step for the whole batch; here each sample draws its own). Draw
order per step: the random-ensemble pick, then DI's four numbers per
surrogate (enlarge) or once (shrink). Budgets are in [0,1] pixel units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

GREY = 0.5


class BudgetError(Exception):
    """A quantised perturbation outside its budget; never expected, always checked."""


@dataclass(frozen=True)
class AttackConfig:
    norm: Literal["linf", "l2"]
    epsilon: float                 # budget, [0,1] pixel units
    steps: int
    step_size: float               # [0,1] pixel units (L2: length of each step)
    random_start: bool = False
    momentum: float = 0.0          # MI-FGSM decay; 0 disables
    diversity_prob: float = 0.0    # DI probability per step; 0 disables
    diversity_mode: Literal["enlarge", "shrink"] = "enlarge"
    diversity_scale: float = 0.9   # DI size ratio (see the module docstring)
    ti_kernel: int | str = 0       # TI Gaussian kernel width in pixels, or "auto"; 0 disables
    ti_nsig: float = 3.0           # kernel spans ±nsig standard deviations
    ensemble: Literal["loss", "logits", "random"] = "loss"
    weights: tuple[float, ...] | None = None   # one per surrogate; None = equal
    targeted: bool = False


def ti_kernel_width(setting: int | str, width: int) -> int:
    """The TI kernel for an image `width` px wide: "auto" scales the paper's 15 px at 299 px, odd, >= 3."""
    if setting != "auto":
        return int(setting)
    return max(3, 2 * math.floor(7 * width / 299) + 1)


def craft(images: Any, labels: Any, models: list[Any], config: AttackConfig,
          generators: list[Any]) -> Any:
    """Adversarial versions of `images` (N×C×H×W in [0,1]) within `config`'s budget.

    `labels` are the true classes (untargeted: move away) or the target classes
    (targeted: move towards), as indices into every model's (aligned) logits.
    """
    import torch

    delta = _random_start(images, config, generators) if config.random_start else torch.zeros_like(images)
    velocity = torch.zeros_like(images)
    width = ti_kernel_width(config.ti_kernel, images.shape[-1]) if config.ti_kernel else 0
    kernel = _gaussian_kernel(width, config.ti_nsig, images) if width else None
    weights = list(config.weights or [1.0] * len(models))
    for _ in range(config.steps):
        delta.requires_grad_(True)
        picks = _random_picks(weights, generators) if config.ensemble == "random" else None
        inputs = _model_inputs(images + delta, len(models), config, generators)
        loss = ensemble_loss(models, inputs, labels, config.ensemble, weights, picks)
        if config.targeted:
            loss = -loss
        (grad,) = torch.autograd.grad(loss, delta)
        if kernel is not None:
            grad = torch.nn.functional.conv2d(grad, kernel, padding=kernel.shape[-1] // 2,
                                              groups=grad.shape[1])
        if config.momentum:
            velocity = config.momentum * velocity + grad / _l1_means(grad)
            grad = velocity
        delta = delta.detach() + config.step_size * _ascent_direction(grad, config.norm)
        delta = project(delta, config.norm, config.epsilon)
        delta = (images + delta).clamp(0.0, 1.0) - images
    return (images + delta).detach()


def _model_inputs(x: Any, n_models: int, config: AttackConfig, generators: list[Any]) -> list[Any]:
    """Each surrogate's input this step: DI draws per surrogate (enlarge) or once for all (shrink)."""
    if not config.diversity_prob:
        return [x] * n_models
    if config.diversity_mode == "shrink":
        return [diverse_shrink(x, config.diversity_prob, config.diversity_scale, generators)] * n_models
    return [diverse_enlarge(x, config.diversity_prob, config.diversity_scale, generators)
            for _ in range(n_models)]


def _random_picks(weights: list[float], generators: list[Any]) -> list[int]:
    """Per sample, the surrogate this step: one uniform draw against the cumulative weights."""
    import torch

    total, picks = sum(weights), []
    bounds = np.cumsum(weights) / total
    for g in generators:
        u = torch.rand((), generator=g).item()
        picks.append(min(int(np.searchsorted(bounds, u, side="right")), len(weights) - 1))
    return picks


def ensemble_loss(models: list[Any], inputs: list[Any], labels: Any, mode: str,
                  weights: list[float] | None = None, picks: list[int] | None = None) -> Any:
    """Summed over the batch, so a sample's gradient does not depend on the batch size."""
    import torch
    import torch.nn.functional as F

    weights = weights or [1.0] * len(models)
    total = sum(weights)
    if mode == "random":
        chosen = torch.tensor(picks, device=labels.device)
        loss = 0.0
        for m, (model, x) in enumerate(zip(models, inputs)):
            mask = (chosen == m).to(labels.dtype)
            if mask.any():
                loss = loss + (F.cross_entropy(logits_of(model, x), labels, reduction="none") * mask).sum()
        return loss
    if mode == "logits":
        logits = sum(w * logits_of(model, x) for w, model, x in zip(weights, models, inputs)) / total
        return F.cross_entropy(logits, labels, reduction="sum")
    return sum(w * F.cross_entropy(logits_of(model, x), labels, reduction="sum")
               for w, model, x in zip(weights, models, inputs)) / total


def project(delta: Any, norm: str, epsilon: float) -> Any:
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    return delta * (epsilon / _l2_norms(delta)).clamp(max=1.0)


def _ascent_direction(grad: Any, norm: str) -> Any:
    return grad.sign() if norm == "linf" else grad / _l2_norms(grad)


def _l2_norms(tensor: Any) -> Any:
    """Per-sample L2 norms shaped N×1×1×1, floored away from zero."""
    return tensor.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (tensor.dim() - 1)))


def _l1_means(tensor: Any) -> Any:
    return tensor.abs().flatten(1).mean(dim=1).clamp_min(1e-12).view(-1, *([1] * (tensor.dim() - 1)))


def _random_start(images: Any, config: AttackConfig, generators: list[Any]) -> Any:
    import torch

    shape = images.shape[1:]
    if config.norm == "linf":
        draws = [(torch.rand(shape, generator=g) * 2 - 1) * config.epsilon for g in generators]
    else:
        draws = []
        for g in generators:
            direction = torch.randn(shape, generator=g)
            radius = torch.rand((), generator=g) * config.epsilon
            draws.append(direction / direction.norm().clamp_min(1e-12) * radius)
    delta = torch.stack(draws).to(images.device, images.dtype)
    return (images + delta).clamp(0.0, 1.0) - images


def diverse_enlarge(images: Any, prob: float, scale: float, generators: list[Any]) -> list[Any]:
    """DI-FGSM, per sample: with probability `prob`, nearest-resize to rnd ∈ [W, W/scale) and pad
    with mid-grey to W/scale at a random offset; otherwise the image unchanged. Sizes then differ
    within the batch, so this returns a list (see `logits_of`). Every sample draws four numbers
    whether or not it is transformed (apply, size, top, left)."""
    import torch
    import torch.nn.functional as F

    height, width = images.shape[-2:]
    out_h, out_w = max(height + 1, int(height / scale)), max(width + 1, int(width / scale))
    out = []
    for image, g in zip(images, generators):
        apply, size, top, left = torch.rand(4, generator=g).tolist()
        if apply >= prob:
            out.append(image)
            continue
        h = height + int(size * (out_h - height))
        w = width + int(size * (out_w - width))
        resized = F.interpolate(image[None], size=(h, w), mode="nearest")[0]
        pad_top, pad_left = int(top * (out_h - h + 1)), int(left * (out_w - w + 1))
        out.append(F.pad(resized, (pad_left, out_w - w - pad_left, pad_top, out_h - h - pad_top), value=GREY))
    return out


def logits_of(model: Any, x: Any) -> Any:
    """`model(x)` for a batch tensor, or for a list of differently sized images (grouped by size)."""
    import torch

    if not isinstance(x, list):
        return model(x)
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(x):
        groups.setdefault(tuple(image.shape), []).append(i)
    parts, order = [], []
    for members in groups.values():
        parts.append(model(torch.stack([x[i] for i in members])))
        order.extend(members)
    logits = torch.cat(parts)
    return logits[torch.tensor(order, device=logits.device).argsort()]


def diverse_shrink(images: Any, prob: float, scale: float, generators: list[Any]) -> Any:
    """torchattacks-style DI: with probability `prob`, bilinear resize to rnd ∈ [int(scale·W), W)
    and zero-pad back to W at an offset in [0, W − rnd). Four draws per sample, transformed or not."""
    import torch
    import torch.nn.functional as F

    height, width = images.shape[-2:]
    low_h, low_w = min(int(height * scale), height - 1), min(int(width * scale), width - 1)
    out = []
    for image, g in zip(images, generators):
        apply, size, top, left = torch.rand(4, generator=g).tolist()
        if apply >= prob:
            out.append(image)
            continue
        h, w = low_h + int(size * (height - low_h)), low_w + int(size * (width - low_w))
        small = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        pad_top, pad_left = int(top * (height - h)), int(left * (width - w))
        out.append(F.pad(small, (pad_left, width - w - pad_left, pad_top, height - h - pad_top)))
    return torch.stack(out)


def _gaussian_kernel(size: int, nsig: float, like: Any) -> Any:
    """Depthwise size×size Gaussian spanning ±nsig standard deviations, summing to 1 per channel."""
    import torch

    x = torch.linspace(-nsig, nsig, size, dtype=torch.float64)
    one_d = torch.exp(-0.5 * x * x)
    kernel = torch.outer(one_d, one_d)
    kernel = (kernel / kernel.sum()).to(like.device, like.dtype)
    return kernel.expand(like.shape[1], 1, size, size).contiguous()


def quantise_within_budget(clean: np.ndarray, adversarial: np.ndarray, norm: str,
                           epsilon: float) -> tuple[np.ndarray, dict[str, float]]:
    """uint8 image of `adversarial` ([0,1] floats) guaranteed within `epsilon` of uint8 `clean`.

    Every component is rounded to the nearest level (and to the pixel range).
    Under L∞ a level past the budget (ε = 5.5/255 rounds 5.5 up to 6) is
    clamped. Under L2, when rounding lifts the norm past ε, the components that
    rounding enlarged most are pulled back one level each towards the clean
    image, worst first, just until the norm fits: the stored image keeps almost
    all of the budget and never exceeds it. The result is checked, never assumed.
    """
    levels = epsilon * 255.0
    clean_levels = clean.astype(np.float64)
    change = np.clip(adversarial.astype(np.float64) * 255.0, 0.0, 255.0) - clean_levels
    step = np.rint(change)
    if norm == "linf":
        bound = np.floor(levels + 1e-9)
        step = np.clip(step, -bound, bound)
    else:
        step = _pull_back_l2(step, change, levels)
    out = (clean_levels + step).astype(np.uint8)
    achieved = achieved_norms(clean, out)
    limit = achieved["linf"] if norm == "linf" else achieved["l2"]
    if limit > epsilon + 1e-9:
        raise BudgetError(f"quantised {norm} perturbation {limit:.6f} exceeds the budget {epsilon:.6f}")
    return out, achieved


def _pull_back_l2(step: np.ndarray, change: np.ndarray, levels: float) -> np.ndarray:
    """`step` (integer levels) with the fewest one-level pull-backs that bring its L2 norm within `levels`.

    Components are taken in decreasing order of how far rounding carried them
    beyond the float perturbation (|step| − |change|); pulling component i back
    by one level lowers the squared norm by 2|step_i| − 1.
    """
    step = step.copy()
    flat, target = step.reshape(-1), levels * levels
    excess = float(np.sum(flat * flat)) - target
    magnitude = np.abs(change).reshape(-1)
    while excess > 0:
        candidates = np.flatnonzero(flat)
        order = candidates[np.argsort(-(np.abs(flat[candidates]) - magnitude[candidates]), kind="stable")]
        gains = 2.0 * np.abs(flat[order]) - 1.0
        needed = int(np.searchsorted(np.cumsum(gains), excess - 1e-9)) + 1
        chosen = order[:needed]
        flat[chosen] -= np.sign(flat[chosen])
        excess = float(np.sum(flat * flat)) - target
    return step


def achieved_norms(clean: np.ndarray, adversarial: np.ndarray) -> dict[str, float]:
    """L∞ and L2 of the stored perturbation in [0,1] units (L∞ also in uint8 levels)."""
    diff = adversarial.astype(np.int32) - clean.astype(np.int32)
    linf_levels = int(np.abs(diff).max()) if diff.size else 0
    return {"linf": linf_levels / 255.0, "linf_levels": linf_levels,
            "l2": float(np.sqrt(np.sum(diff.astype(np.float64) ** 2))) / 255.0}

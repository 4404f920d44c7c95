"""One batch through the attack: check inputs, craft per same-size chunk, quantise, evaluate.

Samples are grouped by image shape (sources may mix sizes) and cut into
chunks of `batch_size`; a chunk that fails (e.g. out of device memory) turns
its samples into error rows and the rest of the batch goes on. A sample's
class is its source class name when the source names it (so a model's label
order never matters), else its label index. With `attack_classes`, samples of
other classes are stored unchanged but evaluated and scored like the rest
(`attacked: false`), so detection metrics see both classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stages.adversarial.attacks import AttackConfig, BudgetError, craft, quantise_within_budget
from stages.adversarial.models import GENERIC_LABEL
from stages.base import Batch

FULL_SCORES = 16   # class probabilities stored per model and sample up to this many classes
TOP_K = 5          # beyond, the most probable classes with their probabilities


def craft_batch(batch: Batch, variant_params: dict[str, Any], models: dict[str, Any], params: Any,
                device: str) -> None:
    """Replace every ok image of `batch` by its adversarial version, in place."""
    labels = models["labels"]
    try:
        target = None if params.target is None else class_index(params.target, labels, "target")
        positive = None if params.positive_class is None else class_index(params.positive_class, labels,
                                                                            "positive_class")
        attacked = None if params.attack_classes is None else {
            class_index(c, labels, "attack_classes") for c in params.attack_classes}
    except ValueError as exc:
        for i in batch.ok_indices():
            batch.fail(i, f"adversarial: {exc}")
        return
    config = attack_config(variant_params, targeted=target is not None)
    prepared: dict[int, tuple[np.ndarray, int]] = {}
    for i in batch.ok_indices():
        try:
            pixels = clean_pixels(batch.images[i])
            if params.source_crop is not None:
                pixels = centre_crop_pixels(pixels, tuple(params.source_crop))
            prepared[i] = (pixels, sample_class(batch, i, labels))
        except ValueError as exc:
            batch.fail(i, f"adversarial: {exc}")
    for chunk in same_shape_chunks(prepared, params.batch_size):
        try:
            _attack_chunk(batch, chunk, prepared, models, config, target, device, attacked)
        except RuntimeError as exc:  # torch reports out-of-memory and kernel failures this way
            for i in chunk:
                batch.fail(i, f"adversarial: attack failed on this chunk: {str(exc)[:300]}")
    for i in batch.ok_indices():
        batch.shift[i]["positive_index"] = positive


def attack_config(variant_params: dict[str, Any], targeted: bool) -> AttackConfig:
    v = variant_params
    return AttackConfig(norm=v["norm"], epsilon=v["epsilon_pixel"], steps=v["steps"],
                        step_size=v["step_size_pixel"], random_start=v["random_start"],
                        momentum=v["momentum"], diversity_prob=v["input_diversity"],
                        diversity_mode=v["diversity_mode"], diversity_scale=v["diversity_scale"],
                        ti_kernel=v["ti_kernel"], ti_nsig=v["ti_nsig"], ensemble=v["ensemble"],
                        weights=tuple(v["weights"][name] for name in v["surrogates"]), targeted=targeted)


def sample_class(batch: Batch, i: int, labels: list[str]) -> int:
    """Sample i's class as an index into `labels`: by the source's class name when it has one."""
    name = (batch.meta[i] or {}).get("class_name")
    if name is not None and str(name) in labels:
        return labels.index(str(name))
    if name is not None and not any(GENERIC_LABEL.match(str(label)) for label in labels):
        raise ValueError(f"class {name!r} is not a class of the models ({', '.join(labels[:10])})")
    return class_index(batch.labels[i], labels, "label")


def class_index(label: Any, labels: list[str], what: str) -> int:
    """A label (index or class name) as an index into `labels`."""
    if isinstance(label, (bool, np.bool_)) or label is None:
        raise ValueError(f"{what} must be a class index or name, got {label!r}")
    if isinstance(label, (int, np.integer)):
        if not 0 <= int(label) < len(labels):
            raise ValueError(f"{what} index {int(label)} outside the label space 0..{len(labels) - 1}")
        return int(label)
    if isinstance(label, str):
        if label not in labels:
            raise ValueError(f"{what} {label!r} is not a class of the models ({', '.join(labels[:10])}"
                             f"{', ...' if len(labels) > 10 else ''})")
        return labels.index(label)
    raise ValueError(f"{what} must be a class index or name, got {type(label).__name__}")


def clean_pixels(image: Any) -> np.ndarray:
    """uint8 H×W×C with C in {1, 3}; float images must already lie in [0,1]."""
    if image is None:
        raise ValueError("no image")
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"expected an H×W×1 or H×W×3 image, got shape {pixels.shape}")
    if pixels.dtype == np.uint8:
        return pixels
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ValueError(f"expected uint8 pixels (or floats in [0,1]), got {pixels.dtype}")
    if not np.isfinite(pixels).all() or pixels.min() < 0.0 or pixels.max() > 1.0:
        raise ValueError(f"float pixels must be finite and in [0,1], got range "
                         f"[{np.nanmin(pixels):.3g}, {np.nanmax(pixels):.3g}]")
    return np.rint(pixels * 255.0).astype(np.uint8)


def centre_crop_pixels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The centre size[0]×size[1] of a uint8 H×W×C image, torchvision's CenterCrop (zero padding
    where the image is smaller), as RAID's loader crops before attacking."""
    import torch

    from stages.adversarial.preprocessing import center_crop

    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
    return center_crop(tensor, size, "round")[0].permute(1, 2, 0).contiguous().numpy()


def same_shape_chunks(prepared: dict[int, tuple[np.ndarray, int]], size: int) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, (pixels, _) in prepared.items():
        groups.setdefault(pixels.shape, []).append(i)
    return [members[start:start + size] for members in groups.values()
            for start in range(0, len(members), size)]


def _attack_chunk(batch: Batch, chunk: list[int], prepared: dict[int, tuple[np.ndarray, int]],
                  models: dict[str, Any], config: AttackConfig, target: int | None, device: str,
                  attacked: set[int] | None) -> None:
    import torch

    clean = np.stack([prepared[i][0] for i in chunk])
    true = torch.tensor([prepared[i][1] for i in chunk], device=device)
    aim = true if target is None else torch.full_like(true, target)
    chosen = [j for j, i in enumerate(chunk)
              if config.epsilon > 0 and (attacked is None or prepared[i][1] in attacked)]
    adversarial = clean.astype(np.float32) / 255.0
    if chosen:
        generators = [torch.Generator().manual_seed(batch.seeds[chunk[j]]) for j in chosen]
        crafted = craft(to_tensor(clean[chosen], device), aim[chosen], models["surrogates"], config, generators)
        adversarial[chosen] = crafted.permute(0, 2, 3, 1).cpu().numpy()

    stored, norms, kept = [], [], []
    for j, i in enumerate(chunk):
        try:
            image, achieved = quantise_within_budget(clean[j], adversarial[j], config.norm, config.epsilon)
        except BudgetError as exc:
            batch.fail(i, f"adversarial: {exc}")
            continue
        stored.append(image)
        norms.append(achieved)
        kept.append(j)
    if not kept:
        return
    evaluation = evaluate(models, to_tensor(clean[kept], device), to_tensor(np.stack(stored), device))
    for slot, j in enumerate(kept):
        i = chunk[j]
        batch.images[i] = stored[slot][:, :, 0] if np.ndim(batch.images[i]) == 2 else stored[slot]
        batch.shift[i] = _record(evaluation, slot, prepared[i][1], target, norms[slot], config.epsilon)
        batch.shift[i]["attacked"] = j in chosen
        batch.shift[i]["generator"] = generator_of(batch.meta[i])
        fooled = [r["success"] for r in batch.shift[i]["on_surrogates"].values()]
        batch.scores[i] = {**batch.scores[i], "surrogate_success": sum(fooled) / len(fooled)}


def generator_of(meta: dict[str, Any] | None) -> str | None:
    """The generator sub-folder of a folder source's class/generator/file path (RAID's layout)."""
    parts = str((meta or {}).get("path", "")).split("/")
    return parts[1] if len(parts) >= 3 else None


def to_tensor(images: np.ndarray, device: str) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device).float().div(255.0)


def evaluate(models: dict[str, Any], clean: Any, adversarial: Any) -> dict[str, dict[str, Any]]:
    """Clean and adversarial predictions and class probabilities of every model, by role and name."""
    import torch

    out: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for role in ("surrogates", "held_out"):
            for model in models[role]:
                clean_p = torch.softmax(model(clean).double(), 1).cpu().numpy()
                adv_p = torch.softmax(model(adversarial).double(), 1).cpu().numpy()
                out[f"{role}/{model.name}"] = {"clean": clean_p.argmax(1).tolist(),
                                               "adversarial": adv_p.argmax(1).tolist(),
                                               **_scores("clean", clean_p), **_scores("adversarial", adv_p)}
    return out


def _scores(stage: str, probs: np.ndarray) -> dict[str, list]:
    """Every class probability (up to FULL_SCORES classes), else the TOP_K most probable as [index, p]."""
    if probs.shape[1] <= FULL_SCORES:
        return {f"{stage}_probs": probs.round(6).tolist()}
    top = np.argsort(-probs, axis=1, kind="stable")[:, :TOP_K]
    return {f"{stage}_top{TOP_K}": [[[int(c), round(float(row[c]), 6)] for c in order]
                                    for row, order in zip(probs, top)]}


def _record(evaluation: dict[str, dict[str, Any]], slot: int, label: int, target: int | None,
            achieved: dict[str, float], epsilon: float) -> dict[str, Any]:
    record: dict[str, Any] = {
        "label_index": label, "target_index": target, "epsilon_pixel": epsilon,
        "achieved_linf": achieved["linf"], "achieved_linf_levels": achieved["linf_levels"],
        "achieved_l2": achieved["l2"], "on_surrogates": {}, "on_held_out": {}}
    for key, preds in evaluation.items():
        role, name = key.split("/", 1)
        clean, adv = preds["clean"][slot], preds["adversarial"][slot]
        success = adv == target if target is not None else adv != label
        scores = {k: v[slot] for k, v in preds.items() if k not in ("clean", "adversarial")}
        record["on_surrogates" if role == "surrogates" else "on_held_out"][name] = {
            "clean": clean, "adversarial": adv, "success": bool(success), **scores}
    return record

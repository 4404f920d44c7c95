"""One figure per metric family of a results file, written next to it as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # no pyplot: importing this module leaves the backend alone


def plot_results(document: dict[str, Any], folder: Path) -> list[Path]:
    name, metrics = document["model"]["name"], document["metrics"]
    drawers = {"imagenet_c": _imagenet_c, "medmnist_c": _medmnist_c, "cns_bench": _cns_bench,
               "coco_o": _coco_o, "metashift": _metashift, "adversarial": _adversarial}
    written = []
    for family, draw in drawers.items():
        if family not in metrics:
            continue
        fig = Figure(figsize=(7, 4), dpi=100)
        ax = fig.subplots()
        if draw(ax, metrics[family]) is False:
            continue
        ax.set_title(f"{name} — {family}")
        fig.tight_layout()
        path = folder / f"{name}-{family}.png"
        fig.savefig(path, metadata={"Software": None})  # no version string: same results, same bytes
        written.append(path)
    return written


def _lines(ax, series: dict[str, dict[str, float | None]], xlabel: str, ylabel: str) -> bool:
    drawn = False
    for label, points in series.items():
        xy = sorted((float(x), y) for x, y in points.items() if y is not None)
        if xy:
            ax.plot(*zip(*xy), marker="o", label=label)
            drawn = True
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if drawn and len(series) <= 20:
        ax.legend(fontsize=6, ncol=2)
    return drawn


def _imagenet_c(ax, m: dict[str, Any]) -> bool:
    return _lines(ax, m["errors"], "severity", "top-1 error")


def _medmnist_c(ax, m: dict[str, Any]) -> bool:
    series = {f"{d}/{c}": e for d, entry in m.items() for c, e in entry["balanced_errors"].items()}
    return _lines(ax, series, "severity", "balanced error")


def _cns_bench(ax, m: dict[str, Any]) -> bool:
    return _lines(ax, {s: v["accuracy_by_scale"] for s, v in m["shifts"].items()}, "slider scale", "accuracy")


def _coco_o(ax, m: dict[str, Any]) -> bool:
    domains = [d for d, ap in m["ap"].items() if ap is not None]
    ax.bar(domains, [m["ap"][d] for d in domains])
    if m.get("clean_ap") is not None:
        ax.axhline(m["clean_ap"], color="k", linestyle="--", label="clean")
        ax.legend()
    ax.set_ylabel("bbox AP")
    return bool(domains)


def _metashift(ax, m: dict[str, Any]) -> bool:
    points = [(v["d"], v["accuracy"], s) for s, v in m["subsets"].items()
              if v["d"] is not None and v["accuracy"] is not None]
    for d, acc, label in points:
        ax.scatter(d, acc)
        ax.annotate(label, (d, acc), fontsize=6)
    ax.set_xlabel("meta-graph distance d")
    ax.set_ylabel("accuracy")
    return bool(points)


def _adversarial(ax, m: dict[str, Any]) -> bool:
    rows = [(v["epsilon"], v) for v in m["configs"].values() if v["epsilon"] is not None]
    rows.sort(key=lambda item: item[0])
    for field in ("accuracy", "attack_success"):
        xy = [(e, v[field]) for e, v in rows if v[field] is not None]
        if xy:
            ax.plot(*zip(*xy), marker="o", label=field)
    ax.set_xlabel("epsilon")
    ax.legend()
    return bool(rows)

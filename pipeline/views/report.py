"""What a filtered release kept and why: an HTML report plus a Markdown summary.

Reads only the release folder: `samples.parquet` (every sample, rejected and
failed ones included), `provenance.json` (thresholds), the shards (kept
examples) and `rejected/<config>/<key>.jpg` thumbnails when the build saved
them. Plots are PNGs beside the report in `<name>_files/`.
"""

from __future__ import annotations

import html
import io
import json
import tarfile
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluate.results import read_results
from pipeline.evaluate.summary import result_rows, results_markdown
from pipeline.writers.thumbnails import save_rejected_thumbnails  # noqa: F401 - re-exported

LEVEL_KEYS = ("severity", "scale", "level", "strength")
SHIFT_KEYS = ("shift_name", "corruption", "shift", "style", "domain", "attack", "name")
STATUSES = ("ok", "rejected", "error")


@dataclass
class ReleaseView:
    root: Path
    samples: pd.DataFrame          # one row per sample; `shift` and `scores` parsed to dicts
    provenance: dict[str, Any]
    thresholds: dict[str, dict[str, float | None]]


def load_release(root: str | Path) -> ReleaseView:
    root = Path(root)
    table = root / "samples.parquet"
    if not table.exists():
        raise FileNotFoundError(f"{root} is not a built release: {table} is missing")
    samples = pd.read_parquet(table)
    samples["shift"] = [json.loads(s or "{}") for s in samples["shift"]]
    samples["scores"] = [json.loads(s or "{}") for s in samples["scores"]]
    samples["shift_name"] = [_first(s, SHIFT_KEYS, c) for s, c in zip(samples["shift"], samples["config"])]
    samples["level"] = [_first(s, LEVEL_KEYS, "-") for s in samples["shift"]]
    prov_path = root / "provenance.json"
    provenance = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    return ReleaseView(root, samples, provenance, release_thresholds(provenance))


def _first(shift: dict, keys: tuple[str, ...], default: Any) -> Any:
    return next((shift[k] for k in keys if shift.get(k) is not None), default)


def release_thresholds(provenance: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Thresholds in force: the filters' own defaults, then the manifest's."""
    filters = (provenance.get("manifest") or {}).get("filters") or {}
    found: dict[str, dict[str, float | None]] = {}
    from pydantic import ValidationError

    from stages.filters import FILTER_CLASSES

    for entry in filters.get("chain", []):
        cls = FILTER_CLASSES.get(entry.get("filter"))
        try:
            defaults = cls(cls.Params.model_validate(entry)).default_thresholds() if cls else {}
        except ValidationError:  # e.g. a model directory that is not on this machine
            continue
        found.update({name: t.model_dump() for name, t in defaults.items()})
    found.update(filters.get("thresholds") or {})
    return found


def status_counts(samples: pd.DataFrame) -> dict[str, int]:
    counts = {s: int((samples["status"] == s).sum()) for s in STATUSES}
    return {"total": len(samples), **counts}


def acceptance(samples: pd.DataFrame) -> pd.DataFrame:
    """Rows: shift; columns: severity/scale; cells: accepted fraction (NaN where empty)."""
    frame = samples.assign(ok=samples["status"] == "ok", level=samples["level"].astype(str))
    table = frame.pivot_table(index="shift_name", columns="level", values="ok", aggfunc="mean")
    return table.reindex(columns=sorted(table.columns, key=_level_order))


def _level_order(level: str) -> tuple[int, float | str]:
    try:
        return (0, float(level))
    except ValueError:
        return (1, level)


def rejection_causes(samples: pd.DataFrame) -> Counter:
    """How often each score (or rule) appears in the reasons of rejected samples."""
    causes: Counter = Counter()
    for reason in samples.loc[samples["status"] == "rejected", "reason"]:
        parts = {p.strip().split(" ")[0] for p in str(reason).split(";") if p.strip()}
        if str(reason).startswith("incomplete trajectory"):
            parts = {"incomplete_trajectory"}
        causes.update(parts)
    return causes


def plot_histograms(view: ReleaseView, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = view.samples[view.samples["status"] != "error"]
    names = sorted({n for s in scored["scores"] for n in s})
    paths = []
    for name in names:
        pairs = list(zip(scored["scores"], scored["status"]))
        values = {st: np.array([s[name] for s, x in pairs if x == st and name in s])
                  for st in ("ok", "rejected")}
        fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
        ax.hist([values["ok"], values["rejected"]], bins=30, stacked=True, color=["#3a923a", "#c8413b"],
                label=[f"kept ({values['ok'].size})", f"rejected ({values['rejected'].size})"])
        limit = view.thresholds.get(name) or {}
        for bound in ("min", "max"):
            if limit.get(bound) is not None:
                ax.axvline(limit[bound], color="black", linestyle="--", label=f"{bound} {limit[bound]:.5g}")
        ax.set(title=name, xlabel="score", ylabel="samples")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / f"hist_{name}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def kept_examples(view: ReleaseView, limit: int) -> list[tuple[str, np.ndarray, str]]:
    """(key, pixels, caption) of kept samples, spread over configs, read from the shards."""
    from PIL import Image

    kept = view.samples[(view.samples["status"] == "ok") & view.samples["shard"].notna()]
    picks = _spread(kept, limit)
    wanted = {(r.shard, r.key): r for r in picks.itertuples()}
    found = {}
    for shard in sorted({s for s, _ in wanted}):
        with tarfile.open(view.root / shard) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                if (shard, key) in wanted and ext in ("png", "jpg", "jpeg"):
                    found[(shard, key)] = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())))
    return [(r.key, found[(r.shard, r.key)], f"{r.shift_name} {r.level}") for r in picks.itertuples()
            if (r.shard, r.key) in found]


def rejected_examples(view: ReleaseView, limit: int) -> list[tuple[str, np.ndarray, str]]:
    """Rejected samples whose thumbnails the build saved under rejected/<config>/."""
    from PIL import Image

    rejected = view.samples[view.samples["status"] == "rejected"]
    available = [any((view.root / "rejected" / c / f"{k}{e}").exists() for e in (".jpg", ".png"))
                 for c, k in zip(rejected["config"], rejected["key"])]
    out = []
    for r in _spread(rejected[np.asarray(available, dtype=bool)], limit).itertuples():
        folder = view.root / "rejected" / r.config
        path = next(folder / f"{r.key}{e}" for e in (".jpg", ".png") if (folder / f"{r.key}{e}").exists())
        out.append((r.key, np.asarray(Image.open(path)), str(r.reason)))
    return out


def _spread(frame: pd.DataFrame, limit: int) -> pd.DataFrame:
    """Up to `limit` rows taking turns over shifts, so every shift shows up."""
    ordered = frame.sort_values("key").assign(turn=lambda f: f.groupby("shift_name").cumcount())
    return ordered.sort_values(["turn", "shift_name"]).head(limit)


def plot_grid(examples: list[tuple[str, np.ndarray, str]], title: str, dest: Path, columns: int = 6) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, len(examples)))
    rows = max(1, -(-len(examples) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.9 * rows), dpi=100, squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (key, image, caption) in zip(axes.flat, examples):
        ax.imshow(image.squeeze(), cmap="gray" if image.ndim == 2 or image.shape[-1] == 1 else None)
        ax.set_title("\n".join([key[:30], *textwrap.wrap(caption, 30)[:3]]), fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.savefig(dest)
    plt.close(fig)
    return dest


@dataclass
class Report:
    html: Path
    markdown: Path
    images: list[Path]
    counts: dict[str, int]


def write_report(release: str | Path, out: str | Path, examples: int = 12) -> Report:
    view = load_release(release)
    out = Path(out)
    assets = out.parent / f"{out.stem}_files"
    assets.mkdir(parents=True, exist_ok=True)
    counts = status_counts(view.samples)
    histograms = plot_histograms(view, assets)
    grids = []
    for kind, pick in (("kept", kept_examples), ("rejected", rejected_examples)):
        picked = pick(view, examples)
        if picked:
            grids.append(plot_grid(picked, f"{kind} examples", assets / f"{kind}.png"))
    sections = {"counts": counts, "recorded": view.provenance.get("counts"),
                "acceptance": acceptance(view.samples), "causes": rejection_causes(view.samples),
                "thresholds": view.thresholds, "adversarial": adversarial_table(view.provenance),
                "histograms": histograms, "grids": grids, "results": read_results(view.root)}
    name = view.provenance.get("release", {}).get("name", view.root.name)
    out.write_text(render_html(name, sections, out.parent))
    markdown = out.with_suffix(".md")
    markdown.write_text(render_markdown(name, sections, out.parent))
    return Report(out, markdown, histograms + grids, counts)


def _acceptance_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["shift"] + [str(c) for c in table.columns]
    rows = [[str(name)] + ["" if np.isnan(v) else f"{v:.0%}" for v in values]
            for name, values in zip(table.index, table.to_numpy(dtype=float))]
    return header, rows


def _count_line(sections: dict) -> str:
    c = sections["counts"]
    adds_up = c["total"] == c["ok"] + c["rejected"] + c["error"]
    recorded = sections["recorded"]
    agrees = recorded is None or all(recorded.get(k) == c[k] for k in ("total", "ok", "rejected", "error"))
    verdict = "adds up" if adds_up and agrees else f"DOES NOT ADD UP (provenance says {recorded})"
    return (f"{c['total']} samples = {c['ok']} kept + {c['rejected']} rejected + {c['error']} errors "
            f"({verdict})")


def render_markdown(name: str, sections: dict, base: Path) -> str:
    header, rows = _acceptance_rows(sections["acceptance"])
    lines = [f"# Filter report: {name}", "", _count_line(sections), "", "## Acceptance by shift and level",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "## Rejections by cause", ""]
    lines += [f"- {cause}: {n}" for cause, n in sections["causes"].most_common()] or ["- none"]
    lines += ["", "## Thresholds", ""]
    lines += [f"- {n}: {_bounds(t)}" for n, t in sorted(sections["thresholds"].items())] or ["- none"]
    adv_header, adv_rows = sections.get("adversarial") or ([], [])
    if adv_rows:
        lines += ["", "## Adversarial transfer", "", "| " + " | ".join(adv_header) + " |",
                  "|" + "---|" * len(adv_header)] + ["| " + " | ".join(r) + " |" for r in adv_rows]
    lines += [""] + [f"![{p.stem}]({p.relative_to(base).as_posix()})" for p in
                     sections["histograms"] + sections["grids"]]
    lines += ["", *results_markdown(sections.get("results") or [])]
    return "\n".join(lines) + "\n"


def _bounds(t: dict) -> str:
    signs = (("min", "≥"), ("max", "≤"))
    parts = [f"{sign} {t[bound]:.5g}" for bound, sign in signs if t.get(bound) is not None]
    return " and ".join(parts)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(name: str, sections: dict, base: Path) -> str:
    causes = [[cause, str(n)] for cause, n in sections["causes"].most_common()]
    thresholds = [[n, _bounds(t)] for n, t in sorted(sections["thresholds"].items())]
    images = "".join(f'<img src="{html.escape(p.relative_to(base).as_posix())}" alt="{html.escape(p.stem)}">'
                     for p in sections["histograms"])
    grids = "".join(f'<img src="{html.escape(p.relative_to(base).as_posix())}" alt="{html.escape(p.stem)}">'
                    for p in sections["grids"]) or "<p>No example images available.</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Filter report: {html.escape(name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} img{{max-width:100%;margin:4px}}</style>
</head><body>
<h1>Filter report: {html.escape(name)}</h1>
<p>{html.escape(_count_line(sections))}</p>
<h2>Acceptance by shift and level</h2>{_html_table(*_acceptance_rows(sections["acceptance"]))}
<h2>Rejections by cause</h2>{_html_table(["cause", "samples"], causes)}
<h2>Thresholds</h2>{_html_table(["score", "passes when"], thresholds)}
{_adversarial_html(sections)}<h2>Score distributions</h2>{images}
<h2>Examples</h2>{grids}
{_results_html(sections.get("results") or [])}
</body></html>
"""


ADVERSARIAL_COLUMNS = ("clean_accuracy", "adversarial_accuracy", "success_rate", "success_rate_off_target")
DETECTION_COLUMNS = ("auc", "ap", "f1")


def adversarial_table(provenance: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per config and model, the adversarial stage's rates and (with a positive class) the
    detection metrics on the stored images over all samples, from provenance extras."""
    configs = ((provenance.get("extras") or {}).get("adversarial") or {}).get("configs") or {}
    header = ["config", "model", *ADVERSARIAL_COLUMNS, *(f"adv {m}" for m in DETECTION_COLUMNS)]
    rows = []
    for config, summary in sorted(configs.items()):
        for role in ("surrogates", "held_out"):
            for name, rates in sorted((summary.get(role) or {}).items()):
                detection = ((rates.get("detection") or {}).get("adversarial") or {}).get("all") or {}
                cells = [rates.get(c) for c in ADVERSARIAL_COLUMNS] + [detection.get(m) for m in DETECTION_COLUMNS]
                rows.append([config, f"{name} ({'surrogate' if role == 'surrogates' else 'held-out'})"]
                            + ["–" if v is None else f"{v:.3f}" for v in cells])
    return header, rows


def _adversarial_html(sections: dict) -> str:
    header, rows = sections.get("adversarial") or ([], [])
    return f"<h2>Adversarial transfer</h2>{_html_table(header, rows)}" if rows else ""


def _results_html(documents: list[dict]) -> str:
    if not documents:
        return ""
    return "<h2>Results</h2>" + _html_table(["model", "benchmark", "figures"], result_rows(documents))

"""The "Results" section `report` and the dataset card show: one line per model and
benchmark with the headline figures of its results/<model>.json."""

from __future__ import annotations

from typing import Any


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def headline(family: str, m: dict[str, Any]) -> str:
    """The figures a paper's table would show for this benchmark."""
    if family == "imagenet_c":
        errors = [e for by_sev in m["errors"].values() for e in by_sev.values() if e is not None]
        mean = sum(errors) / len(errors) if errors else None
        return (f"mean corruption error {_pct(mean)}, clean error {_pct(m.get('clean_error'))}, "
                f"mCE {_pct(m.get('mce'))}, relative mCE {_pct(m.get('relative_mce'))}")
    if family == "medmnist_c":
        return "; ".join(f"{d}: BE {_num(e.get('mean_be'))}, rBE {_num(e.get('mean_rbe'))}, clean balanced "
                         f"error {_pct(e.get('clean_balanced_error'))}" for d, e in m.items())
    if family == "cns_bench":
        return "; ".join(f"{s}: mean failure point {_num(v['mean_failure_point'])}, never failed "
                         f"{v['never_failed']}/{len(v['failure_points'])}" for s, v in m["shifts"].items())
    if family == "coco_o":
        return (f"mean AP {_num(m.get('mean_ap'))} over {len(m['ap'])} domains, clean AP {_num(m.get('clean_ap'))}, "
                f"effective robustness {_num(m.get('effective_robustness'))}")
    if family == "metashift":
        return ", ".join(f"{s} accuracy {_pct(v['accuracy'])}" for s, v in m["splits"].items())
    if family == "adversarial":
        parts = [f"{c}: accuracy {_pct(v['accuracy'])}, success {_pct(v['attack_success'])}"
                 for c, v in m["configs"].items()]
        return f"clean accuracy {_pct(m.get('clean_accuracy'))}; " + "; ".join(parts)
    return ""


def result_rows(documents: list[dict[str, Any]]) -> list[list[str]]:
    """[model, benchmark, figures] per model and benchmark (a row without metrics when unlabelled)."""
    rows = []
    for document in documents:
        name = document["model"]["name"]
        metrics = document.get("metrics") or {}
        for family, values in metrics.items():
            rows.append([name, family, headline(family, values)])
        if not metrics:
            rows.append([name, "–", f"{document.get('samples', 0)} samples predicted; "
                                    + (" ".join(document.get("notes") or []) or "no metric applies")])
    return rows


def results_markdown(documents: list[dict[str, Any]]) -> list[str]:
    if not documents:
        return []
    lines = ["## Results", "", "Evaluated with `shiftforge evaluate`; per-sample predictions and every figure "
             "are in `results/`.", "", "| model | benchmark | figures |", "|---|---|---|"]
    lines += [f"| {m} | {b} | {f} |" for m, b, f in result_rows(documents)]
    return [*lines, ""]

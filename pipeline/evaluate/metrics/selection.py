"""MetaShift (Liang & Zou 2022): accuracy per split and per test subset, beside each
subset's meta-graph distance d to its training mix (from provenance.json)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pipeline.evaluate.metrics.common import accuracy


def subset_distances(provenance: Any) -> dict[str, float]:
    """Every `d` mapping (test subset -> distance) found in provenance, merged."""
    found: dict[str, float] = {}
    stack = [provenance]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            d = node.get("d")
            if isinstance(d, dict) and isinstance(node.get("test"), list):
                found.update({k: v for k, v in d.items() if isinstance(v, (int, float))})
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def metashift(rows: list[dict[str, Any]], provenance: dict[str, Any]) -> dict[str, Any] | None:
    if not rows:
        return None
    splits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    subsets: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        split = (row["meta"] or {}).get("split") or row["config"]
        splits[split].append(row)
        if split == "test":
            for subset in (row["meta"] or {}).get("subsets") or []:
                subsets[subset].append(row)
    distances = subset_distances(provenance)
    return {
        "splits": {s: {"accuracy": accuracy(r), "n": len(r)} for s, r in sorted(splits.items())},
        "subsets": {s: {"accuracy": accuracy(r), "n": len(r), "d": distances.get(s)}
                    for s, r in sorted(subsets.items())},
    }

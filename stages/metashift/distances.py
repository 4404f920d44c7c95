"""The distance d between training and test subsets, under either protocol.

- `official` (default): d on the meta-graph of merged communities, as the
  official domain-generalisation experiment computes it (`communities.py`).
  Subsets that hold another requested class as context (`cat(dog)`) leave the
  graph and images that hold several requested classes leave every subset,
  as the official script removes `cat(dog)` before building its graphs.
- `subsets`: d on the per-subset graph (`metagraph.py`), averaged over the
  training subsets; isolated subsets have no distance (null).

`sweep_mixes` lists training mixes at increasing d from one test subset or
community.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from stages.metashift.communities import (
    CommunityGraph,
    build_community_graph,
    detect_communities,
    name_communities,
)
from stages.metashift.metagraph import EMBED_DIM, MetaGraph
from stages.metashift.official import LAYOUT_DIM
from stages.metashift.scene_graphs import MetaShiftError
from stages.metashift.subsets import SubsetCatalog, subset_name

Protocol = Literal["official", "subsets"]

DEFINITIONS = {
    "official": f"spectral_layout (dim {LAYOUT_DIM}, unnormalised Laplacian, rescaled) of the meta-graph of "
    "merged communities (unweighted greedy modularity, or the listed communities); d(mix, T) = mean "
    "Euclidean distance of the mix's distinct communities to T's community",
    "subsets": f"Laplacian-eigenmap embedding (dim {EMBED_DIM}) of the per-class subset graph; "
    "d(mix, T) = mean Euclidean distance of the mix's subsets to T; null where a subset has no overlap edge",
}


def community_graph(
    catalog: SubsetCatalog,
    cls: str,
    classes: Sequence[str] = (),
    communities: dict[str, list[str]] | None = None,
    ambiguous: np.ndarray | None = None,
) -> CommunityGraph:
    """The merged-community meta-graph of a class for a request over `classes`."""
    drop = np.zeros(0, np.int64) if ambiguous is None else ambiguous
    if communities:
        contexts = {c for members in communities.values() for c in members}
        subsets = {c: np.setdiff1d(catalog.subset(cls, c), drop) for c in sorted(contexts)}
        return build_community_graph(cls, communities, subsets)
    kept = catalog.subsets(cls)
    if not len(drop) and not set(classes) & set(kept):  # the catalog's subset graph is the one to split
        graph = catalog.meta_graph(cls)
        return build_community_graph(cls, name_communities(cls, graph.contexts, graph.communities, kept), kept)
    subsets = {c: np.setdiff1d(images, drop) for c, images in kept.items() if c not in classes}
    return build_community_graph(cls, detect_communities(cls, subsets), subsets)


def distance_report(graph: MetaGraph | CommunityGraph, train: list[str], test: list[str]) -> dict[str, Any]:
    """Names, d of the whole training mix to every test subset, and every pairwise distance."""
    name = lambda c: subset_name(graph.cls, c)  # noqa: E731
    report: dict[str, Any] = {
        "train": [name(c) for c in train],
        "test": [name(c) for c in test],
        "d": {name(t): _finite(graph.mix_distance(train, t)) for t in test},
    }
    if isinstance(graph, CommunityGraph):
        of = lambda c: graph.names[graph.node(c)]  # noqa: E731
        report["communities"] = {
            "train": [name(c) for c in dict.fromkeys(of(c) for c in train)],
            "test": [name(of(t)) for t in test],
        }
        pairs = [(a, t) for t in test for a in dict.fromkeys(of(c) for c in train)]
        report["meta_graph"] = graph.to_json()
        report["pairs"] = [
            {"train": name(a), "test": name(of(t)), "distance": _finite(graph.mix_distance([a], t))} for a, t in pairs
        ]
        return report
    report["pairs"] = [
        {"train": name(a), "test": name(t), "distance": _finite(graph.distance(a, t))} for t in test for a in train
    ]
    return report


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 6)


def sweep_mixes(
    graph: MetaGraph | CommunityGraph,
    test: str,
    mix_size: int = 2,
    count: int = 4,
    max_mixes: int = 2_000_000,
) -> list[dict[str, Any]]:
    """`count` training mixes of `mix_size` nodes (never the test's node, never an isolated
    subset) whose d to the test rises from the smallest to the largest."""
    if mix_size < 1 or count < 1:
        raise MetaShiftError(f"mix_size and count must be >= 1, got {mix_size} and {count}")
    labels, to_test, target = _sweep_nodes(graph, test)
    usable = [i for i in range(len(labels)) if i != target and not np.isnan(to_test[i])]
    if np.isnan(to_test[target]) or len(usable) < mix_size:
        raise MetaShiftError(
            f"{subset_name(graph.cls, test)}: need {mix_size} connected nodes "
            f"besides an embedded test node; {len(usable)} available"
        )
    n_mixes = math.comb(len(usable), mix_size)
    if n_mixes > max_mixes:
        raise MetaShiftError(f"{n_mixes} mixes of {mix_size} out of {len(usable)} nodes; lower mix_size")
    mixes = np.array(list(itertools.combinations(usable, mix_size)), dtype=np.int64)
    d = to_test[mixes].mean(axis=1)
    order = np.argsort(d, kind="stable")
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, min(count, len(order)))).astype(int))
    return [{"train": [labels[i] for i in mixes[order[p]]], "test": test, "d": float(d[order[p]])} for p in picks]


def _sweep_nodes(graph: MetaGraph | CommunityGraph, test: str) -> tuple[list[str], np.ndarray, int]:
    if isinstance(graph, CommunityGraph):
        target = graph.node(test)
        return graph.names, graph.distances()[target], target
    target = graph.position(test)
    return graph.contexts, graph.distances()[target], target

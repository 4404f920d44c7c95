"""The meta-graph of merged communities, on which the official protocol measures d.

The official domain-generalisation experiment (`domain_generalization_cat_dog.py`)
does not measure distances between single subsets. It groups the subsets of a
class into communities (each named after one member, e.g. `dog(cabinet)` =
{floor, clothes, towel, door, rug, cabinet}), takes the union of each
community's images, builds a new graph whose nodes are these communities
(edges: overlap coefficient of the merged image sets, cut at 0.2), embeds it
with `spectral_layout(dim=5)` and reports for a training mix A + B and a test
community T

    d = ½ (‖pos_A − pos_T‖ + ‖pos_B − pos_T‖).

Here the communities are either listed explicitly (as in the official script,
whose lists were copied by hand from the detected communities and then edited)
or detected: unweighted greedy modularity on the class's subset graph, with
nodes in the order of their subset names, each community named after its
largest member subset (ties: the first name). The meta-graph's nodes are in
the order given (explicit) or sorted by community name (detected).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.metashift.metagraph import EDGE_CUT, cut_weights, intersection_counts, overlap_coefficients
from stages.metashift.official import (
    LAYOUT_DIM,
    greedy_modularity_communities,
    pairwise_distances,
    spectral_layout,
)
from stages.metashift.scene_graphs import MetaShiftError


@dataclass
class CommunityGraph:
    cls: str
    names: list[str]  # community names (a member context), node order
    members: list[list[str]]  # contexts of each community
    sizes: np.ndarray  # images of each merged community
    weights: np.ndarray  # overlap coefficients after the cut
    positions: np.ndarray  # n x LAYOUT_DIM, spectral_layout

    def node(self, name: str) -> int:
        """The node of a community name, else of the one community holding that context."""
        if name in self.names:
            return self.names.index(name)
        holders = [i for i, m in enumerate(self.members) if name in m]
        if len(holders) == 1:
            return holders[0]
        where = "no community" if not holders else f"several communities ({self._named(holders)})"
        raise MetaShiftError(f"{self.cls}({name}) is in {where} of the {self.cls} community meta-graph")

    def _named(self, nodes: list[int]) -> str:
        return ", ".join(f"{self.cls}({self.names[i]})" for i in nodes)

    def distances(self) -> np.ndarray:
        return pairwise_distances(self.positions)

    def mix_distance(self, train: list[str], test: str) -> float:
        """Mean distance of the distinct training communities to the test community."""
        target = self.node(test)
        nodes = list(dict.fromkeys(self.node(t) for t in train))
        return float(np.mean([np.linalg.norm(self.positions[i] - self.positions[target]) for i in nodes]))

    def to_json(self) -> dict[str, Any]:
        rows, cols = np.nonzero(np.triu(self.weights))
        return {
            "class": self.cls,
            "edge_cut": EDGE_CUT,
            "layout_dim": LAYOUT_DIM,
            "nodes": [
                {
                    "community": f"{self.cls}({name})",
                    "members": [f"{self.cls}({c})" for c in self.members[i]],
                    "size": int(self.sizes[i]),
                    "position": [float(v) for v in self.positions[i]],
                }
                for i, name in enumerate(self.names)
            ],
            "edges": [
                {"source": self.names[i], "target": self.names[j], "weight": float(self.weights[i, j])}
                for i, j in zip(rows, cols)
            ],
        }


def detect_communities(cls: str, subsets: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Named communities of a class's subsets (see module doc), sorted by name."""
    contexts = sorted(subsets, key=lambda c: f"{cls}({c})")
    weights = cut_weights(overlap_coefficients([subsets[c] for c in contexts]))
    return name_communities(cls, contexts, greedy_modularity_communities(weights), subsets)


def name_communities(
    cls: str, contexts: list[str], communities: list[list[int]], subsets: dict[str, np.ndarray]
) -> dict[str, list[str]]:
    """Communities (node indices into `contexts`) named after their largest member, sorted by name."""
    named = {}
    for community in communities:
        members = [contexts[i] for i in community]
        largest = max(members, key=lambda c: len(subsets[c]))  # max keeps the first of a tie
        named[largest] = members
    return {name: named[name] for name in sorted(named, key=lambda c: f"{cls}({c})")}


def build_community_graph(
    cls: str, communities: dict[str, list[str]], subsets: dict[str, np.ndarray]
) -> CommunityGraph:
    """Merge each community's subsets and embed the graph of merged communities."""
    names = list(communities)
    counts = _merged_counts([[subsets[c] for c in communities[n]] for n in names])
    sizes = np.diag(counts)
    smaller = np.minimum.outer(sizes, sizes)
    weights = cut_weights(np.divide(counts, smaller, out=np.zeros_like(counts), where=smaller > 0))
    return CommunityGraph(
        cls=cls,
        names=names,
        members=[list(communities[n]) for n in names],
        sizes=np.array([int(s) for s in sizes]),
        weights=weights,
        positions=spectral_layout(weights, LAYOUT_DIM),
    )


def _merged_counts(groups: list[list[np.ndarray]]) -> np.ndarray:
    """n x n images shared by the unions of groups of sorted image sets, the union sizes on
    the diagonal (floats, exact). Up to 16 groups, each image gets one bit per group holding
    it and the counts are those of the bit patterns: |U_i ∩ U_j| = Σ over patterns with bits
    i and j of their images."""
    n = len(groups)
    if n > 16:
        return intersection_counts([_union(g) for g in groups])
    merged = [(bit, np.concatenate(g)) for bit, g in enumerate(groups) if g]
    merged = [(bit, images) for bit, images in merged if len(images)]
    if not merged:
        return np.zeros((n, n))
    low = min(int(images.min()) for _, images in merged)
    bits = np.zeros(max(int(images.max()) for _, images in merged) - low + 1, np.uint8 if n <= 8 else np.uint16)
    for bit, images in merged:
        bits[images - low] |= 1 << bit
    tally = np.bincount(bits[bits != 0], minlength=1 << n)  # the images of the unions only
    patterns = np.flatnonzero(tally[1:]) + 1
    holds = ((patterns[:, None] >> np.arange(n)) & 1).astype(float)
    return holds.T @ (holds * tally[patterns][:, None])


def _union(image_sets: list[np.ndarray]) -> np.ndarray:
    """Sorted union of sorted image sets, by marking the span of image positions they cover."""
    images = np.concatenate(image_sets) if image_sets else np.zeros(0, np.int64)
    if len(image_sets) == 1 or not len(images):
        return images
    low, high = int(images.min()), int(images.max())
    marked = np.zeros(high - low + 1, bool)
    marked[images - low] = True
    return np.flatnonzero(marked) + low

"""Per-class meta-graph: subsets as nodes, overlap as edges, spectral distances.

- Edge weight between subsets A and B: the overlap coefficient
  |A ∩ B| / min(|A|, |B|), set to 0 below `EDGE_CUT` (0.2); no self-loops.
- Communities: the official ones — unweighted greedy modularity as in
  `networkx.greedy_modularity_communities(G)` (see `official.py`), with the
  nodes in the order of their subset names `cls(context)`.
- Spectral embedding (dimension k = `EMBED_DIM` = 5), Laplacian eigenmaps:
  with degrees d_i = Σ_j W_ij, the non-isolated nodes (d_i > 0) are embedded
  by the generalised eigenproblem (D − W) v = λ D v. The trivial solution
  v ∝ 1 (λ = 0) is dropped and the next k eigenvectors, D-orthonormal
  (vᵀ D v = 1), in ascending λ, are the coordinates; each is signed so its
  entry of largest magnitude is positive. Equivalently v = D^{-1/2} u for the
  eigenvectors u of the normalised Laplacian I − D^{-1/2} W D^{-1/2}
  orthogonal to √d. Isolated subsets (no edge ≥ 0.2) have no position: their
  coordinates and distances are NaN (null in JSON).
  With n ≤ k + 1 connected nodes every eigenvector is used, and the distance
  has the closed form ‖e_i − e_j‖² = 1/d_i + 1/d_j. When an eigenvalue repeats
  across the k-th position (e.g. several components) the basis is not unique
  and neither are distances; the JSON keeps the eigenvalues so this is visible.
- Distance of a training mix A + B (+ …) to a test subset T: the mean of the
  member distances, d = ½(‖e_A − e_T‖ + ‖e_B − e_T‖) for two.

This per-subset embedding is the `subsets` protocol. The official protocol
measures d on the meta-graph of merged communities instead (`communities.py`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from scipy.linalg import eigh

from stages.metashift.official import greedy_modularity_communities_of

EDGE_CUT = 0.2
EMBED_DIM = 5

# json.dumps writes a float as its repr; overlap coefficients (and context names) repeat a lot
# across classes
_float_text = functools.lru_cache(maxsize=1 << 16)(float.__repr__)
_quoted = functools.lru_cache(maxsize=1 << 16)(json.dumps)


@dataclass
class MetaGraph:
    cls: str
    contexts: list[str]  # node order (sorted by subset name cls(context))
    sizes: np.ndarray  # images per subset
    weights: np.ndarray  # n x n overlap coefficients after the cut, zero diagonal
    communities: list[list[int]]  # node indices, largest community first
    dim: int = EMBED_DIM
    _spectrum: tuple[np.ndarray, np.ndarray] | None = None  # computed on first use

    def _spectral(self) -> tuple[np.ndarray, np.ndarray]:
        if self._spectrum is None:
            self._spectrum = spectral_embedding(self.weights, self.dim)
        return self._spectrum

    @property
    def embedding(self) -> np.ndarray:
        """n x dim eigenmap coordinates, NaN rows for isolated nodes."""
        return self._spectral()[0]

    @property
    def eigenvalues(self) -> np.ndarray:
        return self._spectral()[1]

    def position(self, context: str) -> int:
        try:
            return self.contexts.index(context)
        except ValueError:
            raise KeyError(f"{context!r} is not a node of the {self.cls} meta-graph") from None

    def distances(self) -> np.ndarray:
        """n x n Euclidean distances between subset embeddings (NaN for isolated nodes)."""
        diff = self.embedding[:, None, :] - self.embedding[None, :, :]
        return np.sqrt((diff**2).sum(-1))

    def distance(self, a: str, b: str) -> float:
        return float(np.linalg.norm(self.embedding[self.position(a)] - self.embedding[self.position(b)]))

    def mix_distance(self, train: list[str], test: str) -> float:
        """d(A + B + …, T): the mean distance of the training subsets to the test subset."""
        return float(np.mean([self.distance(a, test) for a in train]))

    def community_of(self) -> list[int]:
        labels = [0] * len(self.contexts)
        for c, members in enumerate(self.communities):
            for node in members:
                labels[node] = c
        return labels

    def to_json(self, embedding: bool = True) -> dict[str, Any]:
        """Nodes, edges and communities; with `embedding`, the per-subset eigenmap coordinates."""
        rows, cols = self._edges()
        edges = [
            {"source": self.contexts[i], "target": self.contexts[j], "weight": float(self.weights[i, j])}
            for i, j in zip(rows, cols)
        ]
        return {**self._json_nodes(embedding), "edges": edges, **self._json_rest(embedding)}

    def to_json_text(self, embedding: bool = True, **extra: Any) -> str:
        """`json.dumps({**to_json(embedding), **extra})`, with the edges (most of the text)
        formatted straight from the weights rather than through a dict per edge."""
        head = json.dumps(self._json_nodes(embedding))
        rest = json.dumps({**self._json_rest(embedding), **extra})
        return f'{head[:-1]}, "edges": [{self._edges_text()}], {rest[1:]}'

    def _edges_text(self) -> str:
        """The edges as json.dumps writes them, joined from per-edge pieces."""
        rows, cols = self._edges()
        if not len(rows):
            return ""
        quoted = list(map(_quoted, self.contexts))
        sources = [f'{{"source": {q}, "target": ' for q in quoted]
        pieces: list[str] = [', "weight": '] * (5 * len(rows))  # source, target, this, weight, "}, "
        pieces[0::5] = map(sources.__getitem__, rows.tolist())
        pieces[1::5] = map(quoted.__getitem__, cols.tolist())
        pieces[3::5] = map(_float_text, self.weights[rows, cols].tolist())
        pieces[4::5] = ["}, "] * len(rows)
        pieces[-1] = "}"
        return "".join(pieces)

    def _edges(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, columns) of the edges i < j, in row-major order."""
        rows, cols = np.nonzero(self.weights)
        upper = rows < cols
        return rows[upper], cols[upper]

    def _json_nodes(self, embedding: bool) -> dict[str, Any]:
        labels = self.community_of()
        nodes = [
            {"context": ctx, "subset": f"{self.cls}({ctx})", "size": int(self.sizes[i]), "community": labels[i]}
            for i, ctx in enumerate(self.contexts)
        ]
        if embedding:
            for i, node in enumerate(nodes):
                node["embedding"] = _nullable(self.embedding[i])
        return {"class": self.cls, "edge_cut": EDGE_CUT, "nodes": nodes}

    def _json_rest(self, embedding: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "communities": [[self.contexts[i] for i in members] for members in self.communities]
        }
        if embedding:
            out.update(embedding_dim=self.dim, eigenvalues=[float(v) for v in self.eigenvalues])
        return out


def _nullable(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def overlap_coefficients(subsets: list[np.ndarray]) -> np.ndarray:
    """|A ∩ B| / min(|A|, |B|) for every pair of image sets (sorted unique int arrays)."""
    n = len(subsets)
    if n == 0:
        return np.zeros((0, 0))
    sizes = np.array([len(s) for s in subsets], dtype=float)
    smaller = np.minimum.outer(sizes, sizes)
    counts = intersection_counts(subsets)
    if sizes.min() > 0:
        return np.divide(counts, smaller, out=counts)
    return np.divide(counts, smaller, out=np.zeros((n, n)), where=smaller > 0)


def intersection_counts(subsets: list[np.ndarray]) -> np.ndarray:
    """n x n |A ∩ B| (as floats, exact) of image sets (sorted unique int arrays): the Gram
    matrix of the subset-by-image incidence. Up to 64 sets the pairs of sets sharing each
    image are counted directly (no BLAS product: its threads cost more than these small
    products); beyond, a sparse product."""
    n = len(subsets)
    lengths = np.array([len(s) for s in subsets], np.int64)
    images = np.concatenate(subsets) if n else np.zeros(0, np.int64)
    if n == 1 or not len(images):
        return np.diag(lengths.astype(float))
    if n > 64:
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        incidence = sparse.csr_matrix((np.ones(len(images)), images, indptr), shape=(n, int(images.max()) + 1))
        return (incidence @ incidence.T).toarray()
    owner = np.repeat(np.arange(n), lengths)
    order = np.argsort(images, kind="stable")
    images, owner = images[order], owner[order]
    starts = np.flatnonzero(np.r_[True, images[1:] != images[:-1]])
    sharing = np.diff(np.r_[starts, len(images)])  # sets holding each image
    pairs_of = np.repeat(sharing, sharing)  # per entry: the pairs it starts (one per set of its image)
    offset = np.repeat(starts, sharing) - (np.cumsum(pairs_of) - pairs_of)
    first = np.repeat(owner, pairs_of)
    second = owner[np.repeat(offset, pairs_of) + np.arange(int(pairs_of.sum()))]
    return np.bincount(first * n + second, minlength=n * n).reshape(n, n).astype(float)


def build_meta_graph(
    cls: str, subsets: dict[str, np.ndarray], edge_cut: float = EDGE_CUT, dim: int = EMBED_DIM
) -> MetaGraph:
    return build_meta_graphs([(cls, subsets)], edge_cut, dim)[0]


def build_meta_graphs(
    classes: list[tuple[str, dict[str, np.ndarray]]], edge_cut: float = EDGE_CUT, dim: int = EMBED_DIM
) -> list[MetaGraph]:
    """`build_meta_graph` of several (class, subsets): their communities are found together."""
    contexts = [sorted(subsets, key=lambda c: f"{cls}({c})") for cls, subsets in classes]
    weights = [
        _cut(overlap_coefficients([subsets[c] for c in order]), edge_cut)
        for (_, subsets), order in zip(classes, contexts)
    ]
    return [
        MetaGraph(
            cls=cls,
            contexts=order,
            sizes=np.array([len(subsets[c]) for c in order]),
            weights=w,
            communities=communities,
            dim=dim,
        )
        for (cls, subsets), order, w, communities in zip(
            classes, contexts, weights, greedy_modularity_communities_of(weights)
        )
    ]


def cut_weights(weights: np.ndarray, edge_cut: float = EDGE_CUT) -> np.ndarray:
    """Overlap coefficients below the cut become 0 (no edge); no self-loops."""
    return _cut(weights.copy(), edge_cut)


def _cut(weights: np.ndarray, edge_cut: float) -> np.ndarray:
    """`cut_weights` in place."""
    weights[weights < edge_cut] = 0.0
    np.fill_diagonal(weights, 0.0)
    return weights


def spectral_embedding(weights: np.ndarray, dim: int = EMBED_DIM) -> tuple[np.ndarray, np.ndarray]:
    """(n x dim coordinates, eigenvalues) by Laplacian eigenmaps (see module doc).

    Columns beyond the available n_connected − 1 eigenvectors are zero."""
    n = len(weights)
    embedding = np.full((n, dim), np.nan)
    degree = weights.sum(axis=1)
    connected = np.flatnonzero(degree > 0)
    if len(connected) < 2:
        return embedding, np.zeros(0)
    w = weights[np.ix_(connected, connected)]
    root = np.sqrt(degree[connected])
    trivial = root / np.linalg.norm(root)
    normalised = np.eye(len(connected)) - w / np.outer(root, root)
    # lift the trivial eigenvector (λ = 0) above the spectrum (λ ≤ 2) so it comes last
    k = min(dim, len(connected) - 1)
    values, vectors = eigh(normalised + 3.0 * np.outer(trivial, trivial), subset_by_index=[0, k - 1])
    vectors = vectors[:, :k] / root[:, None]
    peaks = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(k)]
    vectors = vectors * np.where(peaks < 0, -1.0, 1.0)
    embedding[connected] = 0.0
    embedding[connected, :k] = vectors
    return embedding, values


def draw_meta_graph(graph: MetaGraph, path: str | Path) -> Path:
    """A PNG of the meta-graph: nodes at their first two spectral coordinates (isolated
    subsets in a column on the right), colour = community, edge width = overlap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xy = _layout(graph)
    figure = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    rows, cols = np.nonzero(np.triu(graph.weights))
    for i, j in zip(rows, cols):
        ax.plot(xy[[i, j], 0], xy[[i, j], 1], color="0.6", lw=0.5 + 3 * graph.weights[i, j], zorder=1)
    palette = [f"C{c % 10}" for c in graph.community_of()]
    area = 40 + 260 * graph.sizes / max(int(graph.sizes.max(initial=1)), 1)
    ax.scatter(xy[:, 0], xy[:, 1], s=area, c=palette, edgecolors="k", linewidths=0.5, zorder=2)
    # subsets with identical coordinates (e.g. symmetric pairs) get their labels stacked, not overprinted
    stacked: dict[tuple[float, float], int] = {}
    for i, ctx in enumerate(graph.contexts):
        spot = (round(float(xy[i, 0]), 3), round(float(xy[i, 1]), 3))
        stacked[spot] = stacked.get(spot, -1) + 1
        ax.annotate(
            f"{ctx} ({graph.sizes[i]})",
            xy[i],
            fontsize=7,
            xytext=(4, 4 + 9 * stacked[spot]),
            textcoords="offset points",
        )
    ax.set_title(
        f"{graph.cls}: {len(graph.contexts)} subsets, {len(graph.communities)} communities, "
        f"edges = overlap ≥ {EDGE_CUT}; isolated subsets at the right"
    )
    ax.set_xlabel("spectral coordinate 1")
    ax.set_ylabel("spectral coordinate 2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _layout(graph: MetaGraph) -> np.ndarray:
    xy = graph.embedding[:, :2].copy()
    isolated = np.isnan(xy[:, 0])
    placed = xy[~isolated]
    right = placed[:, 0].max() + 0.2 * (np.ptp(placed[:, 0]) or 1.0) if len(placed) else 0.0
    low, high = (placed[:, 1].min(), placed[:, 1].max()) if len(placed) else (0.0, 1.0)
    xy[isolated, 0] = right
    xy[isolated, 1] = np.linspace(low, high if high > low else low + 1.0, int(isolated.sum()))
    return xy

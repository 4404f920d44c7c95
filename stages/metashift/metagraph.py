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
    return cut_overlaps([subsets], None)[0]


def cut_overlaps(classes: list[list[np.ndarray]], edge_cut: float | None = EDGE_CUT) -> list[np.ndarray]:
    """`cut_weights(overlap_coefficients(sets), edge_cut)` for each list of image sets (with
    `edge_cut=None`, the coefficients uncut). Only the pairs of sets that share images are
    counted and divided, and they are written into zeroed matrices: the lists of up to
    `_TOGETHER` sets all in one pass, each larger one on its own (`_class_pairs`)."""
    sizes = np.array([len(sets) for sets in classes], np.int64)
    together = np.flatnonzero(sizes <= _TOGETHER).tolist()
    weights: list[np.ndarray] = [np.zeros((0, 0))] * len(classes)
    if together:
        group = [classes[i] for i in together]
        for i, w in zip(together, _weights(group, _pairs_together(group), edge_cut)):
            weights[i] = w
    cut = min(edge_cut, 2.0) if edge_cut is not None and edge_cut > 0 else 0.0  # coefficients are <= 1
    for i in np.flatnonzero(sizes > _TOGETHER).tolist():
        lengths = _lengths(classes[i])
        # fl(c / m) >= cut needs c >= cut * m * (1 - 2^-53): fewer shared images can never make an edge
        least = np.minimum(np.maximum(np.ceil(cut * lengths * (1 - 1e-9)), 1), lengths + 1).astype(np.int64)
        a, b, shared = _class_pairs(classes[i], lengths, least)
        weights[i] = _weights([classes[i]], (np.zeros(len(a), np.int64), a, b, shared), edge_cut)[0]
    return weights


def intersection_counts(subsets: list[np.ndarray]) -> np.ndarray:
    """n x n |A ∩ B| (as floats, exact) of image sets (sorted unique int arrays)."""
    lengths = _lengths(subsets)
    counts = np.diag(lengths.astype(float))
    if len(subsets) > _TOGETHER:
        a, b, shared = _class_pairs(subsets, lengths, np.ones(len(subsets), np.int64))
    else:
        _, a, b, shared = _pairs_together([subsets])
    counts[a, b] = counts[b, a] = shared
    return counts


# Lists of up to this many sets have their pairs counted together, many lists in one pass.
_TOGETHER = 128
# In a larger list, a set holding more than this share of all its images is a hub: its
# intersections come from one sparse-dense product instead of image-by-image pairs.
_HUB_SHARE = 0.1
_MAX_HUBS = 64
_HUB_CELLS = 1 << 22  # images x hubs


def _lengths(sets: list[np.ndarray]) -> np.ndarray:
    return np.array([len(s) for s in sets], np.int64)


def _weights(
    classes: list[list[np.ndarray]], pairs: tuple[np.ndarray, ...], edge_cut: float | None
) -> list[np.ndarray]:
    """Per class, the n x n overlap coefficients (cut at `edge_cut` unless None) of the pairs
    (class, a, b, |A ∩ B|) — each pair once, any order — written into a zeroed matrix."""
    sizes = np.array([len(sets) for sets in classes], np.int64)
    lengths = np.array([len(s) for sets in classes for s in sets], np.int64)
    starts = np.cumsum(sizes) - sizes  # first set of each class
    cells = np.zeros(len(classes) + 1, np.int64)
    np.cumsum(sizes * sizes, out=cells[1:])
    group, a, b, shared = pairs
    values = shared / np.minimum(lengths[starts[group] + a], lengths[starts[group] + b])
    if edge_cut is not None:
        keep = ~(values < edge_cut)
        group, a, b, values = group[keep], a[keep], b[keep], values[keep]
    flat = np.zeros(int(cells[-1]))
    n = sizes[group]
    flat[cells[group] + a * n + b] = values
    flat[cells[group] + b * n + a] = values
    if edge_cut is None:
        of = np.repeat(np.arange(len(classes)), sizes)
        flat[cells[of] + (np.arange(len(lengths)) - starts[of]) * (sizes[of] + 1)] = lengths > 0
    if len(classes) == 1:
        return [flat.reshape(len(classes[0]), len(classes[0]))]
    return [flat[cells[c] : cells[c + 1]].reshape(size, size).copy() for c, size in enumerate(sizes.tolist())]


def _pairs_together(classes: list[list[np.ndarray]]) -> tuple[np.ndarray, ...]:
    """(class, a, b, |A ∩ B|) for every pair a < b of sets of one class that share images.
    Grouping the entries of all classes by image gives, per image, its sets in order; each
    run of one class's sets within an image is that image's share of the class's pairs."""
    empty = np.zeros(0, np.int64)
    multi = [c for c, sets in enumerate(classes) if len(sets) > 1]
    sizes = np.array([len(classes[c]) for c in multi], np.int64)
    sets = [s for c in multi for s in classes[c]]
    lengths = _lengths(sets)
    if not lengths.sum():
        return empty, empty, empty, empty
    holders, bounds = _by_image(sets, lengths)
    of = np.repeat(np.arange(len(multi)), sizes)  # class of each set
    local = np.arange(len(sets)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    cells = np.zeros(len(multi) + 1, np.int64)
    np.cumsum(sizes * sizes, out=cells[1:])
    runs = of[holders]
    starts = np.zeros(len(runs) + 1, bool)
    starts[1:-1] = runs[1:] != runs[:-1]
    starts[bounds] = True
    # a pair (a, b) is counted at cell a * n + b of its class's n x n block
    codes = _pair_codes(np.flatnonzero(starts), holders, cells[of] + local * sizes[of], local)
    shared = np.bincount(codes, minlength=int(cells[-1]))
    found = np.flatnonzero(shared)
    group = np.searchsorted(cells, found, side="right") - 1
    a, b = np.divmod(found - cells[group], sizes[group])
    return np.array(multi, np.int64)[group], a, b, shared[found]


def _by_image(sets: list[np.ndarray], lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(holders, bounds): the entries of the sets grouped by image, each image's sets in
    ascending order, with the bounds of the images' groups (start of each, then the end)."""
    images = np.concatenate(sets)
    width = int(images.max()) + 1
    if len(images) * 8 < width:  # few entries over a wide span: sort them
        owner = np.repeat(np.arange(len(sets)), lengths)
        order = np.argsort(images, kind="stable")
        images = images[order]
        starts = np.ones(len(images) + 1, bool)
        starts[1:-1] = images[1:] != images[:-1]
        return owner[order], np.flatnonzero(starts)
    incidence, bounds = _incidence(sets, lengths, np.int8, width)
    return incidence.indices, bounds


def _class_pairs(sets: list[np.ndarray], lengths: np.ndarray, least: np.ndarray) -> tuple[np.ndarray, ...]:
    """(a, b, |A ∩ B|) for the pairs of sets a != b of one class that share at least
    min(least[a], least[b]) >= 1 images (`least` never falls as sets grow), each pair once.

    The few largest sets (hubs) take part in most pairs; their intersections with every set
    are one product of the sparse incidence with the hubs' dense image marks. The pairs of
    the other sets are counted image by image, with the sets in ascending length so that
    the smaller set of a pair comes first and sets its threshold."""
    n = len(sets)
    empty = np.zeros(0, np.int64)
    images = np.concatenate(sets) if n else empty
    if not len(images):
        return empty, empty, empty
    width = int(images.max()) + 1
    hubs = np.flatnonzero(lengths > _HUB_SHARE * np.count_nonzero(np.bincount(images, minlength=width)))
    cap = min(_MAX_HUBS, _HUB_CELLS // width)
    if len(hubs) > cap:
        hubs = np.sort(np.argsort(-lengths, kind="stable")[:cap])
    rest = np.ones(n, bool)
    rest[hubs] = False
    rest = np.flatnonzero(rest)
    rest = rest[np.argsort(lengths[rest], kind="stable")]
    dtype = np.float32 if len(images) < 1 << 24 else np.float64  # counts stay exact
    by_image, bounds = _incidence([sets[i] for i in rest], lengths[rest], dtype, width)
    k = len(rest)
    # a pair (a < b in ascending length) is counted at cell b * k + a
    shared = np.bincount(_pair_codes(bounds, by_image.indices, np.arange(k), np.arange(k) * k), minlength=k * k)
    found = np.flatnonzero(shared.reshape(k, k) >= least[rest])
    high, low = np.divmod(found, k)
    parts = [(rest[low], rest[high], shared[found])]
    if len(hubs):
        h = len(hubs)
        hub_images = np.concatenate([sets[i] for i in hubs])
        marks = np.zeros((width, h), dtype)
        marks.ravel()[hub_images * h + np.repeat(np.arange(h), lengths[hubs])] = 1
        indptr = np.zeros(h + 1, np.int64)
        np.cumsum(lengths[hubs], out=indptr[1:])
        hub_sets = sparse.csr_matrix((np.ones(len(hub_images), dtype), hub_images, indptr), shape=(h, width))
        among = np.triu((hub_sets @ marks).astype(np.int64), 1)
        a, j = np.nonzero(among >= np.minimum.outer(least[hubs], least[hubs]))
        parts.append((hubs[a], hubs[j], among[a, j]))
        if k:
            with_hubs = (by_image @ marks).astype(np.int64)
            a, j = np.nonzero(with_hubs >= np.minimum.outer(least[rest], least[hubs]))
            parts.append((rest[a], hubs[j], with_hubs[a, j]))
    a, b, shared = (np.concatenate(p) for p in zip(*parts))
    return a, b, shared


def _incidence(
    sets: list[np.ndarray], lengths: np.ndarray, dtype: type, width: int
) -> tuple[sparse.csc_matrix, np.ndarray]:
    """The sets x images incidence by image (CSC: each image's sets in ascending order) and
    its column bounds."""
    images = np.concatenate(sets) if sets else np.zeros(0, np.int64)
    indptr = np.zeros(len(sets) + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    by_image = sparse.csr_matrix((np.ones(len(images), dtype), images, indptr), shape=(len(sets), width)).tocsc()
    return by_image, by_image.indptr


def _pair_codes(bounds: np.ndarray, holders: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """first[x] + second[y] for every pair of entries x before y within one run of `holders`
    (runs split at `bounds`). Entries sorted by how many partners follow them make the pairs
    at each distance d one gather: the entries with at least d followers, and those d later."""
    later = np.repeat(bounds[1:] - 1, np.diff(bounds)) - np.arange(len(holders))
    at_least = np.cumsum(np.bincount(later)[::-1])[::-1] if len(later) else np.zeros(1, np.int64)
    if len(at_least) < 2:
        return np.zeros(0, np.int64)
    by_later = np.argsort(~later.astype(np.uint8) if len(at_least) <= 256 else -later, kind="stable")
    head = first[holders[by_later[: at_least[1]]]]
    tail = second[holders]
    codes = np.empty(int(at_least[1:].sum()), np.int64)
    step = np.empty(int(at_least[1]), np.int64)
    pos = 0
    for d, count in enumerate(at_least[1:].tolist(), 1):
        np.take(tail[d:], by_later[:count], out=step[:count])
        np.add(head[:count], step[:count], out=codes[pos : pos + count])
        pos += count
    return codes


def build_meta_graph(
    cls: str, subsets: dict[str, np.ndarray], edge_cut: float = EDGE_CUT, dim: int = EMBED_DIM
) -> MetaGraph:
    return build_meta_graphs([(cls, subsets)], edge_cut, dim)[0]


def build_meta_graphs(
    classes: list[tuple[str, dict[str, np.ndarray]]], edge_cut: float = EDGE_CUT, dim: int = EMBED_DIM
) -> list[MetaGraph]:
    """`build_meta_graph` of several (class, subsets): their communities are found together."""
    contexts = [sorted(subsets, key=lambda c: f"{cls}({c})") for cls, subsets in classes]
    weights = cut_overlaps([[subsets[c] for c in order] for (_, subsets), order in zip(classes, contexts)], edge_cut)
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

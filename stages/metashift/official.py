"""The two graph computations of the official MetaShift code, without networkx.

The official scripts (`dataset/generate_full_MetaShift.py`,
`dataset/domain_generalization_cat_dog.py`) call
`networkx.algorithms.community.greedy_modularity_communities(G)` and
`networkx.spectral_layout(G, dim=5)` on graphs whose nodes are subset names
`cls(context)` (in the order given) and whose edges are the overlap
coefficients that survive the 0.2 cut. Both results depend on details beyond
the textbook definitions (tie-breaking, the choice of Laplacian, the final
rescaling), so they are spelled out here and reproduced step for step (the
merge loops are in `modularity`); the test suite compares them with networkx
on fixed and random graphs.

Communities — Clauset–Newman–Moore greedy modularity, *unweighted*
(`weight=None` is the default of the call): every edge counts 1.
- m = number of edges, a_i = deg_i / (2m); each adjacent pair starts at
  ΔQ_ij = 1/m − 2 a_i a_j.
- Each step takes the adjacent pair with the largest ΔQ; ties go to the
  smallest first node index, then the smallest second (networkx orders its
  heap by (−ΔQ, u, v)). The step stops the process when that ΔQ is negative
  (a zero gain still merges).
- Merging u into v (u < v on a tie, the smaller index is u): for every
  neighbour w of either, ΔQ_vw = ΔQ_vw + ΔQ_uw if both are neighbours,
  ΔQ_vw − 2 a_u a_w if only v is, ΔQ_uw − 2 a_v a_w if only u is; then
  a_v += a_u. The community keeps v's place in the node order.
- Output: communities ordered by the position of their surviving node (the
  largest member index), then stably by size, largest first.
Non-adjacent communities are never merged, so isolated nodes stay singletons.

Embedding — `spectral_layout(dim=5)`, *weighted* (its default `weight="weight"`):
- L = D − W, the unnormalised Laplacian; all eigenpairs by `numpy.linalg.eig`;
  eigenvalues sorted ascending, the first dropped, the next `dim` eigenvectors
  (real part) are the coordinates (fewer when n − 1 < dim).
- Rescaled: coordinates centred on their mean, then divided by the largest
  absolute coordinate over all axes.
- Graphs of one or two nodes put every node at the origin.
Isolated nodes are embedded like any other: each extra connected component
adds a zero eigenvalue, so an isolated node can occupy one of the `dim`
coordinates. When eigenvalues repeat, the basis `eig` returns — hence the
distances — is not unique; it is the same basis the official code gets for the
same node order.
"""

from __future__ import annotations

import numpy as np

from stages.metashift.modularity import merge_graph, merge_side_by_side

LAYOUT_DIM = 5
_SIDE_BY_SIDE_NODES = 256  # larger graphs are too few to share steps
_SIDE_BY_SIDE_CELLS = 1 << 22  # gains held at once when merging graphs side by side (32 MB)


def greedy_modularity_communities(adjacency: np.ndarray) -> list[list[int]]:
    """Communities (sorted node indices) of the graph whose edges are the non-zero
    off-diagonal entries of `adjacency`; weights are ignored (see module doc).

    Merges never join two connected components and leave other components' gains
    unchanged, and the process ends when every component's best gain is negative,
    so each component is merged on its own (same 1/m, same tie order)."""
    return _communities(*_adjacency(adjacency))


def _communities(adj: np.ndarray, edges: int) -> list[list[int]]:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(adj)
    if edges == 0:
        return [[i] for i in range(n)]
    if n <= 64:  # small graphs: one pass costs less than splitting into components
        return _ordered(merge_graph(adj, 1.0 / edges))
    _, component = connected_components(csr_matrix(adj), directed=False)
    found = []
    for label in np.unique(component):
        nodes = np.flatnonzero(component == label)
        if len(nodes) == 1:
            found.append([int(nodes[0])])
            continue
        found += [nodes[m].tolist() for m in merge_graph(adj[np.ix_(nodes, nodes)], 1.0 / edges)]
    return _ordered(found)


def greedy_modularity_communities_of(adjacencies: list[np.ndarray]) -> list[list[list[int]]]:
    """`greedy_modularity_communities` of each graph. Graphs of up to 256 nodes are merged
    side by side, one merge of every graph per step (a few hundred small graphs cost about
    what one does); larger ones one after another."""
    found: list[list[list[int]] | None] = [None] * len(adjacencies)
    small: dict[int, list[tuple[int, np.ndarray, int]]] = {}
    for i, adjacency in enumerate(adjacencies):
        adj, edges = _adjacency(adjacency)
        if edges and len(adj) <= _SIDE_BY_SIDE_NODES:
            small.setdefault(max(8, 1 << (len(adj) - 1).bit_length()), []).append((i, adj, edges))
        else:
            found[i] = _communities(adj, edges)
    for size, graphs in small.items():
        step = max(1, _SIDE_BY_SIDE_CELLS // size**2)
        for start in range(0, len(graphs), step):
            batch = graphs[start : start + step]
            merged = merge_side_by_side([adj for _, adj, _ in batch], [1.0 / edges for _, _, edges in batch], size)
            for (i, _, _), communities in zip(batch, merged):
                found[i] = _ordered(communities)
    return found  # type: ignore[return-value]


def _adjacency(adjacency: np.ndarray) -> tuple[np.ndarray, int]:
    """Boolean adjacency without self-loops, and its number of edges."""
    adj = np.asarray(adjacency) != 0
    np.fill_diagonal(adj, False)
    return adj, int(adj.sum()) // 2


def _ordered(found: list[list[int]]) -> list[list[int]]:
    found.sort(key=max)  # networkx keeps a community at the place of its surviving (largest) node
    return sorted(found, key=len, reverse=True)


def spectral_layout(weights: np.ndarray, dim: int = LAYOUT_DIM) -> np.ndarray:
    """n x dim positions of the weighted graph `weights` (see module doc); columns
    beyond the n − 1 available eigenvectors are zero."""
    w = np.asarray(weights, dtype=float)
    n = len(w)
    positions = np.zeros((n, dim))
    if n <= 2:
        return positions
    laplacian = np.identity(n) * np.sum(w, axis=1) - w
    values, vectors = np.linalg.eig(laplacian)
    columns = np.real(vectors[:, np.argsort(values)[1 : dim + 1]])
    columns = columns - columns.mean(axis=0)
    largest = np.abs(columns).max()
    if largest > 0:
        columns = columns * (1 / largest)
    positions[:, : columns.shape[1]] = columns
    return positions


def pairwise_distances(positions: np.ndarray) -> np.ndarray:
    diff = positions[:, None, :] - positions[None, :, :]
    return np.sqrt((diff**2).sum(-1))

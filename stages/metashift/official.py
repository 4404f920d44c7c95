"""The two graph computations of the official MetaShift code, without networkx.

The official scripts (`dataset/generate_full_MetaShift.py`,
`dataset/domain_generalization_cat_dog.py`) call
`networkx.algorithms.community.greedy_modularity_communities(G)` and
`networkx.spectral_layout(G, dim=5)` on graphs whose nodes are subset names
`cls(context)` (in the order given) and whose edges are the overlap
coefficients that survive the 0.2 cut. Both results depend on details beyond
the textbook definitions (tie-breaking, the choice of Laplacian, the final
rescaling), so they are spelled out here and reproduced step for step; the
test suite compares them with networkx on fixed and random graphs.

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

LAYOUT_DIM = 5


def greedy_modularity_communities(adjacency: np.ndarray) -> list[list[int]]:
    """Communities (sorted node indices) of the graph whose edges are the non-zero
    off-diagonal entries of `adjacency`; weights are ignored (see module doc).

    Merges never join two connected components and leave other components' gains
    unchanged, and the process ends when every component's best gain is negative,
    so each component is merged on its own (same 1/m, same tie order)."""
    from scipy.sparse.csgraph import connected_components

    adj = np.asarray(adjacency) != 0
    n = len(adj)
    np.fill_diagonal(adj, False)
    edges = int(adj.sum()) // 2
    if edges == 0:
        return [[i] for i in range(n)]
    if n <= 64:  # small graphs: one pass costs less than splitting into components
        found = _merge_component(adj, 1.0 / edges)
        found.sort(key=max)
        return sorted(found, key=len, reverse=True)
    _, component = connected_components(adj, directed=False)
    found = []
    for label in np.unique(component):
        nodes = np.flatnonzero(component == label)
        if len(nodes) == 1:
            found.append([int(nodes[0])])
            continue
        found += [nodes[m].tolist() for m in _merge_component(adj[np.ix_(nodes, nodes)], 1.0 / edges)]
    found.sort(key=max)  # networkx keeps a community at the place of its surviving (largest) node
    return sorted(found, key=len, reverse=True)


def _merge_component(adj: np.ndarray, q0: float) -> list[list[int]]:
    """Greedy merging inside one connected component; communities as sorted local indices."""
    n = len(adj)
    share = adj.sum(axis=1) * q0 * 0.5  # a_i, in the same float operations as networkx
    gain = np.full((n, n), -np.inf)
    products = np.outer(share, share)
    gain[adj] = q0 - (products[adj] + products[adj])
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    # per row, the best gain and its first column: the global first maximum in row-major
    # order (smallest u, then v) is then the first row holding the largest row best
    best, best_at = gain.max(axis=1), gain.argmax(axis=1)
    while True:
        u = int(np.argmax(best))
        v = int(best_at[u])
        if not best[u] >= 0:  # -inf (no adjacent pair left) or a loss
            break
        touched = _merge(gain, share, u, v)
        _update_bests(gain, best, best_at, touched, u, v)
        members[v] = members[v] + members.pop(u)
        if len(gain) > 64 and 2 * len(members) < len(gain):
            # drop retired rows and columns; the order, hence every tie-break, is kept
            keep = np.array(sorted(members))
            gain, share = gain[np.ix_(keep, keep)], share[keep]
            best, best_at = gain.max(axis=1), gain.argmax(axis=1)
            members = {new: members[old] for new, old in enumerate(keep.tolist())}
    return [sorted(m) for m in members.values()]


def _update_bests(gain: np.ndarray, best: np.ndarray, best_at: np.ndarray, touched: np.ndarray, u: int, v: int) -> None:
    """Row bests after a merge: rows u and v, and rows whose best was at column u or v, are
    recomputed; other touched rows only compare their best with their new entry at v."""
    new, old, old_at = gain[touched, v], best[touched], best_at[touched]
    lost = (old_at == u) | (old_at == v) | (touched == u) | (touched == v)
    better = ~lost & ((new > old) | ((new == old) & (v < old_at)))
    best[touched[better]], best_at[touched[better]] = new[better], v
    redo = touched[lost]
    rows = gain[redo]
    best_at[redo] = at = rows.argmax(axis=1)
    best[redo] = rows[np.arange(len(redo)), at]


def _merge(gain: np.ndarray, share: np.ndarray, u: int, v: int) -> np.ndarray:
    """Merge community u into v: update row/column v of the gains, retire u; the rows changed
    (u and v included: they are adjacent)."""
    gain_u, gain_v = gain[u], gain[v]
    near_u, near_v = gain_u > -np.inf, gain_v > -np.inf
    touched = np.flatnonzero(near_u | near_v)
    twice_u, twice_v = share[u] * share, share[v] * share  # a_u a_w, a_v a_w for every w
    # neighbours of both: sum; of v only: minus 2 a_u a_w; of u only (or none, -inf): minus 2 a_v a_w
    row = np.where(
        near_v, np.where(near_u, gain_v + gain_u, gain_v - (twice_u + twice_u)), gain_u - (twice_v + twice_v)
    )
    row[[u, v]] = -np.inf
    gain[v, :], gain[:, v] = row, row
    gain[u, :], gain[:, u] = -np.inf, -np.inf
    share[v] += share[u]
    share[u] = 0.0
    return touched


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

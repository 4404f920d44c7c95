"""The merge loops behind `official.greedy_modularity_communities` (unweighted
Clauset–Newman–Moore, as networkx runs it; the rules are in `official`'s module doc).

Both loops keep the gains ΔQ as a dense matrix (-inf where two communities are not
adjacent) and, per row, its first maximum, so the pair to merge — the first largest
gain in row-major order — is found without scanning the matrix:
- `merge_graph`, one graph: the few communities with most neighbours ("hubs") change
  their row at nearly every merge, so rows keep their maximum over the other columns and
  each hub row keeps its own; a merge into a hub then re-scans only the rows whose
  maximum was the absorbed community.
- `merge_side_by_side`, many small graphs padded to one size: each step merges the best
  pair of every graph whose best gain is still >= 0, in the same float operations.
"""

from __future__ import annotations

import numpy as np

HUBS = 16  # hub columns of a graph of more than 64 nodes
_NEG = -np.inf


class _Gains:
    """Gains, row maxima and hub maxima of one graph during the merging."""

    def __init__(self, adj: np.ndarray, q0: float):
        n = len(adj)
        self.share = adj.sum(axis=1) * q0 * 0.5  # a_i, in the same float operations as networkx
        self.gain = np.outer(self.share, self.share)  # a_i a_j, then q0 - 2 a_i a_j in place
        self.gain += self.gain
        np.subtract(q0, self.gain, out=self.gain)
        self.gain[~adj] = _NEG
        self.members: dict[int, list[int]] = {i: [i] for i in range(n)}
        hubs = np.argsort(-adj.sum(axis=1), kind="stable")[:HUBS] if n > 64 else []
        self._reset(sorted(int(h) for h in hubs))

    def _reset(self, hubs: list[int]) -> None:
        self.hubs = hubs  # ascending
        self.hub_columns = np.array(hubs, np.int64)
        n = len(self.gain)
        self.best, self.best_at = np.empty(n), np.empty(n, np.int64)
        for start in range(0, n, 256):  # a block of rows at a time: no copy of the whole matrix
            rows = np.arange(start, min(start + 256, n))
            self.best[rows], self.best_at[rows] = self._row_maxima(rows)
        self.hub_best, self.hub_at = self._hub_maxima(hubs)

    def _row_maxima(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First maximum (value, column) of each of `rows`, the hub columns left out."""
        block = self.gain[rows]
        block[:, self.hub_columns] = _NEG
        return block.max(axis=1), block.argmax(axis=1)

    def _hub_maxima(self, hubs: list[int]) -> tuple[list[float], list[int]]:
        """First maximum (value, column) of each hub's whole row."""
        at = self.gain[hubs].argmax(axis=1).tolist() if hubs else []
        return [float(self.gain[h, a]) for h, a in zip(hubs, at)], at

    def next_pair(self) -> tuple[int, int]:
        """(u, v) of the first largest gain in row-major order; (-1, -1) when it is negative."""
        u = int(self.best.argmax())
        top = float(self.best[u])
        if self.hub_best:
            top = max(top, max(self.hub_best))
        if not top >= 0:  # -inf (no adjacent pair left) or a loss
            return -1, -1
        # the first row holding it: the first row maximum, or the first column of a hub row
        # (= the first row with that value in the hub's column)
        rows = [u] if self.best[u] == top else []
        rows += [at for value, at in zip(self.hub_best, self.hub_at) if value == top]
        u = min(rows)
        v = int(self.best_at[u]) if self.best[u] == top else len(self.gain)
        for hub in self.hubs:  # ascending: the first tie at a smaller column wins
            if hub >= v:
                break
            if self.gain[u, hub] == top:
                return u, hub
        return u, v

    def merge(self, u: int, v: int) -> None:
        """Merge community u into v and bring the maxima up to date."""
        row = self._merge_gains(u, v)
        self.members[v] = self.members[v] + self.members.pop(u)
        into_hub = v in self.hubs
        if u in self.hubs:  # the merged community stays a hub: column v leaves the row maxima
            slot = self.hubs.index(u)
            del self.hubs[slot], self.hub_best[slot], self.hub_at[slot]
            if not into_hub:
                slot = int(np.searchsorted(self.hubs, v))
                self.hubs.insert(slot, v)
                self.hub_best.insert(slot, _NEG)
                self.hub_at.insert(slot, 0)
            self.hub_columns = np.array(self.hubs, np.int64)
        self._update_rows(u, v, row, into_hub)
        self._update_hubs(u, v, row)
        n = len(self.gain)
        if n > 64 and 2 * len(self.members) < n:
            # drop retired rows and columns; the order, hence every tie-break, is kept
            keep = np.array(sorted(self.members))
            self.gain, self.share = self.gain[np.ix_(keep, keep)], self.share[keep]
            self.members = {new: self.members[old] for new, old in enumerate(keep.tolist())}
            self._reset(np.searchsorted(keep, self.hubs).tolist())

    def _merge_gains(self, u: int, v: int) -> np.ndarray:
        """Row/column v of the gains after merging u into v; u retired. Rows that are
        neighbours of neither keep -inf at u and v."""
        gain, share = self.gain, self.share
        gain_u, gain_v = gain[u], gain[v]
        # neighbours of v only (most, when v is a hub): minus 2 a_u a_w; of neither: stays -inf
        twice_u = share[u] * share
        twice_u += twice_u  # doubled by an addition, as networkx does
        row = gain_v - twice_u
        # neighbours of u (few): plus its gain if v's too, else u's gain minus 2 a_v a_w
        near_u = np.flatnonzero(gain_u > _NEG)
        gu, gv = gain_u[near_u], gain_v[near_u]
        twice_v = share[v] * share[near_u]
        twice_v += twice_v
        row[near_u] = np.where(gv > _NEG, gv + gu, gu - twice_v)
        row[u] = row[v] = _NEG
        gain[v], gain[:, v] = row, row
        gain[u, near_u], gain[near_u, u] = _NEG, _NEG  # u's other entries are -inf already
        share[v] += share[u]
        share[u] = 0.0
        return row

    def _update_rows(self, u: int, v: int, row: np.ndarray, into_hub: bool) -> None:
        """Row maxima after the merge: rows u and v and the rows whose maximum sat at u (or
        at v, unless v was a hub column already) are re-scanned; where v is no hub, its new
        value wins every other row whose maximum it now reaches."""
        best, best_at = self.best, self.best_at
        if into_hub:
            lost = best_at == u
        else:
            lost = (best_at == u) | (best_at == v)
            if v not in self.hubs:
                better = (row > best) | ((row == best) & (v < best_at))
                better &= ~lost
                best[better], best_at[better] = row[better], v
        lost[u] = lost[v] = True
        redo = np.flatnonzero(lost)
        best[redo], best_at[redo] = self._row_maxima(redo)

    def _update_hubs(self, u: int, v: int, row: np.ndarray) -> None:
        """Hub row maxima: row v is new; another hub row changed at u (now -inf) and v."""
        for slot, hub in enumerate(self.hubs):
            if hub == v or self.hub_at[slot] in (u, v):
                at = int(self.gain[hub].argmax())
                self.hub_best[slot], self.hub_at[slot] = float(self.gain[hub, at]), at
            elif row[hub] > self.hub_best[slot] or (row[hub] == self.hub_best[slot] and v < self.hub_at[slot]):
                self.hub_best[slot], self.hub_at[slot] = float(row[hub]), v


def merge_graph(adj: np.ndarray, q0: float) -> list[list[int]]:
    """Greedy merging of one graph (boolean adjacency, no self-loops, 1/m = q0);
    communities as sorted node indices."""
    gains = _Gains(adj, q0)
    while True:
        u, v = gains.next_pair()
        if u < 0:
            return [sorted(m) for m in gains.members.values()]
        gains.merge(u, v)


def merge_side_by_side(adjs: list[np.ndarray], q0s: list[float], size: int) -> list[list[list[int]]]:
    """`merge_graph` of several graphs (each padded to `size` nodes with isolated ones)."""
    count = len(adjs)
    adj = np.zeros((count, size, size), bool)
    for b, a in enumerate(adjs):
        adj[b, : len(a), : len(a)] = a
    q0 = np.array(q0s)[:, None]
    share = adj.sum(axis=2) * q0 * 0.5
    gain = share[:, :, None] * share[:, None, :]  # a_i a_j, then q0 - 2 a_i a_j in place
    gain += gain
    np.subtract(q0[:, :, None], gain, out=gain)
    gain[~adj] = _NEG
    best, best_at = gain.max(axis=2), gain.argmax(axis=2)
    live, merges = np.arange(count), []
    while True:
        u = best[live].argmax(axis=1)
        go = best[live, u] >= 0
        live, u = live[go], u[go]
        if not len(live):
            break
        v = best_at[live, u]
        merges.append((live, u, v))
        row, touched = _merge_side_by_side(gain, share, live, u, v)
        _update_side_by_side(gain, best, best_at, live, u, v, row, touched)
    members = [{i: [i] for i in range(len(a))} for a in adjs]
    for lanes, us, vs in merges:
        for b, u, v in zip(lanes.tolist(), us.tolist(), vs.tolist()):
            members[b][v] = members[b][v] + members[b].pop(u)
    return [[sorted(m) for m in graph.values()] for graph in members]


def _merge_side_by_side(
    gain: np.ndarray, share: np.ndarray, live: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`_Gains._merge_gains` in every live graph; the new rows v and the rows they touch."""
    lane = np.arange(len(live))
    gain_u, gain_v = gain[live, u], gain[live, v]
    near_u, near_v = gain_u > _NEG, gain_v > _NEG
    s, su, sv = share[live], share[live, u][:, None], share[live, v][:, None]
    twice_u, twice_v = su * s, sv * s
    twice_u += twice_u
    twice_v += twice_v
    row = np.where(near_v, np.where(near_u, gain_v + gain_u, gain_v - twice_u), gain_u - twice_v)
    row[lane, u] = row[lane, v] = _NEG
    gain[live, v, :], gain[live, :, v] = row, row
    gain[live, u, :], gain[live, :, u] = _NEG, _NEG
    share[live, v] += share[live, u]
    share[live, u] = 0.0
    return row, near_u | near_v


def _update_side_by_side(
    gain: np.ndarray,
    best: np.ndarray,
    best_at: np.ndarray,
    live: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    row: np.ndarray,
    touched: np.ndarray,
) -> None:
    """Row maxima of the live graphs after their merges (no hubs: all columns count)."""
    lane = np.arange(len(live))
    old, old_at = best[live], best_at[live]
    lost = touched & ((old_at == u[:, None]) | (old_at == v[:, None]))
    lost[lane, u] = lost[lane, v] = True
    better = touched & ~lost & ((row > old) | ((row == old) & (v[:, None] < old_at)))
    old[better], old_at[better] = row[better], np.broadcast_to(v[:, None], better.shape)[better]
    lanes, rows = np.nonzero(lost)
    again = gain[live[lanes], rows]
    at = again.argmax(axis=1)
    old[lanes, rows], old_at[lanes, rows] = again[np.arange(len(at)), at], at
    best[live], best_at[live] = old, old_at

"""The merge loops behind `official.greedy_modularity_communities` (unweighted
Clauset–Newman–Moore, as networkx runs it; the rules are in `official`'s module doc).

Both loops keep the gains ΔQ as a dense matrix (-inf where two communities are not
adjacent) and, per row, its first maximum, so the pair to merge — the first largest
gain in row-major order — is found without scanning the matrix:
- `merge_graph`, one graph: the few communities with most neighbours ("hubs") change
  their row at nearly every merge, so the other rows keep their maximum over the non-hub
  columns and each hub row its maximum over all columns; a merge into a hub then re-scans
  only the hub's row and the rows whose maximum sat at the absorbed community (for hub
  rows, also at the hub).
- `merge_side_by_side`, many small graphs padded to one size: each step merges the best
  pair of every graph whose best gain is still >= 0, in the same float operations.
"""

from __future__ import annotations

import numpy as np

HUBS = 16  # hub columns of a graph of more than 64 nodes
_NEG = -np.inf
_NEG_0D = np.array(_NEG)  # compared with arrays, a 0-d array costs less than a float


class _Gains:
    """Gains and their maxima of one graph during the merging.

    `best`/`best_at`: each row's first maximum over the non-hub columns; -inf at column -1
    for hub rows, retired rows and rows with no adjacent non-hub community. `hub_best`/
    `hub_at`: each hub row's first maximum over all columns (any column when it is -inf).
    A retired community's column is -inf; its row is not read again."""

    def __init__(self, adj: np.ndarray, q0: float):
        n = len(adj)
        degree = adj.sum(axis=1)
        self.share = degree * q0 * 0.5  # a_i, in the same float operations as networkx
        self.gain = np.outer(self.share, self.share)  # a_i a_j, then q0 - 2 a_i a_j in place
        self.gain += self.gain
        np.subtract(q0, self.gain, out=self.gain)
        self.gain[~adj] = _NEG
        self.members: dict[int, list[int]] = {i: [i] for i in range(n)}
        hubs = np.argsort(-degree, kind="stable")[:HUBS] if n > 64 else []
        self._reset(sorted(int(h) for h in hubs))

    def _reset(self, hubs: list[int]) -> None:
        n = len(self.gain)
        self.hubs = hubs  # ascending
        self.hub_columns = np.array(hubs, np.int64)
        self.hub_mask = np.zeros(n)  # -inf at the hub columns: added to a row, leaves them out
        self.hub_mask[self.hub_columns] = _NEG
        self.twice = np.empty(n)  # 2 a_u a_w of a merge
        hub_gains = self.gain[:, self.hub_columns]  # -inf meanwhile: left out of the row maxima
        self.gain[:, self.hub_columns] = _NEG
        self.best_at = self.gain.argmax(axis=1)
        self.best = self.gain[np.arange(n), self.best_at]
        self.gain[:, self.hub_columns] = hub_gains
        self.best[self.hub_columns] = _NEG
        self.best_at[self.best == _NEG] = -1
        at = self.gain[hubs].argmax(axis=1).tolist() if hubs else []
        self.hub_best, self.hub_at = [float(self.gain[h, a]) for h, a in zip(hubs, at)], at

    def _rescan(self, rows: np.ndarray) -> None:
        """Row maxima of `rows` (no hub rows), the hub columns left out; column -1 where -inf."""
        block = self.gain[rows] + self.hub_mask
        at = block.argmax(axis=1)
        best = block[np.arange(len(at)), at]
        at[best == _NEG] = -1
        self.best[rows], self.best_at[rows] = best, at

    def next_pair(self) -> tuple[int, int]:
        """(u, v) of the first largest gain in row-major order; (-1, -1) when it is negative."""
        u = int(self.best.argmax())
        row_top = float(self.best[u])
        hub_best = self.hub_best
        hub_top = max(hub_best) if hub_best else _NEG
        top = max(row_top, hub_top)
        if not top >= 0:  # -inf (no adjacent pair left) or a loss
            return -1, -1
        if hub_top < top:  # no hub row holds it, hence no hub column
            return u, int(self.best_at[u])
        hubs, hub_at = self.hubs, self.hub_at
        if row_top < top and hub_best.count(top) == 1:
            # one hub row holds it, first at column `at`; row `at` holds it only there
            slot = hub_best.index(top)
            hub, at = hubs[slot], hub_at[slot]
            return (hub, at) if hub < at else (at, hub)
        # the first row holding it: the first row maximum, a hub row or the first column of
        # a hub row (= the first row holding it in the hub's column)
        tied = [slot for slot, value in enumerate(hub_best) if value == top]
        u = min([u] * (row_top == top) + [min(hubs[slot], hub_at[slot]) for slot in tied])
        if u in hubs:
            return u, hub_at[hubs.index(u)]
        # its first column: the first of its row maximum and the hub columns holding it (in
        # such a column it is the first row holding it)
        v = int(self.best_at[u]) if self.best[u] == top else len(self.gain)
        return u, min([v] + [hubs[slot] for slot in tied if hub_at[slot] == u])

    def merge(self, u: int, v: int) -> None:
        """Merge community u into v and bring the maxima up to date."""
        row, near_u = self._merge_gains(u, v)
        self.members[v].extend(self.members.pop(u))
        hubs = self.hubs
        into_hub = v in hubs
        if u in hubs:  # the merged community stays a hub: column v leaves the row maxima
            slot = hubs.index(u)
            del hubs[slot], self.hub_best[slot], self.hub_at[slot]
            self.hub_mask[u] = 0.0
            if not into_hub:
                slot = int(np.searchsorted(hubs, v))
                hubs.insert(slot, v)
                self.hub_best.insert(slot, _NEG)
                self.hub_at.insert(slot, 0)
                self.hub_mask[v] = _NEG
            self.hub_columns = np.array(hubs, np.int64)
        if into_hub:  # column v is left out; column u became -inf in the rows near u
            lost = near_u[self.best_at[near_u] == u]
            if len(lost):
                self._rescan(lost)
        else:
            self._update_rows(u, v, row)
        self.best[u], self.best_at[u] = _NEG, -1
        if hubs:
            self._update_hubs(u, v, row)
        n = len(self.gain)
        if n > 64 and 2 * len(self.members) < n:
            # drop retired rows and columns; the order, hence every tie-break, is kept
            keep = np.array(sorted(self.members))
            self.gain, self.share = self.gain.take(keep, 0).take(keep, 1), self.share[keep]
            self.members = {new: self.members[old] for new, old in enumerate(keep.tolist())}
            self._reset(np.searchsorted(keep, hubs).tolist())

    def _merge_gains(self, u: int, v: int) -> tuple[np.ndarray, np.ndarray]:
        """Row/column v of the gains after merging u into v (row v is returned), and the
        neighbours of u; u retired. Rows that are neighbours of neither keep -inf at u and v."""
        gain, share = self.gain, self.share
        gain_u, row = gain[u], gain[v]
        # neighbours of u (few): plus its gain if v's too, else u's gain minus 2 a_v a_w
        near_u = (gain_u > _NEG_0D).nonzero()[0]
        if len(near_u) <= 32:  # in Python floats: the same float operations, fewer calls
            share_v = share.item(v)
            joined = []
            for g_u, g_v, share_w in zip(gain_u[near_u].tolist(), row[near_u].tolist(), share[near_u].tolist()):
                if g_v > _NEG:
                    joined.append(g_v + g_u)
                else:
                    twice = share_v * share_w
                    joined.append(g_u - (twice + twice))
        else:
            gu, gv = gain_u[near_u], row[near_u]
            twice_v = share[near_u] * share[v : v + 1]
            twice_v += twice_v  # doubled by an addition, as networkx does
            joined = gu - twice_v
            np.add(gv, gu, out=joined, where=gv > _NEG_0D)
        # neighbours of v only (most, when v is a hub): minus 2 a_u a_w; of neither: stays -inf
        twice_u = np.multiply(share, share.item(u), out=self.twice)
        twice_u += twice_u
        np.subtract(row, twice_u, out=row)
        row[near_u] = joined
        row[u] = row[v] = _NEG
        gain[:, v] = row
        gain[:, u][near_u] = _NEG  # u's other entries are -inf already; its row is not read again
        share[v] += share[u]
        return row, near_u

    def _update_rows(self, u: int, v: int, row: np.ndarray) -> None:
        """Row maxima after a merge into a community that was no hub. If it is one now (u
        was), column v leaves them and row v joins the hub rows; else its new value wins
        every row whose maximum it now reaches. Rows whose maximum sat at u or v are
        re-scanned."""
        best, best_at = self.best, self.best_at
        lost = (best_at == u) | (best_at == v)
        if v in self.hubs:
            best[v], best_at[v] = _NEG, -1
            lost[v] = False
        else:
            better = (row > best) | ((row == best) & (v < best_at))
            better &= ~lost
            better[self.hub_columns] = False
            best[better], best_at[better] = row[better], v
            lost[v] = True
        lost[u] = False
        redo = lost.nonzero()[0]
        if len(redo):
            self._rescan(redo)

    def _update_hubs(self, u: int, v: int, row: np.ndarray) -> None:
        """Hub row maxima: another hub row changed at u (now -inf) and v; row v, if a hub's,
        is new."""
        gain, hub_best, hub_at = self.gain, self.hub_best, self.hub_at
        into = self.hubs.index(v) if v in self.hubs else -1
        if into >= 0:  # found again below; meanwhile neither re-scanned nor updated
            hub_best[into], hub_at[into] = np.inf, -1
        values = row[self.hub_columns].tolist()
        for slot, (value, top, at) in enumerate(zip(values, hub_best, hub_at)):
            if at == u or at == v:
                hub = self.hubs[slot]
                at = int(gain[hub].argmax())
                hub_best[slot], hub_at[slot] = float(gain[hub, at]), at
            elif value >= top and (value > top or v < at):
                hub_best[slot], hub_at[slot] = value, v
        if into >= 0:
            at = int(row.argmax())
            hub_best[into], hub_at[into] = float(row[at]), at


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

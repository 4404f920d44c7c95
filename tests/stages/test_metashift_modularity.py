"""`modularity.merge_graph` step by step: after every merge the row and hub maxima it
keeps against the gains they summarise, and the gains against the plain rule."""

from __future__ import annotations

import numpy as np

from stages.metashift.modularity import _Gains

_NEG = -np.inf


def _hub_graph(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sparse background, a few hubs adjacent to most nodes (node 0 among them), and
    leaves adjacent to hubs only; unweighted, so gains tie."""
    hubs = rng.choice(np.arange(1, n), int(rng.integers(3, 24)), replace=False)
    hubs[0] = 0
    adj = rng.random((n, n)) < rng.uniform(0.01, 0.06)
    adj[hubs] |= rng.random((len(hubs), n)) < rng.uniform(0.4, 0.95)
    leaves = rng.choice(n, n // 4, replace=False)
    adj[leaves] = False
    adj[:, leaves] = False
    adj[np.ix_(hubs, leaves)] = rng.random((len(hubs), len(leaves))) < 0.5
    adj = np.triu(adj | adj.T, 1)
    return adj | adj.T


def _tied_graph(rng: np.random.Generator, n: int, centre: int) -> np.ndarray:
    """A union of random Hamiltonian cycles (equal degrees: equal gains), plus `centre`
    nodes adjacent to all, node 0 first."""
    adj = np.zeros((n, n), bool)
    for _ in range(int(rng.integers(1, 4))):
        order = rng.permutation(n)
        adj[order, np.roll(order, 1)] = True
    if centre:
        adj[0] = adj[rng.choice(np.arange(1, n), centre - 1, replace=False)] = True
    adj = adj | adj.T
    np.fill_diagonal(adj, False)
    return adj


def _first_max(values: np.ndarray) -> tuple[float, int]:
    top = values.max()
    return top, int(values.argmax()) if top > _NEG else -1


def _check(gains: _Gains) -> None:
    gain, hubs = gains.gain, gains.hubs
    live = sorted(gains.members)
    retired = np.setdiff1d(np.arange(len(gain)), live)
    assert hubs == sorted(hubs) and set(hubs) <= set(live)
    assert (gain[np.ix_(live, retired)] == _NEG).all()
    plain_columns = np.ones(len(gain), bool)
    plain_columns[hubs] = False
    for r in live:
        if r in hubs:
            assert (gains.best[r], gains.best_at[r]) == (_NEG, -1)
            top, at = _first_max(gain[r])
            slot = hubs.index(r)
            assert gains.hub_best[slot] == top
            assert at < 0 or gains.hub_at[slot] == at
        else:
            assert (gains.best[r], gains.best_at[r]) == _first_max(np.where(plain_columns, gain[r], _NEG))
    assert (gains.best[retired] == _NEG).all()
    sub = gain[np.ix_(live, live)]
    assert (sub == sub.T).all()
    top = sub.max()
    i, j = np.unravel_index(sub.argmax(), sub.shape)
    assert gains.next_pair() == ((live[i], live[j]) if top >= 0 else (-1, -1))


class _Plain:
    """The gains by the rule of `official`'s module doc, one Python float at a time."""

    def __init__(self, adj: np.ndarray, q0: float):
        self.share = [float(d) * q0 * 0.5 for d in adj.sum(axis=1)]
        self.dq = {i: {} for i in range(len(adj))}
        for i, j in zip(*np.nonzero(adj)):
            twice = self.share[i] * self.share[j]
            self.dq[i][j] = q0 - (twice + twice)

    def merge(self, u: int, v: int) -> None:
        dq, share = self.dq, self.share
        du, dv = dq.pop(u), dq[v]
        for w in (set(du) | set(dv)) - {u, v}:
            if w in du and w in dv:
                value = dv[w] + du[w]
            elif w in dv:
                twice = share[u] * share[w]
                value = dv[w] - (twice + twice)
            else:
                twice = share[v] * share[w]
                value = du[w] - (twice + twice)
            dv[w] = dq[w][v] = value
            dq[w].pop(u, None)
        dv.pop(u, None)
        share[v] += share[u]

    def matrix(self, live: list[int]) -> np.ndarray:
        m = np.full((len(live), len(live)), _NEG)
        at = {c: k for k, c in enumerate(live)}
        for c in live:
            for w, value in self.dq[c].items():
                m[at[c], at[w]] = value
        return m


def test_merge_graph_maxima_equal_the_gains_after_every_merge():
    """Random hub graphs, tied degrees with and without hubs; every step's pair is the
    first largest gain of the live communities, and the gains are the plain rule's."""
    rng = np.random.default_rng(3)
    graphs = [_hub_graph(rng, int(rng.integers(65, 160))) for _ in range(8)]
    graphs += [_tied_graph(rng, int(rng.integers(65, 120)), int(rng.integers(1, 5))) for _ in range(8)]
    graphs += [_tied_graph(rng, int(rng.integers(12, 64)), 0) for _ in range(8)]  # no hubs
    nine = np.zeros((9, 9), bool)  # a new gain equals a row's maximum at a later column
    for a, b in [(0, 2), (0, 4), (0, 6), (1, 2), (1, 4), (1, 6), (1, 8), (2, 4), (2, 5), (2, 7), (2, 8), (3, 5),
                 (3, 6), (4, 5), (4, 6), (4, 8), (5, 7), (7, 8)]:  # fmt: skip
        nine[a, b] = nine[b, a] = True
    graphs.append(nine)
    for adj in graphs:
        gains, plain = _Gains(adj, 2.0 / adj.sum()), _Plain(adj, 2.0 / adj.sum())
        assert bool(gains.hubs) == (len(adj) > 64)
        while True:
            _check(gains)
            live = sorted(gains.members)
            node = {c: gains.members[c][0] for c in live}  # a community's first member keeps its name
            assert np.array_equal(gains.gain[np.ix_(live, live)], plain.matrix([node[c] for c in live]))
            u, v = gains.next_pair()
            if u < 0:
                break
            gains.merge(u, v)
            plain.merge(node[u], node[v])
        assert sorted(i for m in gains.members.values() for i in m) == list(range(len(adj)))

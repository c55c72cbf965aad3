"""Shortest monotone path through a cost matrix, with the MATLAB toolbox's exact tie-breaking.

The MATLAB DAVIS-2016 toolbox runs Boost.Graph's Dijkstra (4-ary indirect heap) on the grid
graph whose edges (i, j-1)->(i, j), (i-1, j)->(i, j), (i-1, j-1)->(i, j) cost C(i, j)
(docs/evaluation-davis16.md §6.12). Its distances equal the dynamic program
d(i, j) = C(i, j) + min(d(i-1, j-1), d(i-1, j), d(i, j-1)) bit for bit, and each node keeps as
predecessor the first-popped neighbour reaching that minimum. So the path is computed with the
vectorised dynamic program and backtracked; only when two candidate predecessors of a path node
have exactly equal distances does the heap's pop order matter, and then (rarely) the exact heap
emulation in :func:`_dijkstra_path` is run.
"""
from __future__ import annotations

import numpy as np

Path = list[tuple[int, int]]


def _distances(cost: np.ndarray) -> np.ndarray:
    """Dynamic-program distances from (0, 0), computed one anti-diagonal at a time."""
    n1, n2 = cost.shape
    d = np.full((n1 + 1, n2 + 1), np.inf)  # padded by one row/column of +inf at the top/left
    d[1, 1] = 0.0
    for k in range(1, n1 + n2 - 1):
        i = np.arange(max(0, k - n2 + 1), min(k, n1 - 1) + 1)
        j = k - i
        best = np.minimum(np.minimum(d[i, j], d[i, j + 1]), d[i + 1, j])
        d[i + 1, j + 1] = best + cost[i, j]
    return d[1:, 1:]


def _backtrack(cost: np.ndarray, d: np.ndarray) -> Path | None:
    """Path from the end to (0, 0) following unique predecessors; None on an exact tie."""
    i, j = cost.shape[0] - 1, cost.shape[1] - 1
    path = [(i, j)]
    while i or j:
        target = d[i, j]
        c = cost[i, j]
        cands = [(p, q) for p, q in ((i - 1, j - 1), (i - 1, j), (i, j - 1))
                 if p >= 0 and q >= 0 and d[p, q] + c == target]
        if len(cands) > 1:
            values = [d[p] for p in cands]
            low = min(values)
            if values.count(low) > 1:
                return None
            cands = [cands[values.index(low)]]  # strictly smaller key is popped first
        i, j = cands[0]
        path.append((i, j))
    return path


def _dijkstra_path(cost: np.ndarray) -> Path:
    """Boost dijkstra_shortest_paths with a 4-ary heap, emulated step by step (slow, exact)."""
    n1, n2 = cost.shape
    n = n1 * n2
    c = cost.ravel().tolist()
    inf = float("inf")
    dist = [inf] * n
    pred = list(range(n))
    pos = [-1] * n  # -1: never seen, -2: popped, else index in heap
    dist[0] = 0.0
    heap = [0]
    pos[0] = 0
    end = n - 1

    def sift_up(k: int) -> None:
        node = heap[k]
        key = dist[node]
        while k:
            parent = (k - 1) >> 2
            pnode = heap[parent]
            if key < dist[pnode]:
                heap[k] = pnode
                pos[pnode] = k
                k = parent
            else:
                break
        heap[k] = node
        pos[node] = k

    while heap:
        u = heap[0]
        pos[u] = -2
        last = heap.pop()
        if heap:
            heap[0] = last
            pos[last] = 0
            k, size, key = 0, len(heap), dist[last]
            while True:
                first = 4 * k + 1
                if first >= size:
                    break
                best, best_key = first, dist[heap[first]]
                for child in range(first + 1, min(first + 4, size)):
                    ck = dist[heap[child]]
                    if ck < best_key:
                        best, best_key = child, ck
                if best_key < key:
                    heap[k], heap[best] = heap[best], last
                    pos[heap[k]] = k
                    pos[last] = best
                    k = best
                else:
                    break
        if u == end:
            break
        ui, uj = divmod(u, n2)
        du = dist[u]
        for v, ok in ((u + 1, uj + 1 < n2), (u + n2, ui + 1 < n1), (u + n2 + 1, ui + 1 < n1 and uj + 1 < n2)):
            if not ok:
                continue
            state = pos[v]
            if state == -2:
                continue
            nd = du + c[v]
            if state == -1:
                dist[v] = nd
                pred[v] = u
                heap.append(v)
                sift_up(len(heap) - 1)
            elif nd < dist[v]:
                dist[v] = nd
                pred[v] = u
                sift_up(state)
    path = [end]
    while path[-1] != 0:
        path.append(pred[path[-1]])
    return [divmod(v, n2) for v in path]


def shortest_path(cost: np.ndarray) -> Path:
    """Cells of the toolbox's shortest path, listed from (n1-1, n2-1) back to (0, 0)."""
    path = _backtrack(cost, _distances(cost))
    return path if path is not None else _dijkstra_path(cost)


def cyclic_path(cost: np.ndarray) -> Path:
    """Matching path of t_stability.m: shortest path, then rerun with the matrix shifted so
    that the path's cheapest cell (excluding (0, 0), nearest the end on ties) becomes the last
    cell; cells are mapped back to the unshifted matrix (listed end to start)."""
    n1, n2 = cost.shape
    path = shortest_path(cost)
    best_i, best_j, best_c = 0, 0, np.inf
    for i, j in path[:-1]:
        if cost[i, j] < best_c:
            best_i, best_j, best_c = i, j, cost[i, j]
    s1, s2 = best_i + 1, best_j + 1
    shifted = np.roll(cost, (-s1, -s2), axis=(0, 1))
    return [((i + s1) % n1, (j + s2) % n2) for i, j in shortest_path(shifted)]


def bijective_cost(cost: np.ndarray, path: Path) -> float:
    """Mean cost of the one-to-one pairs kept from ``path`` (get_bijective_matching.m)."""
    by_a: dict[int, tuple[float, int]] = {}
    for i, j in path:  # path order is end to start: first met wins ties
        c = cost[i, j]
        if i not in by_a or c < by_a[i][0]:
            by_a[i] = (c, j)
    by_b: dict[int, float] = {}
    for i in sorted(by_a):
        c, j = by_a[i]
        if j not in by_b or c < by_b[j]:
            by_b[j] = c
    values = [by_b[j] for j in sorted(by_b)]
    return float(np.cumsum(values)[-1] / len(values))

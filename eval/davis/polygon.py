"""Mask -> closed polygons, as the MATLAB DAVIS-2016 toolbox's ``mask2pce(mask, 3)`` returns them.

Implements the polycont pipeline of docs/evaluation-davis16.md §6.1-§6.7: boundary
sides on a doubled grid, piece tracing between 4-way junctions, joining pieces into closed
curves, hole detection, corner coordinates, the two psimpl Douglas-Peucker passes (tolerance 0.1
then 3 in doubled-grid units, with the radial-distance pre-pass and the float32 projection
ratio), orientation (outlines clockwise, holes counter-clockwise), halving and dropping curves
with at most 3 points. Only the curve that T uses (the longest) gets its hole status and
orientation computed, since neither changes any curve's length.
"""
from __future__ import annotations

import struct

import numpy as np

_F32 = struct.Struct("f")
_F32_EXACT = 1 << 24  # integers below this are exact in float32
_SMALL_CHAIN = 48  # chains shorter than this are searched in pure Python (less overhead)
# Douglas-Peucker tolerances in doubled-grid units (polycont simplify.hpp: 0.1, then cont_th=3).
SIMPLIFY_TOLERANCES = (0.1, 3.0)


class _Grid:
    """Boundary sides of a padded mask on the doubled grid, stored flat for fast Python access."""

    def __init__(self, mask: np.ndarray) -> None:
        h, w = mask.shape
        # the doubled grid (X in 0..2H, Y in 0..2W) is stored with one extra ring of cells, so
        # cell = (X + 1) * stride + (Y + 1) and every neighbour of a grid point is addressable
        self.stride = 2 * w + 3
        padded = np.zeros((h + 2, w + 2), dtype=bool)
        padded[1:-1, 1:-1] = mask
        cells = np.zeros((2 * h + 3, 2 * w + 3), dtype=np.uint8)
        grid = cells[1:-1, 1:-1]
        # vertical sides (2r+1, 2c+2), r = 0..H-1, c = -1..W-1: pixels (r, c) | (r, c+1)
        grid[1::2, 0::2] = padded[1:-1, :-1] != padded[1:-1, 1:]
        # horizontal sides (2r+2, 2c+1), r = -1..H-1, c = 0..W-1: pixels (r, c) / (r+1, c)
        grid[0::2, 1::2] = padded[:-1, 1:-1] != padded[1:, 1:-1]
        self.grid = grid
        self.boundary = bytearray(cells.tobytes())
        self.visited = bytearray(len(self.boundary))
        # junctions: interior corners (even, even) with all four sides on the boundary
        horizontal, vertical = grid[0::2, 1::2], grid[1::2, 0::2]
        four = (horizontal[1:-1, 1:] & horizontal[1:-1, :-1] & vertical[1:, 1:-1]
                & vertical[:-1, 1:-1])
        rows, cols = np.nonzero(four)
        self.junction_cells = self.cell(2 * rows + 2, 2 * cols + 2).tolist()

    def cell(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flat cell index of doubled-grid points (X, Y)."""
        return (x + 1) * self.stride + (y + 1)

    def coords(self, cells: np.ndarray) -> np.ndarray:
        """(k, 2) doubled-grid (X, Y) integers of flat cell indices."""
        cells = np.asarray(cells, dtype=np.int64)
        return np.stack([cells // self.stride - 1, cells % self.stride - 1], axis=1)

    def trace(self, corner: int, side: int, is_junction: dict) -> list[int]:
        """Follow boundary sides from junction ``corner`` through ``side`` to the next junction."""
        s = self.stride
        boundary, visited = self.boundary, self.visited
        visited[corner] = 1
        prev = corner
        piece = []
        while True:
            if not (side // s) % 2:  # X odd (cell row X + 1 even): vertical side, ends (X+1, Y) then (X-1, Y)
                first, second = side + s, side - s
            else:
                first, second = side - 1, side + 1
            if not visited[first]:
                nxt = first
            elif not visited[second]:
                nxt = second
            else:
                nxt = first if first != prev else second
            visited[side] = 1
            visited[nxt] = 1
            piece.append(side)
            if nxt in is_junction:
                return piece
            for cand in (nxt + s, nxt - s, nxt + 1, nxt - 1):
                if boundary[cand] and not visited[cand]:
                    side = cand
                    break
            else:  # pragma: no cover - every non-junction corner on a curve has two sides
                raise RuntimeError("broken boundary trace")
            prev = nxt


def _trace_pieces(grid: _Grid) -> tuple[list[list[int]], list[tuple[int, int]], list[int]]:
    """Pieces (lists of side cells), their (origin, end) junction ids, and the junction cells."""
    s = grid.stride
    junction_cells = list(grid.junction_cells)
    is_junction = {cell: jid for jid, cell in enumerate(junction_cells)}
    pieces: list[list[int]] = []
    ends: list[tuple[int, int]] = []
    stack = []
    for jid, cell in enumerate(junction_cells):
        for side in (cell + 1, cell + s, cell - 1, cell - s):
            stack.append((jid, side))
    visited = grid.visited
    while stack:
        jid, side = stack.pop()
        if visited[side]:
            continue
        piece = grid.trace(junction_cells[jid], side, is_junction)
        pieces.append(piece)
        ends.append((jid, is_junction[_end_corner(piece, junction_cells[jid])]))
    # junction-free loops: scan vertical sides in raster order
    vert = grid.grid[1::2, 0::2]
    rows, cols = np.nonzero(vert)
    for side in grid.cell(2 * rows + 1, 2 * cols).tolist():
        if visited[side]:
            continue
        corner = side - s
        jid = len(junction_cells)
        junction_cells.append(corner)
        is_junction[corner] = jid
        pieces.append(grid.trace(corner, side, is_junction))
        ends.append((jid, jid))
    return pieces, ends, junction_cells


def _end_corner(piece: list[int], start: int) -> int:
    """Corner reached at the end of ``piece`` when it starts at corner ``start``."""
    corner = start
    for side in piece:
        corner = 2 * side - corner
    return corner


def _adjacent_side(piece: list[int], origin: int, junction: int) -> int:
    return piece[0] if origin == junction else piece[-1]


def _join_curves(pieces: list[list[int]], ends: list[tuple[int, int]], junction_cells: list[int]
                 ) -> list[tuple[int, list[int]]]:
    """Join pieces into closed curves (lines2jordan); returns (start junction id, sides)."""
    n_junctions = len(junction_cells)
    unused: list[list[int]] = [[] for _ in range(n_junctions)]
    for number, (a, b) in enumerate(ends):
        unused[a].append(number)
        if b != a:
            unused[b].append(number)
    for lst in unused:
        lst.sort()
    used = [False] * len(pieces)
    pending = sorted((j for j in range(n_junctions) if unused[j]), reverse=True)
    curves: list[tuple[int, list[int]]] = []

    def take(number: int) -> None:
        used[number] = True
        a, b = ends[number]
        unused[a].remove(number)
        if b != a:
            unused[b].remove(number)

    def other_end(number: int, junction: int) -> int:
        a, b = ends[number]
        return b if a == junction else a

    for start in pending:
        while unused[start]:
            walk: list[tuple[int, int]] = []
            where: dict[int, int] = {}
            junction = start
            number = unused[junction][0]
            arriving = None
            while True:
                if arriving is not None:
                    options = unused[junction]
                    number = options[0]
                    if len(options) > 1 and _opposite(
                            _adjacent_side(pieces[number], ends[number][0], junction),
                            _adjacent_side(pieces[arriving[0]], ends[arriving[0]][0], junction),
                            junction_cells[junction]):
                        number = options[1]
                take(number)
                where[junction] = len(walk)
                walk.append((junction, number))
                junction = other_end(number, junction)
                arriving = (number, junction)
                if junction in where:
                    k = where[junction]
                    sides: list[int] = []
                    for step_junction, step_piece in walk[k:]:
                        piece = pieces[step_piece]
                        sides.extend(piece if ends[step_piece][0] == step_junction else piece[::-1])
                        del where[step_junction]
                    curves.append((junction, sides))
                    del walk[k:]
                    if not walk:
                        break
                    arriving = (walk[-1][1], junction)
    return curves


def _opposite(side_a: int, side_b: int, corner: int) -> bool:
    """True when two sides touching ``corner`` are straight opposite (same X or same Y).

    That is exactly when the corner is their midpoint on the doubled grid.
    """
    return side_a != side_b and side_a + side_b == 2 * corner


def _corner_cells(start_cell: int, sides: list[int]) -> np.ndarray:
    """Closed list of corner cells a curve passes (first = last): c_{k+1} = 2 s_k - c_k."""
    cells = np.asarray(sides, dtype=np.int64)
    sign = np.where(np.arange(cells.size) % 2 == 0, -1, 1)  # (-1)^(i+1)
    e = np.empty(cells.size + 1, dtype=np.int64)
    e[0] = start_cell
    e[1:] = start_cell + 2 * np.cumsum(sign * cells)
    return np.where(np.arange(cells.size + 1) % 2 == 0, e, -e)


def _f32(x: float) -> float:
    """Round a Python float to the nearest float32 value."""
    return _F32.unpack(_F32.pack(x))[0]


def _farthest_small(points: list[list[int]], first: int, last: int) -> tuple[int, float]:
    """Pure-Python psimpl FindKey for short chains: (index, distance²) of the farthest
    interior point from segment first-last, the later point on ties."""
    fx, fy = points[first]
    lx, ly = points[last]
    vx, vy = lx - fx, ly - fy
    cs = vx * vx + vy * vy
    best, best_d2 = first, 0.0
    for k in range(first + 1, last):
        px, py = points[k]
        wx, wy = px - fx, py - fy
        cv = wx * vx + wy * vy
        if cv <= 0:
            d2 = float(wx * wx + wy * wy)
        elif cs <= cv:
            d2 = float((px - lx) ** 2 + (py - ly) ** 2)
        else:
            if cv < _F32_EXACT and cs < _F32_EXACT:  # ints exact in float32: one rounding
                t = _f32(cv / cs)  # double then single rounding equals a float32 division
            else:
                t = _f32(_f32(cv) / _f32(cs))
            qx, qy = px - (fx + t * vx), py - (fy + t * vy)
            d2 = qx * qx + qy * qy
        if d2 >= best_d2:
            best, best_d2 = k, d2
    return best, best_d2


def _farthest(points: np.ndarray, first: int, last: int) -> tuple[int, float]:
    """Vectorised psimpl FindKey (segment_distance2 with the float32 projection ratio)."""
    f, l = points[first], points[last]
    p = points[first + 1:last]
    v = l - f
    w = p - f
    cv = w @ v
    cs = v @ v
    d_first = (w * w).sum(axis=1)
    d_last = ((p - l) ** 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # cs == 0 only on the closed chain
        t = (cv.astype(np.float32) / np.float32(cs)).astype(np.float64)
    q = p - (f + t[:, None] * v)
    d_proj = (q * q).sum(axis=1)
    d2 = np.where(cv <= 0, d_first, np.where(cs <= cv, d_last, d_proj))
    k = d2.size - 1 - int(np.argmax(d2[::-1]))  # later point wins ties
    return first + 1 + k, float(d2[k])


def _radial_distance(points: np.ndarray, tol: float) -> np.ndarray:
    """psimpl RadialDistance: drop points closer than ``tol`` to the last kept one."""
    n = len(points)
    if n < 3:
        return points
    tol2 = tol * tol
    keep = [0]
    pts = points.tolist()
    lx, ly = pts[0]
    for i in range(1, n - 1):
        x, y = pts[i]
        if (x - lx) ** 2 + (y - ly) ** 2 < tol2:
            continue
        keep.append(i)
        lx, ly = x, y
    keep.append(n - 1)
    return points[keep]


def _douglas_peucker(points: np.ndarray, tol: float) -> np.ndarray:
    """psimpl DouglasPeucker (radial pre-pass, later point wins ties, strict > tol²)."""
    points = _radial_distance(points, tol)
    n = len(points)
    if n < 3:
        return points
    tol2 = tol * tol
    as_list = points.tolist()
    as_float = points.astype(np.float64)
    keys = np.zeros(n, dtype=bool)
    keys[0] = keys[-1] = True
    stack = [(0, n - 1)]
    while stack:
        first, last = stack.pop()
        if last - first < 2:
            continue
        if last - first < _SMALL_CHAIN:
            key, d2 = _farthest_small(as_list, first, last)
        else:
            key, d2 = _farthest(as_float, first, last)
        if d2 > tol2:
            keys[key] = True
            stack.append((key, last))
            stack.append((first, key))
    return points[keys]


def _is_clockwise(points: np.ndarray) -> bool:
    """clockwise_sort.hpp: sign of a float32 running sum of (X_{i+1}-X_i)(Y_{i+1}+Y_i)."""
    x, y = points[:, 0], points[:, 1]
    terms = ((x[1:] - x[:-1]) * (y[1:] + y[:-1])).astype(np.float32)
    return bool(np.cumsum(terms, dtype=np.float32)[-1] > 0) if terms.size else False


def _is_inside_odd(point: np.ndarray, polygons: list[np.ndarray]) -> bool:
    """True when ``point`` lies inside an odd number of the closed ``polygons`` (vertex lists,
    the closing edge implied); even-odd crossing test, all polygons in one vectorised pass."""
    if not polygons:
        return False
    start = np.concatenate(polygons).astype(np.float64)
    stop = np.concatenate([np.roll(poly, -1, axis=0) for poly in polygons]).astype(np.float64)
    owner = np.repeat(np.arange(len(polygons)), [len(poly) for poly in polygons])
    px, py = float(point[0]), float(point[1])
    crosses = (start[:, 1] > py) != (stop[:, 1] > py)
    start, stop, owner = start[crosses], stop[crosses], owner[crosses]
    x_at = start[:, 0] + (py - start[:, 1]) * (stop[:, 0] - start[:, 0]) / (stop[:, 1] - start[:, 1])
    inside = np.bincount(owner[px < x_at], minlength=len(polygons)) % 2
    return bool(inside.sum() % 2)


def longest_curve(mask: np.ndarray) -> np.ndarray | None:
    """The polygon T uses for ``mask``: (row, column) float64 corners, closed, or None.

    Equivalent to taking the curve with the most points among ``mask2pce(mask, 3)`` (first on
    ties) in the MATLAB toolbox; None when no curve survives (empty mask or only tiny parts).
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    if not mask.any():
        return None
    grid = _Grid(mask)
    pieces, ends, junction_cells = _trace_pieces(grid)
    curves = _join_curves(pieces, ends, junction_cells)
    # Simplification never adds points, so only curves with enough corners (sides + 1) can
    # become the longest; visit them from the most corners down and keep the first (in curve
    # order) of the longest simplified ones.
    best, best_points, best_len = -1, None, 3  # curves with <= 3 points are dropped
    for index in sorted(range(len(curves)), key=lambda k: -len(curves[k][1])):
        start, sides = curves[index]
        if len(sides) + 1 < best_len:
            break
        points = grid.coords(_corner_cells(junction_cells[start], sides))
        for tol in SIMPLIFY_TOLERANCES:
            points = _douglas_peucker(points, tol)
        if len(points) > best_len or (len(points) == best_len and index < best):
            best, best_points, best_len = index, points, len(points)
    if best_points is None:
        return None
    others = [grid.coords(sides) for i, (_, sides) in enumerate(curves) if i != best]
    first_side = grid.coords(curves[best][1][:1])[0]
    if _is_clockwise(best_points) == _is_inside_odd(first_side, others):
        best_points = best_points[::-1]
    return best_points.astype(np.float64) / 2.0

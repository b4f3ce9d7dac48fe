"""Collision map of a scene for the camera: free space, clearance, sampling and path planning.

RELIC (arXiv 2512.04040 §3) records human-driven camera paths that never pass through geometry.
Here the camera is a sphere of radius ``camera_radius``. Its centre ``(x, y)`` is *free* when

- the sphere stays inside the walkable space: indoors the union of room interiors (inside the
  inner wall faces) and doorway gaps between rooms; outdoors the ``camera_bounds`` square, and
- the sphere stays outside every object's footprint cylinder (``ObjectSpec.footprint_radius``);
  objects are treated as full-height columns, so the check is 2D,

and a 3D point is free when additionally its height lies in :attr:`FreeSpace.z_range` (the scene's
``camera_z`` range, clipped so the sphere stays under ceilings and door lintels).

All checks (:meth:`FreeSpace.is_free`, :meth:`FreeSpace.clearance`) are exact: they evaluate the
signed distance to the obstacle set analytically (walls are axis-aligned boxes, objects discs).
The occupancy grid (resolution ``resolution`` metres) holds that exact clearance at the cell
centres and is used only for sampling and A* planning. Units are metres, frames as in
``docs/conventions.md`` (world z up).
"""

from __future__ import annotations

import heapq
import math

import numpy as np
from scipy import ndimage

from reverie.worlds.spec import RoomSpec, SceneSpec

OPEN_BORDER = 1.0
"""Thickness (m) of the virtual walls placed just outside an open scene's camera_bounds."""
PREFERRED_CLEARANCE = 0.5
"""A* step costs grow as a cell's clearance falls below this (m), keeping paths off walls."""
CLEARANCE_WEIGHT = 2.0
"""Extra A* cost factor for a cell with zero clearance (linear down to 0 at PREFERRED_CLEARANCE)."""
LOS_STEP = 0.5
"""Line-of-sight checks sample a segment every ``LOS_STEP * resolution`` metres."""
_NEIGHBOURS = tuple(
    (dx, dy, math.hypot(dx, dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy
)


def _rect_signed_distance(xy: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """Signed distance from points to axis-aligned rectangles (negative inside).

    Shapes: xy (N, 2), rects (K, 4) as (x0, y0, x1, y1) -> (N, K) metres.
    """
    x, y = xy[:, :1], xy[:, 1:]  # (N, 1)
    dx = np.maximum(rects[:, 0] - x, x - rects[:, 2])  # (N, K), negative inside along x
    dy = np.maximum(rects[:, 1] - y, y - rects[:, 3])
    outside = np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
    return np.where((dx <= 0) & (dy <= 0), np.maximum(dx, dy), outside)


def _wall_boxes(room: RoomSpec) -> list[tuple[float, float, float, float]]:
    """The room's four walls as (x0, y0, x1, y1) boxes, with door gaps cut out."""
    t = room.wall_thickness
    boxes = []
    for side in ("south", "east", "north", "west"):
        along = (room.x0, room.x1) if side in ("south", "north") else (room.y0, room.y1)
        cuts = sorted(
            (d.center - d.width / 2, d.center + d.width / 2) for d in room.doors if d.side == side
        )
        pieces, lo = [], along[0]
        for c0, c1 in cuts:
            if c0 > lo:
                pieces.append((lo, c0))
            lo = max(lo, c1)
        if lo < along[1]:
            pieces.append((lo, along[1]))
        for a0, a1 in pieces:
            boxes.append(
                {
                    "south": (a0, room.y0, a1, room.y0 + t),
                    "north": (a0, room.y1 - t, a1, room.y1),
                    "west": (room.x0, a0, room.x0 + t, a1),
                    "east": (room.x1 - t, a0, room.x1, a1),
                }[side]
            )
    return boxes


class FreeSpace:
    """Where the camera centre may be: exact geometric checks plus a planning grid.

    Build it with :meth:`from_scene`. Coordinates are world metres; 2D points are ``(x, y)``,
    3D points ``(x, y, z)``. Grid arrays are indexed ``[iy, ix]`` with cell centres
    ``(xs[ix], ys[iy])``.

    Attributes:
        camera_radius: radius (m) of the camera sphere.
        resolution: grid cell size (m).
        bounds: (x0, y0, x1, y1) grid extent = the scene's camera_bounds.
        z_range: (min, max) allowed camera height (m).
        xs, ys: (nx,), (ny,) cell-centre coordinates.
        clearance_grid: (ny, nx) exact signed clearance at cell centres (m, < 0 = not free).
        free_grid: (ny, nx) bool, ``clearance_grid >= 0``.
        labels: (ny, nx) int connected-component label of free cells (8-connected; 0 = not free).
    """

    def __init__(
        self,
        blocks,
        discs,
        regions,
        bounds,
        z_range,
        camera_radius: float,
        resolution: float,
        room_rects=(),
    ) -> None:
        """Low-level constructor; most callers want :meth:`from_scene`.

        Args:
            blocks: (K, 4) obstacle boxes (x0, y0, x1, y1), metres (wall pieces).
            discs: (M, 3) obstacle discs (x, y, radius), metres (object footprints).
            regions: (R, 4) walkable rectangles; a free centre lies in at least one of them.
            bounds: (x0, y0, x1, y1) extent of the planning grid.
            z_range: (min, max) allowed camera height, metres.
            camera_radius: camera sphere radius, metres.
            resolution: grid cell size, metres.
            room_rects: (n_rooms, 4) room rectangles for :meth:`room_of` (empty outdoors).

        Raises:
            ValueError: negative radius, non-positive resolution, empty height range or no
                walkable region.
        """
        if not (camera_radius >= 0 and resolution > 0):
            raise ValueError(
                f"need camera_radius >= 0 and resolution > 0, got {camera_radius}, {resolution}"
            )
        if not z_range[0] <= z_range[1]:
            raise ValueError(
                f"empty camera height range {z_range} (ceiling or door too low for "
                f"a camera of radius {camera_radius})"
            )
        self.blocks = np.asarray(blocks, dtype=np.float64).reshape(-1, 4)  # (K, 4) obstacles
        self.discs = np.asarray(discs, dtype=np.float64).reshape(-1, 3)  # (M, 3) x, y, radius
        self.regions = np.asarray(regions, dtype=np.float64).reshape(-1, 4)  # walkable rects
        self.room_rects = np.asarray(room_rects, dtype=np.float64).reshape(-1, 4)
        if not len(self.regions):
            raise ValueError("FreeSpace needs at least one walkable region")
        self._rects = np.concatenate([self.blocks, self.regions])  # (K + R, 4)
        self.bounds = tuple(float(b) for b in bounds)
        self.z_range = (float(z_range[0]), float(z_range[1]))
        self.camera_radius = float(camera_radius)
        self.resolution = float(resolution)
        x0, y0, x1, y1 = self.bounds
        nx = max(1, math.ceil((x1 - x0) / resolution - 1e-9))
        ny = max(1, math.ceil((y1 - y0) / resolution - 1e-9))
        self.xs = x0 + (np.arange(nx) + 0.5) * resolution  # (nx,)
        self.ys = y0 + (np.arange(ny) + 0.5) * resolution  # (ny,)
        grid_xy = np.stack(np.meshgrid(self.xs, self.ys), axis=-1)  # (ny, nx, 2)
        self.clearance_grid = self._signed_clearance(grid_xy.reshape(-1, 2)).reshape(ny, nx)
        self.free_grid = self.clearance_grid >= 0
        self.labels = ndimage.label(self.free_grid, structure=np.ones((3, 3)))[0]
        # A* step-cost multipliers per cell, as a flat list for the pure-Python search loop.
        shortfall = np.clip(PREFERRED_CLEARANCE - self.clearance_grid, 0, PREFERRED_CLEARANCE)
        self._cost = (1.0 + CLEARANCE_WEIGHT * shortfall / PREFERRED_CLEARANCE).ravel().tolist()
        self._free_flat = self.free_grid.ravel().tolist()

    @classmethod
    def from_scene(
        cls, spec: SceneSpec, camera_radius: float = 0.3, resolution: float = 0.05
    ) -> FreeSpace:
        """Collision map of ``spec`` for a camera sphere of ``camera_radius`` metres.

        Indoor: obstacles are the wall boxes (thickness ``wall_thickness`` inside each room
        rectangle, door gaps cut out); a centre must lie in a room rectangle. Open: virtual walls
        just outside ``camera_bounds``. Both: objects are discs of ``footprint_radius()``.
        The height range is ``spec.camera_z`` clipped to ``[r, min(ceiling, door) - r]``.

        Raises:
            ValueError: on a non-positive resolution, negative radius or empty height range.
        """
        r = camera_radius
        z_lo, z_hi = spec.camera_z[0], spec.camera_z[1]
        x0, y0, x1, y1 = spec.camera_bounds
        if spec.kind == "indoor":
            blocks = [b for room in spec.rooms for b in _wall_boxes(room)]
            regions = [(m.x0, m.y0, m.x1, m.y1) for m in spec.rooms]
            tops = [m.height for m in spec.rooms] + [d.height for m in spec.rooms for d in m.doors]
            z_hi = min(z_hi, min(tops) - r)
        else:
            b = OPEN_BORDER
            blocks = [
                (x0 - b, y0 - b, x0, y1 + b),
                (x1, y0 - b, x1 + b, y1 + b),
                (x0 - b, y0 - b, x1 + b, y0),
                (x0 - b, y1, x1 + b, y1 + b),
            ]
            regions = [(x0, y0, x1, y1)]
        discs = [(o.pos[0], o.pos[1], o.footprint_radius()) for o in spec.objects]
        return cls(
            blocks,
            discs,
            regions,
            spec.camera_bounds,
            (max(z_lo, r), z_hi),
            r,
            resolution,
            room_rects=regions if spec.kind == "indoor" else (),
        )

    # ------------------------------------------------------------------ exact geometry
    def _signed_clearance(self, xy: np.ndarray) -> np.ndarray:
        """Exact signed clearance (m) of points (N, 2) -> (N,); >= 0 exactly where free."""
        rect_d = _rect_signed_distance(xy, self._rects)  # (N, K + R)
        d = rect_d[:, : len(self.blocks)].min(axis=1, initial=np.inf)  # to the nearest wall
        if len(self.discs):
            centre_d = np.hypot(xy[:, :1] - self.discs[:, 0], xy[:, 1:] - self.discs[:, 1])
            d = np.minimum(d, (centre_d - self.discs[:, 2]).min(axis=1))
        out = rect_d[:, len(self.blocks) :].min(axis=1)  # > 0: outside every walkable region
        return np.where(out > 0, -out, d) - self.camera_radius

    def _points(self, points, dims: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
        p = np.asarray(points, dtype=np.float64)
        if p.ndim == 0 or p.shape[-1] not in dims:
            raise ValueError(
                f"points must have shape (..., {' or '.join(map(str, dims))}), got {p.shape}"
            )
        return p.reshape(-1, p.shape[-1]), p.shape[:-1]

    def is_free(self, points) -> np.ndarray:
        """Whether camera centres are collision-free (exact geometric check, not a grid lookup).

        Shapes: points (..., 2) world (x, y) or (..., 3) world (x, y, z), metres -> bool (...).
        3D points must also have z within :attr:`z_range`. NaN points are not free.
        Raises ValueError on a wrong last dimension.
        """
        p, lead = self._points(points, (2, 3))
        free = self._signed_clearance(p[:, :2]) >= 0
        if p.shape[1] == 3:
            free &= (p[:, 2] >= self.z_range[0]) & (p[:, 2] <= self.z_range[1])
        return free.reshape(lead)

    def clearance(self, xy) -> np.ndarray:
        """Distance (m) the camera centre can move in any direction and stay free.

        Equivalently the gap between the camera sphere and the nearest obstacle (wall, object,
        edge of the walkable space). Exact (analytic distance to boxes and discs); 0 where the
        point is not free.

        Shapes: xy (..., 2) world metres -> float64 (...).
        """
        p, lead = self._points(xy, (2,))
        return np.maximum(self._signed_clearance(p), 0.0).reshape(lead)

    def clearance_gradient(self, xy) -> tuple[np.ndarray, np.ndarray]:
        """Signed clearance and its unit gradient (direction away from the nearest obstacle).

        Central finite differences of the exact signed clearance (step resolution / 10).

        Shapes: xy (..., 2) -> clearance (...) metres (negative where not free), gradient (..., 2).
        """
        p, lead = self._points(xy, (2,))
        h = self.resolution / 10
        offsets = np.array([[0, 0], [h, 0], [-h, 0], [0, h], [0, -h]])  # (5, 2)
        c = self._signed_clearance((p[:, None] + offsets).reshape(-1, 2)).reshape(-1, 5)
        grad = np.stack([c[:, 1] - c[:, 2], c[:, 3] - c[:, 4]], axis=-1) / (2 * h)  # (N, 2)
        grad /= np.maximum(np.linalg.norm(grad, axis=-1, keepdims=True), 1e-12)
        return c[:, 0].reshape(lead), grad.reshape(*lead, 2)

    def room_of(self, xy) -> np.ndarray:
        """Index into ``spec.rooms`` of the room rectangle holding each point; -1 if none.

        Open scenes have no rooms (always -1). Shapes: xy (..., 2) -> int64 (...).
        """
        p, lead = self._points(xy, (2,))
        if not len(self.room_rects):
            return np.full(lead, -1, dtype=np.int64)
        inside = _rect_signed_distance(p, self.room_rects) <= 0  # (N, R)
        return np.where(inside.any(axis=1), inside.argmax(axis=1), -1).reshape(lead)

    def segment_clearance(self, a, b) -> float:
        """Smallest exact signed clearance (m) along the straight segment from a to b.

        Shapes: a, b (2,) world metres. Sampled every ``LOS_STEP * resolution`` metres.
        """
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        n = max(2, math.ceil(np.linalg.norm(b - a) / (LOS_STEP * self.resolution)) + 1)
        t = np.linspace(0.0, 1.0, n)[:, None]
        return float(self._signed_clearance(a + t * (b - a)).min())

    # ------------------------------------------------------------------ grid helpers
    def cell_of(self, xy) -> tuple[int, int]:
        """Grid cell (iy, ix) holding point xy (2,), clipped to the grid."""
        x0, y0 = self.bounds[:2]
        ix = int(np.clip((xy[0] - x0) // self.resolution, 0, len(self.xs) - 1))
        iy = int(np.clip((xy[1] - y0) // self.resolution, 0, len(self.ys) - 1))
        return iy, ix

    def _nearest_free_cell(self, xy, search: int = 3) -> tuple[int, int]:
        """Free cell whose centre is nearest to xy and reachable from it in a straight line."""
        iy, ix = self.cell_of(xy)
        ys = slice(max(iy - search, 0), iy + search + 1)
        xs = slice(max(ix - search, 0), ix + search + 1)
        cy, cx = np.nonzero(self.free_grid[ys, xs])
        cy, cx = cy + ys.start, cx + xs.start
        order = np.argsort(np.hypot(self.xs[cx] - xy[0], self.ys[cy] - xy[1]))
        for k in order:
            centre = (self.xs[cx[k]], self.ys[cy[k]])
            if self.segment_clearance(xy, centre) >= 0:
                return int(cy[k]), int(cx[k])
        raise ValueError(f"no free grid cell near {tuple(np.round(xy, 3))}; is the point free?")

    def component_of(self, xy) -> int:
        """Connected-component label (> 0) of the free region holding free point xy (2,).

        Raises ValueError if xy is not free.
        """
        xy = np.asarray(xy, dtype=np.float64)
        if not self.is_free(xy[:2]):
            raise ValueError(f"point {tuple(np.round(xy, 3))} is not in free space")
        return int(self.labels[self._nearest_free_cell(xy[:2])])

    def sample_free(
        self, rng: np.random.Generator, min_clearance: float = 0.0, *, connected_to=None
    ) -> np.ndarray:
        """A uniformly random free point (a cell centre jittered within its cell).

        Args:
            rng: numpy Generator (the only source of randomness).
            min_clearance: required :meth:`clearance` of the point, metres.
            connected_to: optional free point (2,); the sample lies in its connected component,
                so :meth:`shortest_path` between them succeeds.

        Shapes: returns (2,) float64 world (x, y) metres.
        Raises ValueError if no grid cell has that clearance (in that component).
        """
        ok = self.clearance_grid >= min_clearance
        if connected_to is not None:
            ok &= self.labels == self.component_of(connected_to)
        cy, cx = np.nonzero(ok)
        if not len(cy):
            raise ValueError(
                f"no free point with clearance >= {min_clearance} m"
                + (" connected to the given point" if connected_to is not None else "")
                + f" (camera radius {self.camera_radius} m)"
            )
        k = int(rng.integers(len(cy)))
        centre = np.array([self.xs[cx[k]], self.ys[cy[k]]])
        jittered = centre + rng.uniform(-0.5, 0.5, size=2) * self.resolution
        if self._signed_clearance(jittered[None])[0] >= min_clearance:
            return jittered
        return centre

    # ------------------------------------------------------------------ planning
    def _astar(self, start: tuple[int, int], goal: tuple[int, int]) -> list[int]:
        """A* over free cells (8-connected, no corner cutting), cost = length x clearance factor.

        Returns the flat cell indices from start to goal; raises ValueError if unreachable.
        """
        nx, ny = len(self.xs), len(self.ys)
        free, cost = self._free_flat, self._cost
        s, g = start[0] * nx + start[1], goal[0] * nx + goal[1]
        gy, gx = goal
        diag = math.sqrt(2) - 1  # octile distance, admissible as cost factors are >= 1
        best = [math.inf] * (nx * ny)
        parent = {s: -1}
        closed = bytearray(nx * ny)
        best[s] = 0.0
        heap = [(0.0, 0.0, s)]
        while heap:
            _, gc, cur = heapq.heappop(heap)
            if closed[cur]:
                continue
            if cur == g:
                path = [cur]
                while parent[path[-1]] >= 0:
                    path.append(parent[path[-1]])
                return path[::-1]
            closed[cur] = 1
            cy, cx = divmod(cur, nx)
            c_cur = cost[cur]
            for dx, dy, step in _NEIGHBOURS:
                x, y = cx + dx, cy + dy
                if not (0 <= x < nx and 0 <= y < ny):
                    continue
                nb = y * nx + x
                if closed[nb] or not free[nb]:
                    continue
                if dx and dy and not (free[cy * nx + x] and free[y * nx + cx]):
                    continue  # no squeezing diagonally between two blocked cells
                ng = gc + step * 0.5 * (c_cur + cost[nb])
                if ng < best[nb]:
                    best[nb] = ng
                    parent[nb] = cur
                    hx, hy = abs(x - gx), abs(y - gy)
                    h = hx + diag * hy if hx > hy else hy + diag * hx
                    heapq.heappush(heap, (ng + h, ng, nb))
        raise ValueError("no collision-free path: start and goal are in different free regions")

    def shortest_path(self, a_xy, b_xy, *, margin: float = 0.1) -> np.ndarray:
        """Collision-free path from a to b: a few straight segments.

        A* on the grid (8-connected, step costs higher where clearance < PREFERRED_CLEARANCE),
        then greedy line-of-sight shortcutting: each vertex connects to the farthest later vertex
        whose straight segment keeps clearance >= min(margin, clearance of its two ends).

        Shapes: a_xy, b_xy (2,) (or (3,), z ignored) world metres -> (N, 2) float64, N >= 2,
        starting exactly at a and ending exactly at b.
        Raises ValueError if a or b is not free or no path exists.
        """
        a = np.asarray(a_xy, dtype=np.float64)[:2]
        b = np.asarray(b_xy, dtype=np.float64)[:2]
        for name, p in (("start", a), ("goal", b)):
            if not self.is_free(p):
                raise ValueError(f"{name} {tuple(np.round(p, 3))} is not in free space")
        if np.linalg.norm(b - a) < 1e-9:
            return np.stack([a, b])
        c_end = self._signed_clearance(np.stack([a, b]))
        if self.segment_clearance(a, b) >= min(margin, *c_end):
            return np.stack([a, b])
        cells = self._astar(self._nearest_free_cell(a), self._nearest_free_cell(b))
        iy, ix = np.divmod(np.asarray(cells), len(self.xs))
        pts = np.concatenate([a[None], np.stack([self.xs[ix], self.ys[iy]], -1), b[None]])
        keep = np.ones(len(pts), dtype=bool)  # drop vertices where the direction is unchanged
        d = np.diff(pts, axis=0)
        keep[1:-1] = np.abs(d[1:, 0] * d[:-1, 1] - d[1:, 1] * d[:-1, 0]) > 1e-12
        pts = pts[keep]
        clear = self._signed_clearance(pts)
        out, i = [pts[0]], 0
        while i < len(pts) - 1:
            j = len(pts) - 1
            while j > i + 1:
                need = max(min(margin, clear[i], clear[j]), 0.0)
                if self.segment_clearance(pts[i], pts[j]) >= need:
                    break
                j -= 1
            out.append(pts[j])
            i = j
        return np.stack(out)

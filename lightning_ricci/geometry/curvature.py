"""Discrete Ricci curvatures of unweighted, undirected graphs.

Shape symbols: N nodes, E edges.

For an edge (x, y) with degrees d(x), d(y) and T(x, y) common neighbours (triangles through the edge):

* Forman: ``F = 4 - d(x) - d(y)``.
* Augmented Forman: ``AF = 4 - d(x) - d(y) + 3 T``.
* Approximate Ollivier (Tian, Lubberts, Weber 2023): with ``m = min(d)``, ``M = max(d)``,
  ``T/M - 1/2 [(1 - 1/d(x) - 1/d(y) - T/m)_+ + (1 - 1/d(x) - 1/d(y) - T/M)_+]``, rounded to float32
  as Hehl et al. store it.

The public functions read ``edge_index`` as the undirected union of its edges and their reverses and
return one value per given edge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from lightning_ricci.geometry._bitset import pack_rows, popcount_rows
from lightning_ricci.geometry._checks import check_choice, check_edge_index, check_int
from lightning_ricci.geometry.geodesics import undirected_entries

EdgeCurvature = Literal["forman", "augmented_forman", "approx_ollivier"]
_TRIANGLE_CHUNK = 1 << 22  # words of one [edges, W] AND block


def triangle_counts(a: Tensor, b: Tensor, row: Tensor, col: Tensor, num_nodes: int) -> Tensor:
    """[E] number of common neighbours of the pairs (a, b) in the graph with edge entries (row, col)."""
    words = (num_nodes + 63) // 64
    bits = pack_rows(row, col, num_nodes, words)
    step = max(1, _TRIANGLE_CHUNK // words)
    out = [popcount_rows(bits[a[s : s + step]] & bits[b[s : s + step]]) for s in range(0, a.numel(), step)]
    return torch.cat(out) if out else a.new_zeros(0)


def _forman(da: Tensor, db: Tensor, t: Tensor | None) -> Tensor:
    return 4.0 - da - db


def _augmented_forman(da: Tensor, db: Tensor, t: Tensor | None) -> Tensor:
    assert t is not None
    return 4.0 - da - db + 3.0 * t


def _approx_ollivier(da: Tensor, db: Tensor, t: Tensor | None) -> Tensor:
    assert t is not None
    lo, hi = torch.minimum(da, db), torch.maximum(da, db)
    base = 1.0 - 1.0 / da - 1.0 / db
    kappa = t / hi - 0.5 * ((base - t / lo).clamp(min=0) + (base - t / hi).clamp(min=0))
    return kappa.float().double()


@dataclass(frozen=True)
class EdgeCurvatureSpec:
    """One edge curvature: its formula on float64 degrees and triangle counts, and what it needs.

    Attributes:
        name (str): the option name (``curvature=`` of :func:`~lightning_ricci.ricci_flow`).
        needs_triangles (bool): whether ``formula`` reads the triangle counts T(x, y).
        formula (Callable): ``(d(x), d(y), T(x, y) or None) -> [E] float64``, all float64 [E].
    """

    name: EdgeCurvature
    needs_triangles: bool
    formula: Callable[[Tensor, Tensor, Tensor | None], Tensor]


#: The registry of edge curvatures, in the order of :data:`EDGE_CURVATURES`. Adding a curvature means
#: adding its name to :data:`EdgeCurvature` and its spec here.
CURVATURES: dict[EdgeCurvature, EdgeCurvatureSpec] = {
    spec.name: spec
    for spec in (
        EdgeCurvatureSpec("forman", False, _forman),
        EdgeCurvatureSpec("augmented_forman", True, _augmented_forman),
        EdgeCurvatureSpec("approx_ollivier", True, _approx_ollivier),
    )
}
#: The option names, derived from :data:`EdgeCurvature`.
EDGE_CURVATURES: tuple[EdgeCurvature, ...] = get_args(EdgeCurvature)
if tuple(CURVATURES) != EDGE_CURVATURES:  # pragma: no cover - a registry edit without the Literal
    raise ImportError("`CURVATURES` and `EdgeCurvature` list different edge curvatures")


def edge_curvature(kind: EdgeCurvature, deg_a: Tensor, deg_b: Tensor, triangles: Tensor | None) -> Tensor:
    """[E] float64 curvature of edges with end-point degrees ``deg_a``, ``deg_b`` and ``triangles``."""
    spec = CURVATURES[kind]
    return spec.formula(deg_a.double(), deg_b.double(), None if triangles is None else triangles.double())


def _curvature(kind: EdgeCurvature, edge_index: Tensor, num_nodes: int) -> Tensor:
    num_nodes = check_int("num_nodes", num_nodes, low=1)
    check_choice("kind", kind, EDGE_CURVATURES)
    a, b = check_edge_index(edge_index, num_nodes)
    if bool((a == b).any()):
        raise ValueError("`edge_index` must not contain self-loops")
    row, col = undirected_entries(edge_index, num_nodes)
    deg = torch.bincount(row, minlength=num_nodes)
    tri = triangle_counts(a, b, row, col, num_nodes) if CURVATURES[kind].needs_triangles else None
    return edge_curvature(kind, deg[a], deg[b], tri)


def forman_curvature(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Forman-Ricci curvature ``4 - d(x) - d(y)`` of every edge of an undirected graph.

    Args:
        edge_index (Tensor): [2, E] long edges, read as undirected (no self-loops).
        num_nodes (int): N.

    Returns:
        Tensor: [E] float64, one value per given edge.

    Example:
        >>> cycle = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
        >>> forman_curvature(cycle, 4)
        tensor([0., 0., 0., 0.], dtype=torch.float64)
    """
    return _curvature("forman", edge_index, num_nodes)


def augmented_forman_curvature(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Augmented Forman-Ricci curvature ``4 - d(x) - d(y) + 3 T(x, y)`` (T: triangles on the edge).

    Args:
        edge_index (Tensor): [2, E] long edges, read as undirected (no self-loops).
        num_nodes (int): N.

    Returns:
        Tensor: [E] float64, one value per given edge.

    Example:
        >>> triangle = torch.tensor([[0, 1, 2], [1, 2, 0]])
        >>> augmented_forman_curvature(triangle, 3)
        tensor([3., 3., 3.], dtype=torch.float64)
    """
    return _curvature("augmented_forman", edge_index, num_nodes)


def approx_ollivier_curvature(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Approximate Ollivier-Ricci curvature of Tian, Lubberts and Weber (2023), rounded to float32.

    Args:
        edge_index (Tensor): [2, E] long edges, read as undirected (no self-loops).
        num_nodes (int): N.

    Returns:
        Tensor: [E] float64 (float32-rounded values), one value per given edge.

    Example:
        >>> triangle = torch.tensor([[0, 1, 2], [1, 2, 0]])
        >>> approx_ollivier_curvature(triangle, 3)
        tensor([0.5000, 0.5000, 0.5000], dtype=torch.float64)
    """
    return _curvature("approx_ollivier", edge_index, num_nodes)

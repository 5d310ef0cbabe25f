"""Exact k-nearest-neighbour graphs on the device.

Shape symbols: N points, D features, M distinct points, E directed edges.

The default backend (``"gemm"``) is exact at every width D:

1. A float32 GEMM on centred features estimates all squared distances. The feature dimension is cut
   into chunks of :data:`GEMM_CHUNK` columns whose float32 products are summed in float64, so the
   rigorous rounding bound grows with the chunk length, not with D (a plain float32 GEMM's bound grows
   with D and, on wide layers, cannot separate anything). The float32 matrix is symmetric: only the
   blocks on and above the diagonal are multiplied when it fits the memory budget.
2. Every candidate gets an interval ``estimate +- bound``; the k-th smallest lower and upper ends
   bracket the exact k-th distance. Candidates certainly inside or outside are decided from the
   estimate alone; a row whose undecided candidates number exactly what it still needs takes them all.
3. Only the remaining undecided pairs (a few per row, or the genuinely tied ones) are recomputed in
   float64 from differences, in blocks, which decides ties exactly.

Identical rows (dead-ReLU activations are often all zero) are merged first and counted with their
multiplicity. Features of any finite magnitude are accepted: values too large or too small for the
float32 estimates are rescaled by a power of two, which leaves every comparison unchanged.

Two tie rules are offered:

* ``ties="keep"``: every point at a distance <= the k-th smallest distance is a neighbour, as R's
  ``cccd::nng`` builds it (Baptista et al.). The out-degree can exceed k. On coincident rows this is
  quadratic: c copies of one row are all at distance 0 from each other, so each copy has the other
  c - 1 as neighbours whatever k is, and the layer has at least c (c - 1) edges (a layer with half of
  its N rows at zero has about N^2 / 4). The edge count is estimated before the edges are built and
  checked against an edge budget (``max_edges``, default :data:`EDGE_BUDGET_PER_POINT_AND_K` * N * k).
* ``ties="first"``: exactly k neighbours; points tied at the k-th distance are taken by lowest index
  (``convention="hehl"``), so a layer has N k edges however many rows coincide. scikit-learn's
  ``kneighbors_graph`` (Hehl et al.) also returns k, with a tie order that depends on its search
  algorithm; on tie-free data the two agree. A layer whose points all coincide gets the complete graph
  under both rules.

Several k at once (:func:`knn_edges_scan`): the estimates and the candidates are formed once, for the
largest k, and every k takes its own decisions on them, so each graph is exactly the one of a separate
search. A search can be restricted to a range of query rows (``rows=(start, stop)``): only those rows'
estimates are formed, which is how :func:`~lightning_ricci.ricci_flow` shards a layer over ranks.

Backends are declared once, in :data:`KNN_BACKEND_SPECS`, with what they support.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Literal, get_args

import torch
from torch import Tensor

from lightning_ricci.geometry._checks import check_choice, check_features, check_finite, check_int

Ties = Literal["keep", "first"]
KnnBackend = Literal["auto", "gemm", "torch_cluster"]

KNN_BACKENDS: tuple[str, ...] = get_args(KnnBackend)
_TIES: tuple[str, ...] = get_args(Ties)
# Default scratch memory for the distance blocks; the whole [M, M] float32 matrix is formed (to use its
# symmetry and keep it for retries) when it fits.
DEFAULT_MEMORY_BUDGET = {"cpu": 1 << 28, "cuda": 1 << 31}
# Features per float32 GEMM whose products are summed in float64: the rounding bound of the estimates
# grows with this length instead of D.
GEMM_CHUNK = 512
# Default edge budget of one graph under the keep-ties rule, per point and per neighbour: 20 N k.
EDGE_BUDGET_PER_POINT_AND_K = 20
# Elements of one [pairs, D] float64 block of exact differences.
_EXACT_ELEMENTS = 1 << 18
# Rows of one float32 block of the symmetric Gram matrix.
_GRAM_ROWS = 256
_U32 = 2.0**-24
_U64 = 2.0**-53
_edge_budget_warned = False


EdgeCheck = Callable[[int, int, str], None]  # (k, edge count, why), before a keep-ties graph is built
Rows = tuple[int, int]


class KnnEdgeBudgetWarning(UserWarning):
    """A keep-ties kNN graph has more edges than its edge budget (many coincident or equidistant rows)."""


@dataclass(frozen=True)
class KnnBackendSpec:
    """One kNN backend and what it supports.

    Attributes:
        name (str): the value of ``backend`` / ``knn_backend`` that selects it.
        search (Callable): ``search(x, ks, keep_ties, budget, check_edges, rows)`` on [N, D] features
            returns one ``(edge_index, constant)`` per k of ``ks``: the edges of the query points
            ``rows = (start, stop)`` (all N points for ``None``). ``check_edges(k, count, why)`` is
            called with the edge count before a keep-ties graph is built. A backend without tie support
            returns exactly k neighbours.
        supports_keep_ties (bool): whether it implements the keep-all-ties rule. When it does not,
            :func:`knn_edges` asks it for one more neighbour and refuses ``keep_ties=True`` on data with
            a tie at the k-th distance (the result would differ from the rule).
        devices (tuple[str, ...] | None): device types it runs on (``None``: any device torch runs on).
        max_k (Mapping[str, int]): per device type, the largest number of neighbours it can return.
        summary (str): one line for the docs.
    """

    name: str
    search: Callable[[Tensor, list[int], bool, int, EdgeCheck, Rows | None], list[tuple[Tensor, bool]]]
    supports_keep_ties: bool
    devices: tuple[str, ...] | None = None
    max_k: Mapping[str, int] = field(default_factory=dict)
    summary: str = ""


def knn_graph(
    x: Tensor,
    k: int,
    *,
    ties: Ties = "first",
    backend: KnnBackend = "auto",
    max_edges: int | None = None,
    strict: bool = False,
) -> Tensor:
    """Directed k-nearest-neighbour graph of a point cloud, without self-loops.

    Args:
        x (Tensor): [N, ...] float32 or float64 points; trailing dimensions are flattened.
            A 1-D tensor is read as N points with one feature. Any finite magnitude is accepted.
        k (int): neighbours per point, ``1 <= k < N``.
        ties (str): ``"keep"`` keeps every point tied at the k-th distance (R's ``cccd::nng``);
            ``"first"`` keeps exactly k, breaking ties by lowest index. Default: ``"first"``.
            A cloud whose points all coincide gets the complete graph, N (N - 1) edges, under both rules
            (every point is tied with every other).
        backend (str): ``"gemm"`` (exact blocked GEMM, the default of ``"auto"``) or
            ``"torch_cluster"`` (``torch_cluster.knn``; exactly k neighbours in the library's tie
            order, ``k <= 99`` on CUDA; with ``ties="keep"`` it refuses data tied at the k-th distance).
            Default: ``"auto"``.
        max_edges (int | None): edge budget of the graph under ``ties="keep"``, where coincident rows
            make the edge count quadratic (see the module docs). Above it a :class:`KnnEdgeBudgetWarning`
            with the count is issued once per process, or a ``ValueError`` with ``strict=True``; the
            count is estimated before the edges are built. Default: ``None``, meaning
            :data:`EDGE_BUDGET_PER_POINT_AND_K` * N * k.
        strict (bool): raise instead of warning when the edge budget is exceeded. Default: False.

    Returns:
        Tensor: [2, E] long on ``x.device``; ``edge_index[1]`` lists the neighbours of
        ``edge_index[0]``, sorted by ``(edge_index[0], edge_index[1])``.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [2.0], [4.0]])
        >>> knn_graph(x, k=1, ties="keep")
        tensor([[0, 1, 1, 2, 3],
                [1, 0, 2, 1, 2]])
    """
    x = check_features("x", x, allow_1d=True, finite=False)
    _check_finite(x)
    k = check_int("k", k, low=1, high=x.shape[0])
    check_choice("ties", ties, _TIES)
    check_choice("backend", backend, KNN_BACKENDS)
    if max_edges is not None:
        max_edges = check_int("max_edges", max_edges, low=1)
    if not isinstance(strict, bool):
        raise TypeError(f"`strict` must be a bool (got {type(strict).__name__})")
    edge_index, _ = knn_edges(
        x,
        k,
        keep_ties=ties == "keep",
        backend=backend,
        max_edges=max_edges,
        strict=strict,
        _names=("backend", "ties='keep'"),
    )
    return edge_index


def knn_edges(
    x: Tensor,
    k: int,
    *,
    keep_ties: bool,
    backend: KnnBackend = "auto",
    memory_budget: int | None = None,
    max_edges: int | None = None,
    strict: bool = False,
    rows: Rows | None = None,
    _names: tuple[str, str] = ("knn_backend", "keep_ties=True"),
) -> tuple[Tensor, bool]:
    """Unchecked :func:`knn_graph` on finite [N, D] features; also says whether all points coincide.

    A layer whose points all coincide gets the complete graph under both tie rules. ``memory_budget``
    bounds the bytes of the blocks of estimated distances (default: :data:`DEFAULT_MEMORY_BUDGET`); the
    features are centred chunk by chunk, so no copy of them is made. ``max_edges`` and ``strict`` are
    the keep-ties edge budget of :func:`knn_graph`. ``rows = (start, stop)`` computes only the edges
    whose source is one of the points ``start .. stop - 1`` (their neighbours are searched among all N):
    exactly those edges of the whole graph, in the same order (see :func:`knn_edges_scan`).

    A backend that cannot keep ties (``supports_keep_ties=False`` in :data:`KNN_BACKEND_SPECS`:
    torch-cluster) is asked for k + 1 neighbours under ``keep_ties=True``; the exact float64 squared
    distances of each point's k-th and (k+1)-th are compared, and equal ones (a tie at the k-th
    distance: duplicates, lattices) raise a ``ValueError`` instead of a graph that silently differs
    from the keep-all-ties rule. Otherwise the k nearest of the k + 1 are kept.

    Raises:
        ValueError: ``backend`` cannot serve this device, this ``k`` or tied data under ``keep_ties``;
            or the edge budget is exceeded with ``strict=True``.

    Example:
        >>> edges, constant = knn_edges(torch.tensor([[0.0], [1.0], [3.0]]), 1, keep_ties=True)
        >>> edges.tolist(), constant
        ([[0, 1, 2], [1, 0, 1]], False)
        >>> knn_edges(torch.tensor([[0.0], [1.0], [3.0]]), 1, keep_ties=True, rows=(1, 3))[0].tolist()
        [[1, 2], [0, 1]]
    """
    return knn_edges_scan(
        x,
        [k],
        keep_ties=keep_ties,
        backend=backend,
        memory_budget=memory_budget,
        max_edges=max_edges,
        strict=strict,
        rows=rows,
        _names=_names,
    )[0]


def knn_edges_scan(
    x: Tensor,
    ks: Sequence[int],
    *,
    keep_ties: bool,
    backend: KnnBackend = "auto",
    memory_budget: int | None = None,
    max_edges: int | None = None,
    strict: bool = False,
    rows: Rows | None = None,
    _names: tuple[str, str] = ("knn_backend", "keep_ties=True"),
    _count_edges: Callable[[int], int] | None = None,
) -> list[tuple[Tensor, bool]]:
    """:func:`knn_edges` for several k at once: one ``(edge_index, constant)`` per value of ``ks``.

    Each graph is the one :func:`knn_edges` returns for that k alone, ties included, and the edge budget
    is checked for each k as a separate call would (``max_edges``, or its default for that k). The exact
    backend estimates the distances and selects the candidates once, for the largest k; every k then
    takes the same rule's decision (certain from the float32 bounds, or exact in float64 for the few
    undecided pairs) on a prefix of those candidates. Other backends search each k.

    ``rows = (start, stop)`` restricts the query points (``0 <= start <= stop <= N``): the distance
    estimates are formed for those rows only, and the edges whose source lies outside are not built.
    Concatenating the edges of consecutive row ranges gives the whole graph (a sharded search), except
    that the edge budget is checked on the count of the given rows only, unless ``_count_edges`` turns
    that count into the whole graph's (an all-reduce over the ranks of a sharded search).

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [2.0], [4.0]])
        >>> [edges.shape[1] for edges, _ in knn_edges_scan(x, [1, 2], keep_ties=True)]
        [5, 9]
    """
    spec = KNN_BACKEND_SPECS["gemm" if backend == "auto" else backend]
    _name = _names[0]
    device = x.device.type
    if spec.devices is not None and device not in spec.devices:
        raise ValueError(
            f"`{_name}={spec.name!r}` runs on {', '.join(spec.devices)} only (got a tensor on {device}); "
            f"use `{_name}='gemm'`"
        )
    n = x.shape[0]
    ks = [int(k) for k in ks]
    if rows is not None and not 0 <= rows[0] <= rows[1] <= n:
        raise ValueError(f"`rows` must be (start, stop) with 0 <= start <= stop <= {n} (got {rows})")
    check_ties = keep_ties and not spec.supports_keep_ties
    limit = spec.max_k.get(device)
    for k in ks:
        asked = k + 1 if check_ties and k + 1 < n else k
        if limit is not None and asked > limit:
            extra = (
                " and `keep_ties=True` (one neighbour more is searched to check for ties)"
                if asked > k
                else ""
            )
            raise ValueError(
                f"`k` must be <= {limit - (asked - k)} with `{_name}={spec.name!r}` on {device}{extra}: it "
                f"returns at most {limit} neighbours (got {k}); use `{_name}='gemm'`"
            )
    budget = memory_budget or DEFAULT_MEMORY_BUDGET.get(device, DEFAULT_MEMORY_BUDGET["cuda"])

    def check_edges(k: int, count: int, why: str) -> None:
        if not keep_ties:
            return
        if _count_edges is not None:
            count = _count_edges(count)
        edge_budget = max_edges if max_edges is not None else EDGE_BUDGET_PER_POINT_AND_K * n * k
        if count > edge_budget:
            _over_edge_budget(count, edge_budget, strict, n, k, why)

    if not check_ties:
        return spec.search(x, ks, keep_ties and spec.supports_keep_ties, budget, check_edges, rows)
    out = []
    for k in ks:  # k + 1 neighbours where a (k+1)-th exists, to see ties at the k-th
        if k + 1 >= n:
            out.extend(spec.search(x, [k], False, budget, check_edges, rows))
            continue
        ((edges, constant),) = spec.search(x, [k + 1], False, budget, check_edges, rows)
        if not constant:
            edges = _drop_farthest_unless_tied(x, edges, k, _names, spec.name)
        out.append((edges, constant))
    return out


def _over_edge_budget(count: int, budget: int, strict: bool, n: int, k: int, why: str) -> None:
    message = (
        f"the keep-ties kNN graph (N = {n}, k = {k}) has {count:,} directed edges, above the edge budget "
        f"`max_edges` = {budget:,} ({EDGE_BUDGET_PER_POINT_AND_K} N k by default): {why}. Keeping every tie "
        "makes c coincident rows c (c - 1) edges whatever k is; `ties='first'` (convention='hehl') keeps "
        "exactly k per point"
    )
    if strict:
        raise ValueError(message)
    global _edge_budget_warned
    if not _edge_budget_warned:
        _edge_budget_warned = True
        warnings.warn(message, KnnEdgeBudgetWarning, stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    """``stacklevel`` of the first frame outside the geometry package, as seen from the caller."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here + os.sep):
        frame, level = frame.f_back, level + 1
    return level


@contextlib.contextmanager
def exact_matmul() -> Iterator[None]:
    """Run float32 matrix products in full float32 (no TF32 or bf16 passes), then restore the settings."""
    precision = torch.get_float32_matmul_precision()
    cuda_tf32 = torch.backends.cuda.matmul.allow_tf32
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cuda.matmul.allow_tf32 = cuda_tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


def _abs_max(x: Tensor) -> float:
    """``max |x|`` in one pass, without a temporary of the size of ``x``."""
    low, high = torch.aminmax(x)
    return max(-float(low), float(high))


def _check_finite(x: Tensor) -> None:
    """``check_finite`` with a fast path: a NaN or an Inf makes the sum non-finite, so only a non-finite
    sum (also the overflow of a sum of huge finite values) needs the elementwise check."""
    total = float(x.sum())
    if not math.isfinite(total):
        check_finite("x", x)


def _exact_scale(x: Tensor, amax: float | None = None) -> float:
    """The power of two that keeps float64 differences of ``x`` and their squares in range (float32: 1)."""
    if x.dtype != torch.float64:
        return 1.0
    return _power_of_two_scale(_abs_max(x) if amax is None else amax, 2.0**-480, 2.0**480)


def _power_of_two_scale(amax: float, low: float, high: float) -> float:
    """``2**-e`` with ``amax * 2**-e`` in [0.5, 1) when ``amax`` lies outside [low, high], else 1."""
    if amax == 0.0 or low <= amax <= high:
        return 1.0
    return math.ldexp(1.0, -math.frexp(amax)[1])


class _Estimates:
    """Float32 estimates of the squared distances between the rows of ``x``, with a rigorous bound.

    ``estimate(i, j)`` is within ``coef * (norm[i] + norm[j]) ** 2 + floor`` of the squared distance of
    ``x[i]`` and ``x[j]`` (rescaled by ``scale ** 2``), and of the float64 difference formula that
    decides ties. The features are centred (and rescaled) chunk by chunk into small reused buffers, so
    no copy of the features is made. The bound, term by term (u = 2^-24, v = 2^-53,
    c = :data:`GEMM_CHUNK`, P chunks):

    * the products of one chunk: ``gamma_c |a| |b|`` (any summation order, FMA or not); the pairwise
      (tree) float32 sum of the P chunk values, at most ``2 ceil(log2 P)`` roundings:
      ``gamma_{2 log2 P} |a| |b|``; 2 |a| |b| <= (|a| + |b|)^2 / 2;
    * the squared norms, summed in float64 from exact float64 products: ``gamma_D(v) (|a|^2 + |b|^2)``;
    * the float32 assembly ``|a|^2 + |b|^2 - 2 a.b`` and its four roundings: ``4 u (|a| + |b|)^2``;
    * the rounding of the centred (and rescaled) features to float32, at most one float32 and one
      float64 rounding per value: ``2.0001 u (|a| + |b|)^2``;
    * the float64 difference formula itself: ``2 gamma_D(v) (|a| + |b|)^2``;
    * underflow (products, partial sums or centred values below float32's normal range, also with
      flush-to-zero): ``floor = (D + 4) 2^-118 max(1, max|x|)^2``.

    The sum is multiplied by 1.05 for the rounding of the norms themselves.

    ``symmetric=False`` never forms the whole [M, M] matrix (a search restricted to some query rows
    multiplies only their blocks). :meth:`prefetch` keeps the candidates of some rows for a larger count,
    so that the searches of smaller k read them instead of multiplying again.
    """

    def __init__(self, x: Tensor, budget: int, symmetric: bool = True) -> None:
        m, dim = x.shape
        self.m, self.dim, self.budget, self.x = m, dim, budget, x
        amax = _abs_max(x)
        self.scale = _power_of_two_scale(amax, 2.0**-20, 2.0**20)
        # Exact differences in float64 only need rescaling where they leave float64's range.
        self.exact_scale = _exact_scale(x, amax)
        self.chunk = min(GEMM_CHUNK, dim)
        self.direct = x.dtype == torch.float32 and self.scale == 1.0  # centre in float32, one rounding
        with torch.no_grad():
            if self.direct:
                self.mean = x.mean(dim=0)
            else:
                self.mean = torch.cat(
                    [
                        (x[:, s : s + self.chunk].double() * self.scale).mean(dim=0)
                        for s in range(0, dim, self.chunk)
                    ]
                )
        pieces = -(-dim // self.chunk)
        gamma = self.chunk * _U32 / (1 - self.chunk * _U32)
        levels = 2 * max(1, math.ceil(math.log2(pieces))) if pieces > 1 else 0
        gamma_sum = levels * _U32 / (1 - levels * _U32)
        gamma_d64 = dim * _U64 / (1 - dim * _U64)
        # One chunk: the [M, M] block is one ``addmm`` (the row norms added in the GEMM), whose bound is
        # gamma_{D+1} (|b|^2 + 2 |a| |b|) <= gamma_{D+1} (|a| + |b|)^2 in whatever order BLAS adds them.
        product = (gamma + gamma_sum) / 2 if pieces > 1 else (dim + 1) * _U32 / (1 - (dim + 1) * _U32)
        self.coef = 1.05 * (product + 3 * gamma_d64 + 4 * _U32 + 2.0001 * _U32)
        self.floor = (dim + 4) * 2.0**-118 * max(1.0, amax * self.scale) ** 2
        self.full: Tensor | None = None
        # Live float32 [rows, M] blocks of the pairwise sum: one per level, plus the block being added.
        self.blocks = (levels // 2 + 2) if pieces > 1 else 1
        self._cache: tuple[int, Tensor, Tensor, Tensor] | None = (
            None  # count, position of each row, values, indices
        )
        if symmetric and 4 * m * m + 4 * self.blocks * _GRAM_ROWS * m + 12 * m * self.chunk <= budget:
            self.full = self._symmetric()
        else:
            self._norms(self._squared_norms())

    def _norms(self, sq: Tensor) -> None:
        self.sq32 = sq.float()
        self.norm = sq.sqrt()
        self.norm_max = float(self.norm.max())

    def _centred(self, rows: Tensor | slice, start: int, out: Tensor, scratch: Tensor) -> Tensor:
        """Centred (rescaled) float32 features ``x[rows, start:start + chunk]`` written into ``out``."""
        stop = min(self.dim, start + self.chunk)
        part = self.x[rows, start:stop]
        n, w = part.shape
        if self.direct:
            return torch.sub(part, self.mean[start:stop], out=out[:n, :w])
        work = scratch[:n, :w].copy_(part).mul_(self.scale).sub_(self.mean[start:stop])
        return out[:n, :w].copy_(work)

    def _squared_norms(self) -> Tensor:
        m = self.m
        out = torch.empty(m, self.chunk, dtype=torch.float32, device=self.x.device)
        scratch = torch.empty(m, self.chunk, dtype=torch.float64, device=self.x.device)
        sq = torch.zeros(m, dtype=torch.float64, device=self.x.device)
        for start in range(0, self.dim, self.chunk):
            centred = self._centred(slice(0, m), start, out, scratch)
            sq += scratch[:, : centred.shape[1]].copy_(centred).pow_(2).sum(dim=1)
        return sq

    def bound(self, rows: Tensor, cols: Tensor) -> Tensor:
        """[R, C] float64 bound on |estimate - exact| for the pairs (``rows[r]``, ``cols[r, c]``)."""
        return self.coef * (self.norm[rows].unsqueeze(1) + self.norm[cols]) ** 2 + self.floor

    def bound_outside(self, rows: Tensor) -> Tensor:
        """[R] float64 bound valid for every pair of ``rows[r]`` with any other row."""
        return self.coef * (self.norm[rows] + self.norm_max) ** 2 + self.floor

    def _gram(self, a_rows: Tensor | slice, b_rows: Tensor | slice, sq: Tensor | None = None) -> Tensor:
        """[A, B] float32 Gram block of the centred rows: chunk products summed pairwise (a tree).

        With ``sq``, the float64 squared norms of the ``a_rows`` (a slice) are added into it on the way.
        """
        device = self.x.device
        a_n = len(range(self.m)[a_rows]) if isinstance(a_rows, slice) else a_rows.numel()
        b_n = len(range(self.m)[b_rows]) if isinstance(b_rows, slice) else b_rows.numel()
        buf_a = torch.empty(a_n, self.chunk, dtype=torch.float32, device=device)
        buf_b = torch.empty(b_n, self.chunk, dtype=torch.float32, device=device)
        scratch = torch.empty(max(a_n, b_n), self.chunk, dtype=torch.float64, device=device)
        same = isinstance(a_rows, slice) and isinstance(b_rows, slice) and a_rows.start == b_rows.start
        free: list[Tensor] = []
        stack: list[tuple[int, Tensor]] = []
        with exact_matmul():
            for start in range(0, self.dim, self.chunk):
                cb = self._centred(b_rows, start, buf_b, scratch)
                ca = cb[:a_n] if same else self._centred(a_rows, start, buf_a, scratch)
                if sq is not None:
                    sq += scratch[:a_n, : ca.shape[1]].copy_(ca).pow_(2).sum(dim=1)
                part = free.pop() if free else torch.empty(a_n, b_n, dtype=torch.float32, device=device)
                torch.mm(ca, cb.T, out=part)
                level = 0
                while stack and stack[-1][0] == level:  # pairwise: merge equal-sized partial sums
                    _, left = stack.pop()
                    free.append(part)
                    part = left.add_(part)
                    level += 1
                stack.append((level, part))
        total = stack.pop()[1]
        while stack:
            total = stack.pop()[1].add_(total)
        return total

    def _symmetric(self) -> Tensor:
        """All [M, M] estimates from the Gram blocks on and above the diagonal (the diagonal is inf)."""
        m = self.m
        if self.dim <= GEMM_CHUNK:  # one GEMM: the copies of the transposed blocks would cost more
            buf = torch.empty(m, self.dim, dtype=torch.float32, device=self.x.device)
            scratch = torch.empty(m, self.dim, dtype=torch.float64, device=self.x.device)
            xc = self._centred(slice(0, m), 0, buf, scratch)
            self._norms(scratch.copy_(xc).pow_(2).sum(dim=1))
            with exact_matmul():
                out = torch.addmm(self.sq32.unsqueeze(0), xc, xc.T, beta=1.0, alpha=-2.0)
            out.add_(self.sq32.unsqueeze(1))
            out.fill_diagonal_(torch.inf)
            return out
        out = torch.empty(m, m, dtype=torch.float32, device=self.x.device)
        sq = torch.zeros(m, dtype=torch.float64, device=self.x.device)
        for start in range(0, m, _GRAM_ROWS):
            stop = min(m, start + _GRAM_ROWS)
            block = self._gram(slice(start, stop), slice(start, m), sq[start:stop])
            out[start:stop, start:] = block
            out[stop:, start:stop] = block[:, stop - start :].T
        self._norms(sq)
        out.mul_(-2.0).add_(self.sq32.unsqueeze(0)).add_(self.sq32.unsqueeze(1))
        out.fill_diagonal_(torch.inf)
        return out

    def prefetch(self, rows: Tensor, count: int) -> None:
        """Compute and keep :meth:`nearest` of ``rows`` for ``count``; later calls for these rows and at
        most ``count`` candidates read its first columns (the ``count`` smallest, sorted, start with the
        smaller counts' smallest, up to the order of equal estimates, which no decision depends on)."""
        values, indices = self.nearest(rows, count)
        pos = torch.full((self.m,), -1, dtype=torch.long, device=rows.device)
        pos[rows] = torch.arange(rows.numel(), device=rows.device)
        self._cache = (count, pos, values, indices)

    def nearest(self, rows: Tensor, count: int) -> tuple[Tensor, Tensor]:
        """The ``count`` smallest estimates of every row in ``rows`` to the other rows: float64 values
        and indices, [R, count], sorted."""
        if self._cache is not None and count <= self._cache[0]:
            pos = self._cache[1][rows]
            if bool((pos >= 0).all()):
                return self._cache[2][pos, :count], self._cache[3][pos, :count]
        if self.full is not None:
            every = rows.numel() == self.m and bool((rows == torch.arange(self.m, device=rows.device)).all())
            v, i = torch.topk(
                self.full if every else self.full[rows], count, dim=1, largest=False, sorted=True
            )
            return v.double(), i
        m = self.m
        step = max(1, (self.budget - 12 * m * self.chunk) // (4 * (self.blocks + 1) * m))
        values, indices = [], []
        for start in range(0, rows.numel(), step):
            q = rows[start : start + step]
            d2 = self._gram(q, slice(0, m))
            d2.mul_(-2.0).add_(self.sq32.unsqueeze(0)).add_(self.sq32[q].unsqueeze(1))
            d2[torch.arange(q.numel(), device=q.device), q] = torch.inf
            v, i = torch.topk(d2, count, dim=1, largest=False, sorted=True)
            values.append(v.double())
            indices.append(i)
        return torch.cat(values), torch.cat(indices)

    def exact(self, a: Tensor, b: Tensor) -> Tensor:
        """[P] squared distances of the pairs (``a``, ``b``) from float64 differences of the features.

        The same formula as every other exact distance of the package (tie decisions must agree);
        blocks of :data:`_EXACT_ELEMENTS` keep the gathered rows in cache.
        """
        return exact_sq_distances(self.x, a, b, self.exact_scale)


def exact_sq_distances(x: Tensor, a: Tensor, b: Tensor, scale: float | None = None) -> Tensor:
    """[P] squared distances between ``x[a]`` and ``x[b]`` (paired) from float64 differences.

    The formula that decides ties in the exact backend; callers that rank kNN edges by distance should
    use it too (it also handles float64 features whose differences overflow, through ``scale``).

    ``scale`` (a power of two, exact) multiplies the features first, for float64 features whose
    differences or squares would leave float64's range; ``None`` (the default) picks it from
    ``max |x|`` (1 for float32 features and for float64 features within about 2^+-480). Small blocks keep the gathered rows in cache.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> exact_sq_distances(x, torch.tensor([0]), torch.tensor([1]))
        tensor([25.], dtype=torch.float64)
    """
    if scale is None:
        scale = _exact_scale(x)
    step = max(1, _EXACT_ELEMENTS // max(x.shape[1], 1))
    out = []
    # Reused buffers: a fresh large block per step would cost page faults on the CPU.
    size = (min(step, a.numel()), x.shape[1])
    gathered = torch.empty(size, dtype=x.dtype, device=x.device)
    da = torch.empty(size, dtype=torch.float64, device=x.device)
    db = da if x.dtype == torch.float64 else torch.empty(size, dtype=torch.float64, device=x.device)
    for s in range(0, a.numel(), step):
        ia, ib = a[s : s + step], b[s : s + step]
        p = ia.numel()
        if x.dtype == torch.float64:
            d = torch.index_select(x, 0, ia, out=da[:p])
            other = torch.index_select(x, 0, ib, out=gathered[:p])
        else:
            d = da[:p].copy_(torch.index_select(x, 0, ia, out=gathered[:p]))
            other = db[:p].copy_(torch.index_select(x, 0, ib, out=gathered[:p]))
        if scale != 1.0:  # before the difference, which could overflow
            d.mul_(scale)
            other.mul_(scale)
        out.append(d.sub_(other).pow_(2).sum(-1))
    return torch.cat(out) if out else x.new_zeros(0, dtype=torch.float64)


def _complete_graph(n: int, device: torch.device) -> Tensor:
    i = torch.arange(n, device=device).repeat_interleave(n - 1)
    j = torch.arange(n * (n - 1), device=device) % (n - 1)
    return torch.stack([i, j + (j >= i).long()])


def _ranks_within(keys: Tensor) -> Tensor:
    """Position of every entry inside its run of equal ``keys`` (``keys`` sorted)."""
    if keys.numel() == 0:
        return keys
    pos = torch.arange(keys.numel(), device=keys.device)
    is_start = torch.ones_like(keys, dtype=torch.bool)
    is_start[1:] = keys[1:] != keys[:-1]
    start = torch.cummax(torch.where(is_start, pos, torch.zeros_like(pos)), dim=0).values
    return pos - start


def _expand(
    owner: Tensor, group: Tensor, counts: Tensor, gstart: Tensor, members: Tensor
) -> tuple[Tensor, Tensor]:
    """Replace every (owner, group) pair by (owner, j) for each member j of the group, in index order."""
    sizes = counts[group]
    total = int(sizes.sum())
    owner_rep = owner.repeat_interleave(sizes, output_size=total)
    first = (sizes.cumsum(0) - sizes).repeat_interleave(sizes, output_size=total)
    base = gstart[group].repeat_interleave(sizes, output_size=total)
    offset = torch.arange(total, device=owner.device) - first
    return owner_rep, members[base + offset]


def _segment_first(seg: Tensor, flag: Tensor, num_segments: int) -> Tensor:
    """Index of the first ``True`` of ``flag`` inside every segment of the sorted ``seg`` ([num_segments])."""
    pos = torch.arange(seg.numel(), device=seg.device)
    pos = torch.where(flag, pos, torch.full_like(pos, seg.numel()))
    first = torch.full((num_segments,), seg.numel(), dtype=torch.long, device=seg.device)
    return first.scatter_reduce_(0, seg, pos, reduce="amin")


def _bracket(lo: Tensor, hi: Tensor, mult: Tensor, need: Tensor) -> tuple[Tensor, Tensor]:
    """[R] bounds ``(lower, upper)`` on the ``need[r]``-th smallest exact value of row r, with multiplicity.

    The entries of a row are sorted by their estimate, and entry j's exact value lies in
    ``[lo[r, j], hi[r, j]]``. Let p be the first position where the multiplicities reach ``need``: the
    entries up to p are ``need`` values, all <= ``max(hi[:p + 1])``; any ``need`` entries include one at
    or after p, so the ``need``-th smallest is >= ``min(lo[p:])``. ``upper`` is inf where the row holds
    fewer than ``need``.
    """
    pos = (mult.cumsum(dim=1) < need.unsqueeze(1)).sum(dim=1, keepdim=True)
    col = torch.arange(lo.shape[1], device=lo.device).unsqueeze(0)
    upper = torch.where(col <= pos, hi, torch.full_like(hi, -torch.inf)).amax(dim=1)
    lower = torch.where(col >= pos, lo, torch.full_like(lo, torch.inf)).amin(dim=1)
    upper = torch.where(pos.squeeze(1) < lo.shape[1], upper, torch.full_like(upper, torch.inf))
    return lower, upper


def _select_groups(
    est: _Estimates,
    counts: Tensor,
    rows: Tensor,
    need: Tensor,
    k: int,
    keep_ties: bool,
    unit: bool = False,
    detect_duplicates: bool = False,
    first_count: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None:
    """Pick, for every distinct row in ``rows``, the other distinct rows that hold its neighbours.

    ``est`` estimates the distances between the distinct rows; the first pass looks at
    ``max(first_count, k + max(4, k // 8))`` candidates per row (more candidates decide more rows).

    ``need[q]`` neighbours (counted with multiplicity) must come from rows other than ``rows[q]``.
    Returns ``(full_u, full_g, tied_u, tied_g, remaining)``: distinct rows ``full_g`` all of whose
    points are neighbours of ``full_u``; rows ``tied_g`` at exactly the cut-off distance of ``tied_u``
    (only for ``keep_ties=False``), of which ``remaining[q]`` points, lowest index first, complete the k.
    With ``detect_duplicates``, returns ``None`` as soon as two of the rows are found equal.

    Every candidate's exact squared distance lies in ``[lo, hi] = estimate -+ bound``. The exact cut-off
    r (the ``need``-th smallest, with multiplicity) lies in a bracket read off these intervals
    (:func:`_bracket`): candidates with ``hi`` below it are certainly in, those with ``lo`` above it
    certainly out. A row whose undecided candidates hold exactly the number it
    still needs takes them all; only the other rows' undecided pairs are recomputed exactly.
    """
    m = est.m
    unit = unit or detect_duplicates  # the ungrouped search: counts are all 1 and need is k
    full_u, full_g, und_q, und_g = [], [], [], []
    need_rem = need.clone()
    num_candidates = min(m - 1, max(first_count, k + max(4, k // 8)))
    pending = torch.arange(rows.numel(), device=rows.device)
    while pending.numel():
        q_rows = rows[pending]
        approx, cand = est.nearest(q_rows, num_candidates)
        tau = est.bound(q_rows, cand)
        lo, hi = approx - tau, approx + tau
        if detect_duplicates:
            dr, dc = (lo <= 0).nonzero(as_tuple=True)
            if dr.numel() and bool((est.exact(q_rows[dr], cand[dr, dc]) == 0).any()):
                return None
            detect_duplicates = False
        nd = need[pending]
        if unit:  # every row is one point: the k-th entry, no multiplicities
            mult = cand
            upper = hi[:, :k].amax(dim=1)
            lower = lo[:, k - 1 :].amin(dim=1)
        else:
            mult = counts[cand]
            lower, upper = _bracket(lo, hi, mult, nd)
        certified = torch.isfinite(upper)
        if num_candidates < m - 1:
            certified &= approx[:, -1] - est.bound_outside(q_rows) > upper
        every = bool(certified.all())
        if every:  # the usual case: no copies
            q_ok = pending
        else:
            ok = certified.nonzero().squeeze(1)
            lo, hi, mult, cand, q_ok, nd = lo[ok], hi[ok], mult[ok], cand[ok], pending[ok], nd[ok]
            lower, upper = lower[ok], upper[ok]
        inside = hi < lower.unsqueeze(1)
        undecided = ~inside & (lo <= upper.unsqueeze(1))
        if unit:
            rem = nd - inside.sum(dim=1)
            all_in = undecided.sum(dim=1) == rem
        else:
            zero = torch.zeros_like(mult)
            rem = nd - torch.where(inside, mult, zero).sum(dim=1)
            all_in = torch.where(undecided, mult, zero).sum(dim=1) == rem
        inside |= undecided & all_in.unsqueeze(1)
        undecided &= ~all_in.unsqueeze(1)
        r, c = inside.nonzero(as_tuple=True)
        full_u.append(rows[q_ok[r]])
        full_g.append(cand[r, c])
        r, c = undecided.nonzero(as_tuple=True)
        und_q.append(q_ok[r])
        und_g.append(cand[r, c])
        need_rem[q_ok] = rem
        if num_candidates == m - 1 and not every:  # pragma: no cover - non-finite estimates
            raise RuntimeError("exact kNN: estimates of every candidate failed to bracket the k-th distance")
        pending = pending[~certified]
        num_candidates = min(m - 1, 4 * num_candidates)

    remaining = torch.zeros_like(need)
    tied_u, tied_g = rows.new_zeros(0), rows.new_zeros(0)
    empty = rows.new_zeros(0)
    bq, bg = torch.cat([empty, *und_q]), torch.cat([empty, *und_g])
    if bq.numel():
        # Exact distances of the undecided pairs, sorted by (row, distance).
        exact = est.exact(rows[bq], bg)
        order = torch.argsort(exact, stable=True)
        order = order[torch.argsort(bq[order], stable=True)]
        bq, bg, exact = bq[order], bg[order], exact[order]
        bmult = counts[bg]
        num = rows.numel()
        seg_start = _segment_first(bq, torch.ones_like(bq, dtype=torch.bool), num)
        cum = bmult.cumsum(0)
        before = torch.where(seg_start > 0, cum[(seg_start - 1).clamp(min=0)], torch.zeros_like(seg_start))
        reached = cum - before[bq] >= need_rem[bq]
        first = _segment_first(bq, reached, num)[bq]
        if bool((first >= bq.numel()).any()):  # pragma: no cover - would mean a wrong rounding bound
            raise RuntimeError("exact kNN: the rounding bound failed to bracket a k-th distance")
        cut = exact[first]
        take = exact <= cut if keep_ties else exact < cut
        full_u.append(rows[bq[take]])
        full_g.append(bg[take])
        if not keep_ties:
            taken = torch.zeros_like(need_rem).index_add_(0, bq[take], bmult[take])
            has = torch.zeros_like(need_rem, dtype=torch.bool)
            has[bq] = True
            remaining = torch.where(has, need_rem - taken, remaining)
            tie = exact == cut
            tied_u, tied_g = rows[bq[tie]], bg[tie]
    return torch.cat([empty, *full_u]), torch.cat([empty, *full_g]), tied_u, tied_g, remaining


def _search_exact(
    x: Tensor, ks: list[int], keep_ties: bool, budget: int, check_edges: EdgeCheck, rows: Rows | None
) -> list[tuple[Tensor, bool]]:
    n = x.shape[0]
    start, stop = (0, n) if rows is None else rows
    if start == stop:  # no query point: no edge (the flag still says whether all points coincide)
        constant = bool((x == x[0]).all())
        for k in ks:
            check_edges(k, 0, "all points coincide" if constant else "no query point")
        return [(torch.zeros(2, 0, dtype=torch.long, device=x.device), constant) for _ in ks]
    points = torch.arange(start, stop, device=x.device)
    ones = torch.ones(n, dtype=torch.long, device=x.device)
    est = _Estimates(x, budget, symmetric=(start, stop) == (0, n))
    top = max(ks)
    first = min(n - 1, top + max(4, top // 8))
    if len(set(ks)) > 1:  # the largest k's candidates serve every k
        est.prefetch(points, first)
    out = []
    for index, k in enumerate(ks):
        need = torch.full_like(points, k)
        found = _select_groups(
            est, ones, points, need, k, keep_ties, unit=True, detect_duplicates=index == 0, first_count=first
        )
        if found is None:  # two points coincide: search the distinct rows, with multiplicities
            return _knn_dedup(x, ks, keep_ties, budget, check_edges, rows)
        i, j, tied_i, tied_j, remaining = found
        if keep_ties:
            check_edges(k, i.numel(), "many points are equidistant at their k-th distance")
        elif tied_i.numel():
            order = torch.argsort(tied_i * n + tied_j)
            tied_i, tied_j = tied_i[order], tied_j[order]
            keep = _ranks_within(tied_i) < remaining[tied_i - start]
            i, j = torch.cat([i, tied_i[keep]]), torch.cat([j, tied_j[keep]])
        order = torch.argsort(i * n + j)
        out.append((torch.stack([i[order], j[order]]), False))
    return out


def _knn_dedup(
    x: Tensor, ks: list[int], keep_ties: bool, budget: int, check_edges: EdgeCheck, rows: Rows | None
) -> list[tuple[Tensor, bool]]:
    """Exact kNN when points repeat: distinct rows are searched once and counted with multiplicity."""
    n = x.shape[0]
    start, stop = (0, n) if rows is None else rows
    uniq, inverse, counts = torch.unique(x, dim=0, return_inverse=True, return_counts=True)
    m = uniq.shape[0]
    if m == 1:
        out = []
        for k in ks:
            check_edges(k, (stop - start) * (n - 1), "all points coincide")
            # The complete graph's edges are sorted by source, n - 1 per point.
            out.append((_complete_graph(n, x.device)[:, start * (n - 1) : stop * (n - 1)], True))
        return out
    members = torch.argsort(inverse, stable=True)  # points grouped by distinct row, ascending index
    gstart = counts.cumsum(0) - counts
    # Query points of every distinct row (all of its points unless ``rows`` restricts them).
    in_rows = torch.zeros_like(counts).index_add_(
        0, inverse[start:stop], torch.ones_like(inverse[start:stop])
    )
    queried = in_rows > 0
    repeated = int(counts[counts > 1].sum())
    est = _Estimates(uniq, budget, symmetric=(start, stop) == (0, n))
    top = max(ks)
    first = min(m - 1, top + max(4, top // 8))
    if len(set(ks)) > 1:  # the largest k needs the most rows: its candidates serve every k
        top_rows = (((top - (counts - 1)) > 0) & queried).nonzero().squeeze(1)
        if top_rows.numel():
            est.prefetch(top_rows, first)
    dup = ((counts > 1) & queried).nonzero().squeeze(1)

    # Hand every (u, j) pair to each query point i of row u, dropping i == j.
    def per_point(u: Tensor, j: Tensor) -> tuple[Tensor, Tensor]:
        pair = torch.arange(u.numel(), device=x.device)
        pair_rep, i = _expand(pair, u, counts, gstart, members)
        j = j[pair_rep]
        keep = (i != j) & (i >= start) & (i < stop)
        return i[keep], j[keep]

    out = []
    for k in ks:
        need = (k - (counts - 1)).clamp(min=0)
        q_rows = ((need > 0) & queried).nonzero().squeeze(1)
        found = _select_groups(est, counts, q_rows, need[q_rows], k, keep_ties, first_count=first)
        assert found is not None
        full_u, full_g, tied_u, tied_g, remaining = found
        if keep_ties:  # the edge count, from the multiplicities, before any edge is built
            edges = int((in_rows[full_u] * counts[full_g]).sum()) + int(
                (in_rows[dup] * (counts[dup] - 1)).sum()
            )
            check_edges(
                k, edges, f"{repeated} of the {n} points coincide with another point ({m} distinct rows)"
            )

        # (distinct row u, point j) pairs: every point of u's neighbour rows, then tied points by index.
        owner_u, nbr_j = _expand(full_u, full_g, counts, gstart, members)
        if not keep_ties and tied_u.numel():
            tu, tj = _expand(tied_u, tied_g, counts, gstart, members)
            order = torch.argsort(tu * n + tj)
            tu, tj = tu[order], tj[order]
            rem = torch.zeros(m, dtype=torch.long, device=x.device)
            rem[q_rows] = remaining
            keep = _ranks_within(tu) < rem[tu]
            owner_u, nbr_j = torch.cat([owner_u, tu[keep]]), torch.cat([nbr_j, tj[keep]])

        # Own-row duplicates: all of them when keeping ties; otherwise the first min(k, c - 1) by index.
        if keep_ties:
            own_u, own_j = _expand(dup, dup, counts, gstart, members)
        else:
            own_u, own_j = _expand(dup, dup, counts.clamp(max=k + 1), gstart, members)

        i_other, j_other = per_point(owner_u, nbr_j)
        i_own, j_own = per_point(own_u, own_j)
        if not keep_ties and i_own.numel():
            order = torch.argsort(i_own * n + j_own)
            i_own, j_own = i_own[order], j_own[order]
            keep = _ranks_within(i_own) < torch.clamp(counts[inverse[i_own]] - 1, max=k)
            i_own, j_own = i_own[keep], j_own[keep]
        i = torch.cat([i_own, i_other])
        j = torch.cat([j_own, j_other])
        order = torch.argsort(i * n + j)
        out.append((torch.stack([i[order], j[order]]), False))
    return out


def _search_torch_cluster(
    x: Tensor, ks: list[int], keep_ties: bool, budget: int, check_edges: EdgeCheck, rows: Rows | None
) -> list[tuple[Tensor, bool]]:
    """Exactly k neighbours per point from ``torch_cluster.knn`` (its own tie order), for each k.

    Its tie order may depend on the query set, so ``rows`` keeps the rows of the whole search.
    """
    del keep_ties, budget, check_edges  # exactly k: no ties kept, no blocks
    try:
        import torch_cluster
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "`knn_backend='torch_cluster'` needs torch-cluster, which ships no wheels on PyPI: "
            "`pip install --no-build-isolation torch-cluster`"
        ) from err
    n = x.shape[0]
    out = []
    constant = bool((x == x[0]).all())
    if not constant:
        scale = _power_of_two_scale(_abs_max(x), 2.0**-20, 2.0**20)
        xs = x * scale if scale != 1.0 else x
        xc = xs - xs.mean(dim=0, keepdim=True)
    for k in ks:
        if constant:
            edges = _complete_graph(n, x.device)
        else:
            query, nbr = torch_cluster.knn(xc, xc, k + 1)
            keep = query != nbr
            query, nbr = query[keep], nbr[keep]
            order = torch.argsort(query, stable=True)
            query, nbr = query[order], nbr[order]
            keep = _ranks_within(query) < k
            query, nbr = query[keep], nbr[keep]
            order = torch.argsort(query * n + nbr)
            edges = torch.stack([query[order], nbr[order]])
        if rows is not None:
            edges = edges[:, (edges[0] >= rows[0]) & (edges[0] < rows[1])]
        out.append((edges, constant))
    return out


def _drop_farthest_unless_tied(
    x: Tensor, edges: Tensor, k: int, names: tuple[str, str], backend: str
) -> Tensor:
    """From k + 1 neighbours per point, keep the k nearest; refuse when the k-th and (k+1)-th are tied.

    The squared distances are the exact float64 differences that decide ties in the exact backend. A
    point whose k-th and (k+1)-th neighbours are at the same distance has more than k neighbours under
    the keep-ties rule, which a backend returning exactly k cannot give.
    """
    n = x.shape[0]
    i, j = edges[0], edges[1]
    d = exact_sq_distances(x, i, j)
    order = torch.argsort(d, stable=True)
    order = order[torch.argsort(i[order], stable=True)]
    i, j, d = i[order], j[order], d[order]
    rank = _ranks_within(i)
    kth = torch.full((n,), -1.0, dtype=d.dtype, device=d.device)
    after = torch.full((n,), -2.0, dtype=d.dtype, device=d.device)
    kth[i[rank == k - 1]] = d[rank == k - 1]
    after[i[rank == k]] = d[rank == k]
    tied = (kth == after).nonzero().squeeze(1)
    if tied.numel():
        backend_name, ties_name = names
        raise ValueError(
            f"`{backend_name}={backend!r}` returns exactly k neighbours and cannot keep ties "
            f"(`{ties_name}`), but {tied.numel()} of the {n} points have two or more neighbours at their "
            f"k-th distance (k = {k}; e.g. point {int(tied[0])}): the graph would silently differ from the "
            f"keep-all-ties rule; use `{backend_name}='gemm'`"
        )
    keep = rank < k
    i, j = i[keep], j[keep]
    order = torch.argsort(i * n + j)
    return torch.stack([i[order], j[order]])


KNN_BACKEND_SPECS: dict[str, KnnBackendSpec] = {
    "gemm": KnnBackendSpec(
        name="gemm",
        search=_search_exact,
        supports_keep_ties=True,
        summary="exact: chunked float32 GEMM with a rigorous bound, ties decided in float64 (pure torch)",
    ),
    "torch_cluster": KnnBackendSpec(
        name="torch_cluster",
        search=_search_torch_cluster,
        supports_keep_ties=False,
        devices=("cpu", "cuda"),
        max_k={"cuda": 99},
        summary="torch_cluster.knn: exactly k neighbours in the library's tie order",
    ),
}
"""The kNN backends by name; ``"auto"`` selects ``"gemm"``."""

if set(KNN_BACKENDS) != {
    "auto",
    *KNN_BACKEND_SPECS,
}:  # pragma: no cover - a registry edit without the Literal
    raise RuntimeError("`KnnBackend` and `KNN_BACKEND_SPECS` name different backends")

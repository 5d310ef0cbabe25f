"""Exact k-nearest-neighbour graphs on the device.

Shape symbols: N points, D features, M distinct points, E directed edges.

The default backend is exact: a blocked GEMM on centred features (TF32 off) proposes ``k + margin``
candidates per point, their distances are recomputed from differences in float64, and a rigorous
bound on the GEMM's rounding error proves that no point outside the candidates can be closer than the
k-th neighbour. Rows the bound cannot certify are retried with more candidates. Identical rows
(dead-ReLU activations are often all zero) are merged first and counted with their multiplicity, so
ties at the k-th distance cost nothing extra.

Two tie rules are offered:

* ``ties="keep"``: every point at a distance <= the k-th smallest distance is a neighbour, as R's
  ``cccd::nng`` builds it (Baptista et al.). The out-degree can exceed k.
* ``ties="first"``: exactly k neighbours; points tied at the k-th distance are taken by lowest index.
  scikit-learn's ``kneighbors_graph`` (Hehl et al.) also returns k, with a tie order that depends on its
  search algorithm; on tie-free data the two agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor

from lightning_ricci.geometry._checks import check_choice, check_features, check_int

Ties = Literal["keep", "first"]
KnnBackend = Literal["auto", "gemm", "torch_cluster"]

KNN_BACKENDS = ("auto", "gemm", "torch_cluster")
_TIES = ("keep", "first")
# Default scratch memory for the float32 distance blocks; the whole [M, M] matrix is formed (to use its
# symmetry) when it fits.
DEFAULT_MEMORY_BUDGET = {"cpu": 1 << 28, "cuda": 1 << 31}
# Elements of one [pairs, D] float64 block of exact differences.
_EXACT_ELEMENTS = 1 << 18


def knn_graph(x: Tensor, k: int, *, ties: Ties = "first", backend: KnnBackend = "auto") -> Tensor:
    """Directed k-nearest-neighbour graph of a point cloud, without self-loops.

    Args:
        x (Tensor): [N, ...] float32 or float64 points; trailing dimensions are flattened.
            A 1-D tensor is read as N points with one feature.
        k (int): neighbours per point, ``1 <= k < N``.
        ties (str): ``"keep"`` keeps every point tied at the k-th distance (R's ``cccd::nng``);
            ``"first"`` keeps exactly k, breaking ties by lowest index. Default: ``"first"``.
        backend (str): ``"gemm"`` (exact blocked GEMM, the default of ``"auto"``) or
            ``"torch_cluster"`` (``torch_cluster.knn``; exactly k neighbours in the library's tie
            order, ``k <= 99`` on CUDA). Default: ``"auto"``.

    Returns:
        Tensor: [2, E] long on ``x.device``; ``edge_index[1]`` lists the neighbours of
        ``edge_index[0]``, sorted by ``(edge_index[0], edge_index[1])``.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [2.0], [4.0]])
        >>> knn_graph(x, k=1, ties="keep")
        tensor([[0, 1, 1, 2, 3],
                [1, 0, 2, 1, 2]])
    """
    x = check_features("x", x, allow_1d=True)
    k = check_int("k", k, low=1, high=x.shape[0])
    check_choice("ties", ties, _TIES)
    check_choice("backend", backend, KNN_BACKENDS)
    edge_index, _ = knn_edges(x, k, keep_ties=ties == "keep", backend=backend)
    return edge_index


def knn_edges(
    x: Tensor, k: int, *, keep_ties: bool, backend: KnnBackend = "auto", memory_budget: int | None = None
) -> tuple[Tensor, bool]:
    """Unchecked :func:`knn_graph` on [N, D] features; also says whether all points coincide.

    A layer whose points all coincide gets the complete graph under both tie rules. ``memory_budget``
    bounds the bytes of one block of estimated distances (default: :data:`DEFAULT_MEMORY_BUDGET`).
    """
    if backend == "torch_cluster":
        return _knn_torch_cluster(x, k)
    budget = memory_budget or DEFAULT_MEMORY_BUDGET.get(x.device.type, DEFAULT_MEMORY_BUDGET["cuda"])
    return _knn_exact(x, k, keep_ties=keep_ties, budget=budget)


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


def _expand(owner: Tensor, group: Tensor, counts: Tensor, gstart: Tensor, members: Tensor) -> tuple[Tensor, Tensor]:
    """Replace every (owner, group) pair by (owner, j) for each member j of the group, in index order."""
    sizes = counts[group]
    total = int(sizes.sum())
    owner_rep = owner.repeat_interleave(sizes, output_size=total)
    first = (sizes.cumsum(0) - sizes).repeat_interleave(sizes, output_size=total)
    base = gstart[group].repeat_interleave(sizes, output_size=total)
    offset = torch.arange(total, device=owner.device) - first
    return owner_rep, members[base + offset]


def _candidate_distances(
    xc: Tensor, sq: Tensor, rows: Tensor, num_candidates: int, budget: int
) -> tuple[Tensor, Tensor]:
    """GEMM estimate of the ``num_candidates`` nearest other rows of ``rows``: (values, indices), sorted."""
    m = xc.shape[0]
    elements = max(1, budget // (2 * xc.element_size()))
    if rows.numel() == m and m * m <= elements:
        d2 = _symmetric_gram(xc)
        d2.mul_(-2.0).add_(sq.unsqueeze(0)).add_(sq.unsqueeze(1))
        d2.fill_diagonal_(torch.inf)
        return torch.topk(d2, num_candidates, dim=1, largest=False, sorted=True)
    step = max(1, elements // max(m, 1))
    values, indices = [], []
    for start in range(0, rows.numel(), step):
        q = rows[start : start + step]
        d2 = torch.addmm(sq.unsqueeze(0), xc[q], xc.T, beta=1.0, alpha=-2.0).add_(sq[q].unsqueeze(1))
        d2[torch.arange(q.numel(), device=q.device), q] = torch.inf
        v, i = torch.topk(d2, num_candidates, dim=1, largest=False, sorted=True)
        values.append(v)
        indices.append(i)
    return torch.cat(values), torch.cat(indices)


def _symmetric_gram(xc: Tensor) -> Tensor:
    """``xc @ xc.T`` from the blocks on and above the diagonal only (about 60 % of the flops)."""
    m = xc.shape[0]
    out = xc.new_empty(m, m)
    step = max(256, -(-m // 6))
    for start in range(0, m, step):
        stop = min(m, start + step)
        block = xc[start:stop] @ xc[start:].T
        out[start:stop, start:] = block
        out[stop:, start:stop] = block[:, stop - start :].T
    return out


def _exact_sq_distances(x64: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Squared distances between ``x64[a]`` and ``x64[b]`` (paired, [P]) from float64 differences.

    Small chunks keep the gathered rows in cache and reuse the allocator's blocks; one large gather is
    several times slower on the CPU.
    """
    step = max(1, _EXACT_ELEMENTS // max(x64.shape[1], 1))
    out = [
        (x64[a[s : s + step]] - x64[b[s : s + step]]).pow_(2).sum(-1) for s in range(0, a.numel(), step)
    ]
    return torch.cat(out) if out else x64.new_zeros(0)


def _segment_first(seg: Tensor, flag: Tensor, num_segments: int) -> Tensor:
    """Index of the first ``True`` of ``flag`` inside every segment of the sorted ``seg`` ([num_segments])."""
    pos = torch.arange(seg.numel(), device=seg.device)
    pos = torch.where(flag, pos, torch.full_like(pos, seg.numel()))
    first = torch.full((num_segments,), seg.numel(), dtype=torch.long, device=seg.device)
    return first.scatter_reduce_(0, seg, pos, reduce="amin")


def _select_groups(
    uniq: Tensor,
    counts: Tensor,
    rows: Tensor,
    need: Tensor,
    k: int,
    keep_ties: bool,
    budget: int,
    detect_duplicates: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None:
    """Pick, for every distinct row in ``rows``, the other distinct rows that hold its neighbours.

    ``need[q]`` neighbours (counted with multiplicity) must come from rows other than ``rows[q]``.
    Returns ``(full_u, full_g, tied_u, tied_g, remaining)``: distinct rows ``full_g`` all of whose
    points are neighbours of ``full_u``; rows ``tied_g`` at exactly the cut-off distance of ``tied_u``
    (only for ``keep_ties=False``), of which ``remaining[q]`` points, lowest index first, complete the k.
    With ``detect_duplicates``, returns ``None`` as soon as two rows of ``uniq`` are found equal.

    The GEMM estimate ``a`` of a squared distance is within ``tau`` of the exact value, so the exact
    cut-off (the ``need``-th smallest, with multiplicity) is within ``tau`` of the estimated one
    ``a_k``. Candidates estimated below ``a_k - 2 tau`` are certainly in, those above ``a_k + 2 tau``
    certainly out; only the few in between are recomputed exactly, in float64 from differences.
    """
    m, dim = uniq.shape
    unit_roundoff = torch.finfo(uniq.dtype).eps / 2
    with exact_matmul():
        xc = uniq - uniq.mean(dim=0, keepdim=True)
        sq = (xc * xc).sum(dim=1)
    x64 = uniq.double()
    norms = sq.double().sqrt()
    # Bound on |GEMM estimate - exact squared distance| with a factor 2 of slack: dot product, norms,
    # their sum, and the rounding of the centring.
    tau = 2.0 * (dim + 8) * unit_roundoff * (norms[rows] + norms.max()) ** 2

    full_u, full_g, tied_u, tied_g = [], [], [], []
    remaining = torch.zeros_like(need)
    num_candidates = min(m - 1, k + max(8, k // 2))
    pending = torch.arange(rows.numel(), device=uniq.device)
    while pending.numel():
        approx, cand = _candidate_distances(xc, sq, rows[pending], num_candidates, budget)
        approx = approx.double()
        if detect_duplicates:
            dr, dc = (approx <= tau[pending].unsqueeze(1)).nonzero(as_tuple=True)
            if dr.numel() and bool((_exact_sq_distances(x64, rows[pending][dr], cand[dr, dc]) == 0).any()):
                return None
            detect_duplicates = False
        mult = counts[cand]
        nd = need[pending]
        pos = (mult.cumsum(dim=1) < nd.unsqueeze(1)).sum(dim=1)
        a_k = approx.gather(1, pos.clamp(max=num_candidates - 1).unsqueeze(1)).squeeze(1)
        lo = (a_k - 2 * tau[pending]).unsqueeze(1)
        hi = (a_k + 2 * tau[pending]).unsqueeze(1)
        certified = pos < num_candidates
        if num_candidates < m - 1:
            certified &= approx[:, -1:].squeeze(1) > hi.squeeze(1)
        ok = certified.nonzero().squeeze(1)
        approx, cand, mult, lo, hi, q_ok = approx[ok], cand[ok], mult[ok], lo[ok], hi[ok], pending[ok]
        u_ok = rows[q_ok]

        inside = approx < lo
        r, c = inside.nonzero(as_tuple=True)
        full_u.append(u_ok[r])
        full_g.append(cand[r, c])
        # Exact distances for the band, sorted by (row, distance).
        br, bc = ((approx >= lo) & (approx <= hi)).nonzero(as_tuple=True)
        bg = cand[br, bc]
        exact = _exact_sq_distances(x64, u_ok[br], bg)
        order = torch.argsort(exact, stable=True)
        order = order[torch.argsort(br[order], stable=True)]
        br, bg, exact = br[order], bg[order], exact[order]
        bmult = counts[bg]
        need_rem = need[q_ok] - torch.where(inside, mult, torch.zeros_like(mult)).sum(dim=1)
        seg_start = _segment_first(br, torch.ones_like(br, dtype=torch.bool), ok.numel())
        cum = bmult.cumsum(0)
        before = torch.where(seg_start > 0, cum[(seg_start - 1).clamp(min=0)], torch.zeros_like(seg_start))
        reached = cum - before[br] >= need_rem[br]
        cut = exact[_segment_first(br, reached, ok.numel())][br]
        take = exact <= cut if keep_ties else exact < cut
        full_u.append(u_ok[br[take]])
        full_g.append(bg[take])
        if not keep_ties:
            taken = torch.zeros_like(need_rem).index_add_(0, br[take], bmult[take])
            remaining[q_ok] = need_rem - taken
            tie = exact == cut
            tied_u.append(u_ok[br[tie]])
            tied_g.append(bg[tie])
        pending = pending[~certified]
        num_candidates = min(m - 1, 4 * num_candidates)
    empty = rows.new_zeros(0)
    return (
        torch.cat(full_u) if full_u else empty,
        torch.cat(full_g) if full_g else empty,
        torch.cat(tied_u) if tied_u else empty,
        torch.cat(tied_g) if tied_g else empty,
        remaining,
    )


def _knn_exact(x: Tensor, k: int, *, keep_ties: bool, budget: int) -> tuple[Tensor, bool]:
    n = x.shape[0]
    points = torch.arange(n, device=x.device)
    ones, need = torch.ones_like(points), torch.full_like(points, k)
    found = _select_groups(x, ones, points, need, k, keep_ties, budget, detect_duplicates=True)
    if found is not None:  # no two points coincide: every "group" is one point
        i, j, tied_i, tied_j, remaining = found
        if not keep_ties and tied_i.numel():
            order = torch.argsort(tied_i * n + tied_j)
            tied_i, tied_j = tied_i[order], tied_j[order]
            keep = _ranks_within(tied_i) < remaining[tied_i]
            i, j = torch.cat([i, tied_i[keep]]), torch.cat([j, tied_j[keep]])
        order = torch.argsort(i * n + j)
        return torch.stack([i[order], j[order]]), False
    return _knn_dedup(x, k, keep_ties=keep_ties, budget=budget)


def _knn_dedup(x: Tensor, k: int, *, keep_ties: bool, budget: int) -> tuple[Tensor, bool]:
    """Exact kNN when points repeat: distinct rows are searched once and counted with multiplicity."""
    n = x.shape[0]
    uniq, inverse, counts = torch.unique(x, dim=0, return_inverse=True, return_counts=True)
    m = uniq.shape[0]
    if m == 1:
        return _complete_graph(n, x.device), True
    members = torch.argsort(inverse, stable=True)  # points grouped by distinct row, ascending index
    gstart = counts.cumsum(0) - counts
    need = (k - (counts - 1)).clamp(min=0)
    rows = need.nonzero().squeeze(1)
    found = _select_groups(uniq, counts, rows, need[rows], k, keep_ties, budget)
    assert found is not None
    full_u, full_g, tied_u, tied_g, remaining = found

    # (distinct row u, point j) pairs: every point of u's neighbour rows, then tied points by index.
    owner_u, nbr_j = _expand(full_u, full_g, counts, gstart, members)
    if not keep_ties and tied_u.numel():
        tu, tj = _expand(tied_u, tied_g, counts, gstart, members)
        order = torch.argsort(tu * n + tj)
        tu, tj = tu[order], tj[order]
        rem = torch.zeros(m, dtype=torch.long, device=x.device)
        rem[rows] = remaining
        keep = _ranks_within(tu) < rem[tu]
        owner_u, nbr_j = torch.cat([owner_u, tu[keep]]), torch.cat([nbr_j, tj[keep]])

    # Own-row duplicates: all of them when keeping ties; otherwise the first min(k, c - 1) by index.
    dup = (counts > 1).nonzero().squeeze(1)
    if keep_ties:
        own_u, own_j = _expand(dup, dup, counts, gstart, members)
    else:
        own_u, own_j = _expand(dup, dup, counts.clamp(max=k + 1), gstart, members)

    # Hand every (u, j) pair to each point i of row u, dropping i == j.
    def per_point(u: Tensor, j: Tensor) -> tuple[Tensor, Tensor]:
        pair = torch.arange(u.numel(), device=x.device)
        pair_rep, i = _expand(pair, u, counts, gstart, members)
        j = j[pair_rep]
        keep = i != j
        return i[keep], j[keep]

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
    return torch.stack([i[order], j[order]]), False


def _knn_torch_cluster(x: Tensor, k: int) -> tuple[Tensor, bool]:
    try:
        import torch_cluster
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "`knn_backend='torch_cluster'` needs torch-cluster, which ships no wheels on PyPI: "
            "`pip install --no-build-isolation torch-cluster`"
        ) from err
    if x.is_cuda and k > 99:
        raise ValueError(
            "`k` must be <= 99 with `knn_backend='torch_cluster'` on CUDA: its kernel keeps at most 100 "
            f"neighbours, the point itself included (got {k}); use `knn_backend='gemm'`"
        )
    n = x.shape[0]
    constant = bool((x == x[0]).all())
    if constant:
        return _complete_graph(n, x.device), True
    xc = x - x.mean(dim=0, keepdim=True)
    query, nbr = torch_cluster.knn(xc, xc, k + 1)
    keep = query != nbr
    query, nbr = query[keep], nbr[keep]
    order = torch.argsort(query, stable=True)
    query, nbr = query[order], nbr[order]
    keep = _ranks_within(query) < k
    query, nbr = query[keep], nbr[keep]
    order = torch.argsort(query * n + nbr)
    return torch.stack([query[order], nbr[order]]), False

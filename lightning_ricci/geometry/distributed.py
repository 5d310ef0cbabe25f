"""Sharding :func:`~lightning_ricci.ricci_flow` over the ranks of a ``torch.distributed`` process group.

Shape symbols: N probe points, L layers, E_l directed kNN edges of layer l.

Two pieces of work split without changing a single number:

* the kNN graphs: each rank searches the neighbours of one contiguous share of every layer's N query
  rows (the distance estimates of those rows only, against all N), and the shares are gathered in rank
  order, which is the whole graph since its edges are sorted by source; the keep-ties edge budget is
  checked on the edge count summed over the ranks. The torch-cluster backend, whose tie order may
  depend on the query set, computes whole layers instead, dealt to ranks by their cost (N^2 D_l,
  largest first), and broadcasts them;
* the BFS: each rank runs the sources of one contiguous share of the N nodes; the per-node distance
  sums (int64) are summed over the ranks, and every queried pair's distance is taken from the rank
  that owns its source (the others report -1, so a max recovers it).

Everything else is cheap and computed on every rank from the same integers, so every rank returns the
same result as a single process, bit for bit. Only ``torch.distributed`` collectives are used, on the
device of the layers (``gloo`` for CPU tensors, ``nccl`` for CUDA tensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

    Group = ProcessGroup
else:
    Group = Any


def check_group(process_group: Any) -> Group | None:
    """Return ``process_group``, or ``None`` when it has a single rank; raise if it cannot be used."""
    if process_group is None:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "`process_group` needs an initialised torch.distributed default group "
            "(`torch.distributed.init_process_group`, or a Lightning DDP strategy) "
            f"(got {process_group!r} without one); pass `process_group=None` for a single process"
        )
    if not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            "`process_group` must be a torch.distributed.ProcessGroup, e.g. `torch.distributed.group.WORLD` "
            f"(got {type(process_group).__name__})"
        )
    if dist.get_rank(process_group) < 0:
        raise ValueError("`process_group` must contain the calling rank (got a group without it)")
    return process_group if dist.get_world_size(process_group) > 1 else None


def rank_and_size(group: Group | None) -> tuple[int, int]:
    """(rank, world size) inside ``group``; (0, 1) for a single process."""
    if group is None:
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(group), dist.get_world_size(group)


def shard(n: int, group: Group | None) -> tuple[int, int] | None:
    """The BFS sources [start, stop) of this rank: a contiguous, near-equal share of the ``n`` nodes."""
    if group is None:
        return None
    rank, size = rank_and_size(group)
    return rank * n // size, (rank + 1) * n // size


def layer_owners(costs: Sequence[float], size: int) -> list[int]:
    """The rank that computes each layer's kNN graph: largest cost first, to the least-loaded rank."""
    load = [0.0] * size
    owners = [0] * len(costs)
    for layer in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(size), key=lambda r: (load[r], r))
        owners[layer] = rank
        load[rank] += costs[layer]
    return owners


def check_same_call(values: Sequence[int], group: Group, device: torch.device) -> None:
    """Raise ``ValueError`` on every rank unless all ranks passed the same sizes and options."""
    import torch.distributed as dist

    mine = torch.tensor(list(values), dtype=torch.long, device=device)
    low, high = mine.clone(), mine.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
    dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
    if not torch.equal(low, high):
        raise ValueError(
            "`process_group`: every rank must call ricci_flow with the same number of points, layers, "
            f"feature sizes and options (got {mine.tolist()} on this rank, {low.tolist()}..{high.tolist()} "
            "across ranks)"
        )


def all_reduce_sum(tensors: Sequence[Tensor], group: Group) -> list[Tensor]:
    """Sum over the ranks of equally shaped long tensors, with one collective."""
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    return [part.view_as(t) for part, t in zip(torch.split(flat, [t.numel() for t in tensors]), tensors)]


def all_reduce_max(tensor: Tensor, group: Group) -> Tensor:
    """Elementwise maximum over the ranks."""
    import torch.distributed as dist

    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX, group=group)
    return out


def share_layers(
    local: dict[int, tuple[Tensor, bool, Tensor | None]],
    owners: Sequence[int],
    group: Group,
    device: torch.device,
    with_distances: bool,
) -> list[tuple[Tensor, bool, Tensor | None]]:
    """Every layer's (edges [2, E_l], all-points-coincide flag, squared distances [E_l] or None), on all ranks.

    ``local`` holds the layers this rank computed; each is broadcast from its owner.
    """
    import torch.distributed as dist

    num_layers = len(owners)
    meta = torch.zeros(num_layers, 2, dtype=torch.long, device=device)
    for layer, (edges, constant, _) in local.items():
        meta[layer, 0] = edges.shape[1]
        meta[layer, 1] = int(constant)
    dist.all_reduce(meta, op=dist.ReduceOp.SUM, group=group)
    sizes = meta.tolist()
    out: list[tuple[Tensor, bool, Tensor | None]] = []
    for layer, owner in enumerate(owners):
        num_edges, constant = sizes[layer]
        src = dist.get_global_rank(group, owner)
        if layer in local:
            edges, _, sq = local[layer]
            edges = edges.contiguous()
        else:
            edges = torch.empty(2, num_edges, dtype=torch.long, device=device)
            sq = torch.empty(num_edges, dtype=torch.float64, device=device) if with_distances else None
        dist.broadcast(edges, src=src, group=group)
        if with_distances:
            assert sq is not None
            sq = sq.contiguous()
            dist.broadcast(sq, src=src, group=group)
        out.append((edges, bool(constant), sq))
    return out


def all_reduce_count(count: int, group: Group, device: torch.device) -> int:
    """The sum of ``count`` over the ranks."""
    import torch.distributed as dist

    total = torch.tensor([count], dtype=torch.long, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return int(total.item())


def gather_row_shards(
    parts: Sequence[tuple[Tensor, bool]], group: Group, device: torch.device
) -> list[tuple[Tensor, bool]]:
    """Join every rank's share of P graphs: edges [2, E_p] concatenated in rank order, flags or-ed.

    ``parts[p]`` is this rank's (edges of its query rows, all points coincide) of graph p; every rank
    passes the same P. Two collectives: the sizes, then all edges padded to the largest rank's total.
    """
    import torch.distributed as dist

    _, size = rank_and_size(group)
    meta = torch.tensor([[e.shape[1], int(c)] for e, c in parts], dtype=torch.long, device=device).view(-1, 2)
    metas = [torch.empty_like(meta) for _ in range(size)]
    dist.all_gather(metas, meta, group=group)
    totals = [int(m[:, 0].sum()) for m in metas]
    width = max(totals)
    mine = torch.zeros(2, width, dtype=torch.long, device=device)
    if parts:
        mine[:, : totals[rank_and_size(group)[0]]] = torch.cat([e for e, _ in parts], dim=1)
    every = [torch.empty_like(mine) for _ in range(size)]
    dist.all_gather(every, mine, group=group)
    pieces = [
        torch.split(edges[:, :total], m[:, 0].tolist(), dim=1)
        for edges, total, m in zip(every, totals, metas)
    ]
    flags = torch.stack(metas)[:, :, 1].amax(dim=0).tolist()
    return [
        (torch.cat([pieces[r][p] for r in range(size)], dim=1), bool(flags[p])) for p in range(len(parts))
    ]

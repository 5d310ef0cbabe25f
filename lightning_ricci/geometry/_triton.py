"""One fused Triton kernel per level of the bit-packed multi-source BFS (the CUDA path).

Layout. The BFS state of one block of sources is a set of [R, W] int64 bit rows, as in
:mod:`~lightning_ricci.geometry._bitset`: ``frontier`` (pairs reached at the previous level), ``nxt``
(pairs reached at this level), ``unvisited``, and the bit planes that spell every pair's distance in
binary. Rows are relabelled by non-increasing degree and the adjacency is CSR (``ptr``, ``col``) over the
new labels.

One program owns a [ROWS, BLOCK_W] tile: ROWS consecutive rows and BLOCK_W consecutive words of each
(ELLPACK slices over degree-sorted rows). It steps through the neighbour lists of its rows together,
neighbour k of every row at step k, for as many steps as its longest list, and ORs the frontier words of
those neighbours into a register tile; rows whose list is shorter are masked off, and since neighbouring
rows have nearly equal degrees little is masked. Every thread holds words of several rows, so several
independent row loads are in flight per thread at each step. Programs are numbered row-tile-major, so
the tiles of hubs, which come first in degree order and loop longest, start first. The OR masked with
``unvisited`` is ``nxt``. The same program then clears those bits in ``unvisited``, ORs them into the
planes picked by the binary digits of the level, and, if it reached anything, raises a one-element int32
flag to the level number with an atomic max. Every program writes only its own tile (the gather reads
``frontier``, which nobody writes), so there are no races, and the flag ends up holding the last level
that reached a pair: the host reads it every few levels instead of reducing ``nxt``. A whole level is one
launch; the torch path (:class:`~lightning_ricci.geometry._bitset.NeighbourOr`) needs a gather and an OR
per neighbour slot, plus separate passes for the mask, the unvisited update, the emptiness check and
every plane.

Planes are allocated as the level count grows (a BFS of depth d needs ``d.bit_length()`` of them), so
the kernel finds them through a small device table of their addresses, rebuilt when a plane is added.
Stores of ``unvisited`` and of the planes are masked to the words that changed.

The loops are ``while`` loops although ``range`` would be usual: their bounds are run-time values, which
Triton 3.6's interpreter cannot turn into ``range`` bounds under NumPy >= 2.4 (triton-lang/triton#9171).
A ``while`` loop compiles to the same dynamic loop on the GPU and runs in the interpreter, which the tests
use to check the kernel bit for bit against the torch path on CPU tensors (``TRITON_INTERPRET=1``); the
row tiles also keep the interpreter, which pays per operation rather than per element, fast enough.

Triton is optional: the kernel is built on first use, once per mode, since ``triton.jit`` chooses
between compiled and interpreted code when it runs. Triton's own jitted library functions (``tl.max``)
make that choice when Triton is imported, so the interpreter must be switched on before the first import
of Triton in the process.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import torch
from torch import Tensor

ROWS = 8  # consecutive rows per program (one ELLPACK slice)
_KERNELS: dict[bool, Any] = {}
tl: Any = None  # triton.language once a kernel is built
_failure: str | None = None  # why the kernel was given up for this process (``"auto"`` only)
verified: set[str] = set()  # devices where the kernel matched the torch path on a test graph


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """Whether ``triton.jit`` builds interpreted kernels (``TRITON_INTERPRET`` set) right now."""
    try:
        from triton import knobs
    except ImportError:  # Triton < 3.4 reads the variable directly
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return bool(knobs.runtime.interpret)


def use_fused_levels(level_kernel: str, device: torch.device) -> bool:
    """Whether :func:`~lightning_ricci.geometry.geodesics.multi_source_bfs` runs its levels here.

    Args:
        level_kernel (str): ``"auto"``, ``"torch"`` or ``"triton"`` (already validated).
        device (torch.device): device of the graph.

    Returns:
        bool: True for the fused kernel, False for the torch path.

    Raises:
        ValueError: ``level_kernel="triton"`` where the kernel cannot run: Triton missing, or a device
            other than CUDA (compiled) or the CPU (interpreted).
    """
    if level_kernel == "torch":
        return False
    if level_kernel == "auto":
        return device.type == "cuda" and _failure is None and triton_available() and not interpreting()
    if not triton_available():
        raise ValueError("`level_kernel` 'triton' needs the triton package, which cannot be imported")
    interpreted = interpreting()
    if device.type != ("cpu" if interpreted else "cuda"):
        raise ValueError(
            "`level_kernel` 'triton' runs on CUDA tensors, or on CPU tensors with TRITON_INTERPRET=1 "
            f"(got {device.type} tensors, TRITON_INTERPRET {'on' if interpreted else 'off'})"
        )
    return True


def give_up(exc: BaseException) -> None:
    """Use the torch path for the rest of the process after the kernel failed; warns once."""
    global _failure
    if _failure is None:
        _failure = repr(exc)
        warnings.warn(
            f"the Triton BFS kernel failed ({_failure}); using the torch level path from now on",
            RuntimeWarning,
            stacklevel=3,
        )


def launch_config(words: int) -> tuple[int, int]:
    """``(BLOCK_W, num_warps)`` for rows of ``words`` words.

    The word block with the least padding (the larger one on a tie); four tile elements per thread, so
    every thread has four independent row loads in flight per neighbour step.
    """
    block = min((128, 64, 32), key=lambda b: -(-words // b) * b)
    return block, max(1, ROWS * block // 128)


def _kernel() -> Any:
    """The jitted level kernel for the current interpreter mode, built on first use."""
    global tl  # the interpreter resolves the kernel's names in this module's globals, not in a closure
    interpreted = interpreting()
    if interpreted in _KERNELS:
        return _KERNELS[interpreted]
    import triton
    import triton.language as tl

    @triton.jit(do_not_specialize=["level", "num_planes"])  # type: ignore[untyped-decorator]
    def bfs_level(  # type: ignore[no-untyped-def]
        ptr,  # [num_rows + 1] int64 CSR pointer
        col,  # [E] int64 neighbour rows
        frontier,  # [num_rows, words] int64, read only
        nxt,  # [num_rows, words] int64, written
        unvisited,  # [num_rows, words] int64, updated
        plane_table,  # [num_planes] int64 addresses of [num_rows, words] int64 planes, updated
        flag,  # [1] int32: the last level that reached a pair
        level,
        num_planes,
        num_rows,
        words,
        blocks_per_row,
        ROWS: tl.constexpr,
        BLOCK_W: tl.constexpr,
    ):
        pid = tl.program_id(0).to(tl.int64)
        row = (pid // blocks_per_row) * ROWS + tl.arange(0, ROWS)
        offs = (pid % blocks_per_row) * BLOCK_W + tl.arange(0, BLOCK_W)
        has_row = row < num_rows
        tile = has_row[:, None] & (offs < words)[None, :]
        here = row[:, None] * words + offs[None, :]
        start = tl.load(ptr + row, mask=has_row, other=0)
        degree = tl.load(ptr + row + 1, mask=has_row, other=0) - start
        longest = tl.max(degree, axis=0)  # rows come in degree order: the first row's degree
        acc = tl.zeros([ROWS, BLOCK_W], dtype=tl.int64)
        k = 0
        while k < longest:
            has = k < degree
            nbr = tl.load(col + start + k, mask=has, other=0)
            acc |= tl.load(frontier + nbr[:, None] * words + offs[None, :], mask=has[:, None] & tile, other=0)
            k += 1
        left = tl.load(unvisited + here, mask=tile, other=0)
        new = acc & left
        tl.store(nxt + here, new, mask=tile)
        changed = new != 0
        tl.store(unvisited + here, left ^ new, mask=changed)
        p = 0
        while p < num_planes:
            if ((level >> p) & 1) != 0:
                plane = tl.load(plane_table + p).to(tl.pointer_type(tl.int64))
                old = tl.load(plane + here, mask=changed, other=0)
                tl.store(plane + here, old | new, mask=changed)
            p += 1
        if tl.max(tl.max(changed.to(tl.int32), axis=1), axis=0) > 0:  # noqa: SIM102 (no load if nothing new)
            if tl.load(flag, volatile=True) < level:  # skip the atomic once another program raised it
                tl.atomic_max(flag, level, sem="relaxed")

    _KERNELS[interpreted] = bfs_level
    return bfs_level


def launch_level(
    ptr: Tensor,
    col: Tensor,
    frontier: Tensor,
    nxt: Tensor,
    unvisited: Tensor,
    plane_table: Tensor,
    flag: Tensor,
    level: int,
    num_planes: int,
) -> None:
    """One BFS level in one launch: writes ``nxt``, updates ``unvisited``, the planes and ``flag``.

    Args:
        ptr (Tensor): [R + 1] long CSR pointer.
        col (Tensor): [E] long neighbour rows (at least one entry).
        frontier (Tensor): [R, W] int64 pairs reached at the previous level (read only).
        nxt (Tensor): [R, W] int64 output: pairs reached at this level.
        unvisited (Tensor): [R, W] int64 pairs not reached yet; updated in place.
        plane_table (Tensor): [num_planes] long addresses of the [R, W] int64 planes.
        flag (Tensor): [1] int32, raised to ``level`` if this level reached a pair.
        level (int): the level number (its binary digits pick the planes).
        num_planes (int): entries of ``plane_table``.
    """
    rows, words = frontier.shape
    block_w, num_warps = launch_config(words)
    blocks_per_row = -(-words // block_w)
    grid = (-(-rows // ROWS) * blocks_per_row,)
    _kernel()[grid](
        ptr,
        col,
        frontier,
        nxt,
        unvisited,
        plane_table,
        flag,
        level,
        num_planes,
        rows,
        words,
        blocks_per_row,
        ROWS=ROWS,
        BLOCK_W=block_w,
        num_warps=num_warps,
    )


def run_levels(
    ptr: Tensor, col: Tensor, frontier: Tensor, unvisited: Tensor, *, max_level: int, check_every: int
) -> list[Tensor]:
    """Run the BFS of one source block to the end with one fused launch per level.

    Args:
        ptr (Tensor): [R + 1] long CSR pointer (fastest with rows in non-increasing degree order).
        col (Tensor): [E] long neighbour rows.
        frontier (Tensor): [R, W] int64 sources of the block (level 0); used as scratch.
        unvisited (Tensor): [R, W] int64 pairs not reached yet; updated in place.
        max_level (int): an upper bound on the depth (the number of nodes per graph).
        check_every (int): read the progress flag every this many levels.

    Returns:
        list[Tensor]: bit planes [R, W] int64; plane p holds bit p of every reached pair's distance.
    """
    if not all(t.is_contiguous() for t in (ptr, col, frontier, unvisited)):
        raise ValueError("run_levels needs contiguous tensors")
    device = frontier.device
    if col.numel() == 0:
        col = col.new_zeros(1)  # never read; keeps a null pointer out of the launch
    flag = torch.zeros(1, dtype=torch.int32, device=device)
    nxt = torch.empty_like(frontier)
    planes: list[Tensor] = []
    table = torch.empty(0, dtype=torch.long, device=device)
    level = last = 0
    # Triton launches on the current CUDA device, which need not be the tensors' device.
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        while True:
            level += 1
            if level >= 1 << len(planes):
                while level >= 1 << len(planes):
                    planes.append(torch.zeros_like(frontier))
                table = torch.tensor([p.data_ptr() for p in planes], dtype=torch.long, device=device)
            launch_level(ptr, col, frontier, nxt, unvisited, table, flag, level, len(planes))
            # Past max_level every level is empty, so the flag check below always ends the loop.
            if level % check_every == 0 or level > max_level:
                last = int(flag.item())
                if last < level:
                    break
            frontier, nxt = nxt, frontier
    del planes[last.bit_length() :]  # touched only by levels after the last nonempty one: all zero
    return planes

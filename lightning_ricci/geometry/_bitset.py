"""Bit-packed sets on the device: popcount and the neighbourhood OR that drives the BFS.

A set of up to ``64 * W`` sources is a row of ``W`` int64 words. Words are signed; every operation
here is a bit pattern operation, so the sign bit is just bit 63.
"""

from __future__ import annotations

import torch
from torch import Tensor

_M1 = 0x5555555555555555
_M2 = 0x3333333333333333
_M4 = 0x0F0F0F0F0F0F0F0F


def popcount(x: Tensor) -> Tensor:
    """Number of set bits of every int64 word (SWAR; relies on wrapping int64 arithmetic)."""
    x = x - ((x >> 1) & _M1)
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4
    x = x + (x >> 8)
    x = x + (x >> 16)
    x = x + (x >> 32)
    return x & 0x7F


def popcount_rows(x: Tensor) -> Tensor:
    """[R, W] int64 words -> [R] int64 number of set bits per row."""
    return popcount(x).sum(dim=1)


def bit_values(positions: Tensor) -> Tensor:
    """``1 << (positions % 64)`` as int64 words (bit 63 is the sign bit)."""
    return torch.ones_like(positions) << (positions % 64)


def pack_rows(rows: Tensor, positions: Tensor, num_rows: int, num_words: int) -> Tensor:
    """[num_rows, num_words] bitsets with bit ``positions[e]`` set in row ``rows[e]``; pairs must be unique."""
    out = torch.zeros(num_rows * num_words, dtype=torch.long, device=rows.device)
    # Distinct bits of one word never carry, so a sum is an OR.
    out.index_add_(0, rows * num_words + positions // 64, bit_values(positions))
    return out.view(num_rows, num_words)


class NeighbourOr:
    """Plan for ``out[v] = OR of src[u] over the neighbours u of v`` on a CSR graph.

    Every row's neighbour list is cut into pieces of at most ``width`` entries. The pieces are sorted by
    fill so that slot ``s`` touches only the pieces that have an entry there (no padding is read). Rows
    with more than one piece (hubs) are combined the same way in a further stage, until one piece per
    row is left. Index arrays and buffers are built once; a call only gathers and ORs in place, which
    matters on the CPU, where every fresh multi-megabyte allocation costs page faults.

    When rows are ordered by non-increasing degree, the last stage already lists rows in order and no
    final permutation is needed.

    Args:
        ptr (Tensor): [R + 1] long CSR row pointer.
        col (Tensor): [nnz] long neighbour indices into the rows of ``src``.
        width (int): entries per piece. Default: 16.
    """

    def __init__(self, ptr: Tensor, col: Tensor, width: int = 16) -> None:
        self.num_rows = ptr.numel() - 1
        self.stages: list[tuple[int, list[Tensor]]] = []
        device = ptr.device
        while True:
            rows = ptr.numel() - 1
            deg = ptr[1:] - ptr[:-1]
            num_pieces = torch.clamp((deg + width - 1) // width, min=1)
            total = int(num_pieces.sum())
            piece_row = torch.repeat_interleave(
                torch.arange(rows, device=device), num_pieces, output_size=total
            )
            first_piece = num_pieces.cumsum(0) - num_pieces
            start = (torch.arange(total, device=device) - first_piece[piece_row]) * width
            fill = torch.clamp(deg[piece_row] - start, min=0, max=width)
            perm = torch.argsort(fill, descending=True, stable=True)
            offset = (ptr[:-1][piece_row] + start)[perm]
            fill_sorted = fill[perm]
            counts = [int(c) for c in (fill_sorted.unsqueeze(1) > torch.arange(width, device=device)).sum(0)]
            slots = [col[offset[: counts[s]] + s] for s in range(width) if counts[s] > 0]
            self.stages.append((total, slots))
            inv = torch.empty_like(perm)
            inv[perm] = torch.arange(total, device=device)
            if total == rows:
                identity = bool((inv == torch.arange(total, device=device)).all())
                self.final: Tensor | None = None if identity else inv
                break
            ptr = torch.cat([ptr.new_zeros(1), num_pieces.cumsum(0)])
            col = inv  # pieces of a row are consecutive in row order; their outputs sit at inv[...]
        self._buffers: list[Tensor] = []

    def _allocate(self, like: Tensor) -> None:
        words = like.shape[1]
        last = len(self.stages) - 1
        self._buffers = [
            like.new_zeros(total, words) if (i < last or self.final is not None) else like.new_zeros(0, words)
            for i, (total, _) in enumerate(self.stages)
        ]
        widest = max((idx.numel() for _, slots in self.stages for idx in slots[1:]), default=0)
        self._tmp = like.new_empty(widest, words)

    def __call__(self, src: Tensor, out: Tensor) -> Tensor:
        """Write the neighbourhood OR of ``src`` [R, W] into ``out`` [R, W] and return ``out``."""
        if not self._buffers or self._buffers[0].shape[1] != src.shape[1]:
            self._allocate(src)
        x = src
        last = len(self.stages) - 1
        for i, (_, slots) in enumerate(self.stages):
            buf = out if (i == last and self.final is None) else self._buffers[i]
            if not slots:
                buf.zero_()  # a graph without edges
            for s, idx in enumerate(slots):
                n = idx.numel()
                if s == 0:
                    torch.index_select(x, 0, idx, out=buf[:n])
                    if n < buf.shape[0]:
                        buf[n:] = 0  # rows without neighbours
                else:
                    tmp = self._tmp[:n]
                    torch.index_select(x, 0, idx, out=tmp)
                    buf[:n] |= tmp
            x = buf
        if self.final is not None:
            torch.index_select(x, 0, self.final, out=out)
        return out

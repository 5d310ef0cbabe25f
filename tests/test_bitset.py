from __future__ import annotations

import torch

from lightning_ricci.geometry._bitset import NeighbourOr, pack_rows, popcount


def test_popcount_matches_python_including_sign_bit() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-(2**63), 2**63 - 1, (1000,), generator=gen, dtype=torch.long)
    x = torch.cat([x, torch.tensor([-1, -(2**63), 0, 1, 2**63 - 1])])
    expected = [(v & (2**64 - 1)).bit_count() for v in x.tolist()]
    assert popcount(x).tolist() == expected


def test_pack_rows_sets_bits() -> None:
    bits = pack_rows(torch.tensor([0, 0, 1]), torch.tensor([0, 63, 64]), 2, 2)
    assert bits.tolist() == [[1 | -(2**63), 0], [0, 1]]


def test_neighbour_or_with_hubs_matches_dense() -> None:
    gen = torch.Generator().manual_seed(1)
    n = 300
    row = torch.randint(0, n, (3000,), generator=gen)
    col = torch.randint(0, n, (3000,), generator=gen)
    row = torch.cat([row, torch.zeros(n, dtype=torch.long)])  # node 0 is a hub of degree > 300
    col = torch.cat([col, torch.arange(n)])
    order = torch.argsort(row * n + col)
    row, col = row[order], col[order]
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(row, minlength=n).cumsum(0)])
    src = torch.randint(-(2**62), 2**62, (n, 3), generator=gen)
    out = NeighbourOr(ptr, col, width=4)(src, torch.empty_like(src))
    expected = torch.zeros_like(src)
    for r, c in zip(row.tolist(), col.tolist()):
        expected[r] |= src[c]
    assert torch.equal(out, expected)

"""Deprecated: the data sets and networks of the studies now live in ``examples/datasets.py``.

This module only re-exports them under the old names for ``early_stopping_study.py`` until it imports
``datasets`` itself, and will then be removed. The names map as follows: ``circles`` is [H]'s Syn-I
(scikit-learn's ``make_circles(noise=0.03)``), ``discs`` is [H]'s Syn-II (``datasets``' ``four_discs``:
four discs of radius 0.2 centred at (0, +-0.5) and (+-0.5, 0), not class-balanced), ``digits`` is
scikit-learn's 8x8 digits 1 vs 7; for ``digits`` the sizes of :func:`load` are percentages.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets
from datasets import Split, accuracy, mlp

DATASETS = ("circles", "discs", "digits")


def load(name: str, sizes: Sequence[int], seed: int) -> list[Split]:
    """:func:`datasets.load`; for ``digits`` the sizes are percentages of the 361 images."""
    if name == "digits":
        return datasets.load(name, tuple(s / 100 for s in sizes), seed)
    return datasets.load(name, sizes, seed)


__all__ = ["DATASETS", "Split", "accuracy", "load", "mlp"]

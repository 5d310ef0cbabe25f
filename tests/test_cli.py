"""``python -m lightning_ricci`` and ``load_activations`` on files the tests write."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_ricci import ricci_flow
from lightning_ricci.__main__ import main
from lightning_ricci.io import load_activations

N = 120


def activations(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 3, generator=gen)
    layers = [x]
    for _ in range(4):
        weight = torch.randn(layers[-1].shape[1], 10, generator=gen)
        layers.append(torch.relu(layers[-1] @ weight))
    return layers


NAMES = ["input", "h1", "h2", "h3", "h4"]


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    path = tmp_path / "acts.npz"
    np.savez(path, **{name: t.numpy() for name, t in zip(NAMES, activations())})
    return path


def test_cli_table_matches_ricci_flow(npz: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(npz), "--k", "8", "--convention", "hehl", "--curvature", "approx_ollivier"]) == 0
    out = capsys.readouterr().out
    expected = ricci_flow(activations(), 8, convention="hehl", curvature="approx_ollivier")
    assert f"{npz}: 5 layers x {N} points, k=8, convention=hehl, curvature=approx_ollivier" in out
    assert f"global coefficient          {expected.coefficient:+.4f}" in out
    assert f"local mean                  {expected.local_mean:+.4f}" in out
    t = expected.critical_layer
    assert f"critical layer              {t} ({NAMES[t]} -> {NAMES[t + 1]})" in out
    for row in ("layer ", "transition ", "h3 -> h4", "<- critical"):
        assert row in out


def test_cli_labels_give_the_class_structure_of_ricci_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nx = pytest.importorskip("networkx")
    layers = activations()
    labels = (layers[0][:, 0] > 0).long()
    path = tmp_path / "acts.npz"
    np.savez(path, **{name: t.numpy() for name, t in zip(NAMES, layers)}, y=labels.numpy())
    assert main([str(path), "--k", "8", "--labels", "y", "--layers", "input,h1,h2,h3,h4", "--json"]) == 0
    logged = json.loads(capsys.readouterr().out)["logged"]
    expected = ricci_flow(layers, 8, labels=labels)
    assert expected.class_modularity is not None
    assert logged["ricci/class/modularity"] == pytest.approx(float(expected.class_modularity[-1]), abs=1e-12)
    assert logged["ricci/class/mixing/h2"] == pytest.approx(float(expected.class_mixing[2]), abs=1e-12)
    # independently: networkx modularity of the last layer's undirected union graph
    last = expected.edge_index[-1]
    graph = nx.Graph()
    graph.add_nodes_from(range(N))
    graph.add_edges_from(map(tuple, last.T.tolist()))
    parts = [set(torch.nonzero(labels == c).flatten().tolist()) for c in (0, 1)]
    assert logged["ricci/class/modularity"] == pytest.approx(nx.community.modularity(graph, parts), abs=1e-9)


@pytest.mark.parametrize(
    ("entry", "message"),
    [("nope", "names no entry"), ("h1", "one value per point"), ("input", "one value per point")],
)
def test_cli_bad_labels_exit_2(
    npz: Path, entry: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(npz), "--labels", entry]) == 2
    assert message in capsys.readouterr().err


def test_cli_json_pt_list_and_dict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layers = activations(1)
    expected = ricci_flow(layers, default_k := 6)
    assert default_k == max(5, round(0.05 * N))
    torch.save(layers, tmp_path / "list.pt")
    torch.save(dict(zip(NAMES, layers)), tmp_path / "dict.pth")
    for name, labels in (("list.pt", [str(i) for i in range(5)]), ("dict.pth", NAMES)):
        assert main([str(tmp_path / name), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["k"] == 6 and info["convention"] == "baptista"
        assert info["coefficient"] == pytest.approx(expected.coefficient, abs=1e-12)
        assert info["logged"]["ricci/coefficient"] == info["coefficient"]  # defined: logged as it is
        assert info["logged"]["ricci/excluded"] == 0.0
        assert info["logged"][f"ricci/curvature/{labels[2]}"] == pytest.approx(
            float(expected.total_curvature[2])
        )
        assert [layer["name"] for layer in info["layers"]] == labels
        assert [row["layer_coefficient"] for row in info["transitions"]] == pytest.approx(
            expected.layer_coefficient.tolist()
        )
    # --layers: a subset, in order, space- or comma-separated
    assert main([str(tmp_path / "dict.pth"), "--json", "--layers", "input,h2", "h3", "h4"]) == 0
    info = json.loads(capsys.readouterr().out)
    subset = ricci_flow([layers[0], layers[2], layers[3], layers[4]], 6)
    assert [layer["name"] for layer in info["layers"]] == ["input", "h2", "h3", "h4"]
    assert info["coefficient_connected"] == pytest.approx(subset.coefficient_connected, abs=1e-12)


def test_cli_out_writes_figures_and_summary(
    npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    assert main([str(npz), "--out", str(out)]) == 0
    assert (out / "flow.png").stat().st_size > 1000 and (out / "local.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())["num_points"] == N
    assert f"wrote {out / 'summary.json'}, {out / 'flow.png'}, {out / 'local.png'}" in capsys.readouterr().out


def test_cli_out_without_matplotlib_lists_only_what_it_wrote(
    npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if matplotlib were not installed: importing it (or the plotting module, freshly) fails.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.delitem(sys.modules, "lightning_ricci.plotting", raising=False)
    out = tmp_path / "report"
    assert main([str(npz), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert f"wrote {out / 'summary.json'}\n" in captured.out
    assert "flow.png" not in captured.out and "local.png" not in captured.out
    assert "figures skipped" in captured.err and "matplotlib" in captured.err
    assert main([str(npz), "--out", str(out), "--json"]) == 0  # stdout stays one JSON document
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_points"] == N
    assert f"wrote {out / 'summary.json'}\n" in captured.err


@pytest.mark.parametrize("where", ["out", "parent"])
def test_cli_out_on_an_existing_file_names_it(
    where: str, npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "report.txt"
    blocker.write_text("keep me\n")
    out = blocker if where == "out" else blocker / "sub"
    assert main([str(npz), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    prefix = f"python -m lightning_ricci: error: `--out` must name a directory (got {out}, an existing file"
    assert captured.err.startswith(prefix), captured.err
    if where == "parent":
        assert f"above it ({blocker})" in captured.err
    assert "Traceback" not in captured.err and str(npz) not in captured.err
    assert blocker.read_text() == "keep me\n"


def test_cli_progress_with_and_without_tqdm(
    npz: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tqdm")
    assert main([str(npz), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "ricci_flow on 5 layers x 120 points (k=6)" in err and "2/2" in err
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    assert main([str(npz), "--progress"]) == 0
    err = capsys.readouterr().err
    assert (
        f"[1/2] load {npz}: done in" in err
        and "[2/2] ricci_flow on 5 layers x 120 points (k=6): done in" in err
    )
    assert main([str(npz)]) == 0  # auto: no progress below 2000 points
    assert capsys.readouterr().err == ""


def test_cli_module_entry_point(npz: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run(
        [sys.executable, "-m", "lightning_ricci", str(npz)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert "global coefficient" in ok.stdout
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    failed = subprocess.run(
        [sys.executable, "-m", "lightning_ricci", str(bad)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert failed.returncode == 2
    assert f"python -m lightning_ricci: error: {bad}: is not a .npz archive" in failed.stderr


def _write_bad(tmp_path: Path, case: str) -> Path:
    """A file that is wrong in the way ``case`` names."""
    good = [t.numpy() for t in activations()]
    if case == "missing":
        return tmp_path / "missing.npz"
    if case == "suffix":
        path = tmp_path / "acts.csv"
        path.write_text("1,2\n")
        return path
    if case == "zero_bytes":
        path = tmp_path / "acts.pt"
        path.write_bytes(b"")
        return path
    if case == "not_zip":
        path = tmp_path / "acts.npz"
        path.write_bytes(b"garbage")
        return path
    if case == "not_torch":
        path = tmp_path / "acts.pt"
        path.write_bytes(b"garbage")
        return path
    if case == "numpy_in_pt":
        path = tmp_path / "acts.pt"
        torch.save({"a": good[0]}, path)
        return path
    if case == "single_tensor":
        path = tmp_path / "acts.pt"
        torch.save(torch.zeros(3, 4), path)
        return path
    if case == "empty_list":
        path = tmp_path / "acts.pt"
        torch.save([], path)
        return path
    path = tmp_path / "acts.npz"
    arrays: dict[str, object] = dict(zip(NAMES, good))
    if case == "empty_npz":
        arrays = {}
    elif case == "empty_layer":
        arrays["h2"] = np.zeros((0, 4))
    elif case == "different_n":
        arrays["h3"] = good[3][:-1]
    elif case == "strings":
        arrays["h1"] = np.array([["a", "b"]] * N)
    elif case == "objects":
        arrays["h1"] = np.array([{}] * N, dtype=object)
    elif case == "complex":
        arrays["h1"] = good[1] * 1j
    elif case == "scalar":
        arrays["h1"] = np.float64(3.0)
    elif case == "nan":
        bad = good[2].copy()
        bad[[3, 7], 0] = np.nan
        arrays["h2"] = bad
    elif case == "two_layers":
        arrays = {"input": good[0], "h1": good[1]}
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


BAD_FILES = {
    "missing": r"missing\.npz: no such file",
    "suffix": r"acts\.csv: unsupported file type \(got suffix '\.csv'; expected \.pt, \.pth or \.npz\)",
    "zero_bytes": r"acts\.pt: is empty \(got 0 bytes\)",
    "not_zip": r"acts\.npz: is not a \.npz archive \(got a file without a zip header\)",
    "not_torch": r"acts\.pt: cannot be read by torch\.load\(weights_only=True\) \(UnpicklingError",
    "numpy_in_pt": r"acts\.pt: cannot be read by torch\.load.*\(numpy arrays: use \.npz\)",
    "single_tensor": r"acts\.pt: must hold a list/tuple of tensors or a dict name -> tensor \(got Tensor\)",
    "empty_list": r"acts\.pt: holds no arrays \(got an empty container\)",
    "empty_npz": r"acts\.npz: holds no arrays \(got an empty archive\)",
    "empty_layer": r"acts\.npz: layer 'h2' is empty \(got shape \(0, 4\)\)",
    "different_n": r"acts\.npz: every layer must hold the same N points \(got input: 120, h1: 120, h2: 120, h3: 119, h4: 120\)",
    "strings": r"acts\.npz: layer 'h1' is not numeric \(got dtype <U1\)",
    "objects": r"acts\.npz: layer 'h1' is not numeric \(got dtype object\)",
    "complex": r"acts\.npz: layer 'h1' is not numeric \(got dtype complex64\)",
    "scalar": r"acts\.npz: layer 'h1' must be an array \[N, \.\.\.\] \(got a scalar\)",
    "nan": r"acts\.npz: layer 'h2' holds NaN or Inf \(got them in 2 of 120 rows\)",
    "two_layers": r"acts\.npz: needs at least 3 layers, the input and two more \(got 2: \['input', 'h1'\]\)",
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_load_activations_errors(case: str, tmp_path: Path) -> None:
    path = _write_bad(tmp_path, case)
    with pytest.raises(ValueError, match=BAD_FILES[case]):
        load_activations(path)


@pytest.mark.parametrize("case", ["different_n", "strings", "not_torch", "missing"])
def test_cli_exits_2_naming_the_file(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_bad(tmp_path, case)
    assert main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"python -m lightning_ricci: error: {path}: ")
    with pytest.raises(ValueError, match=BAD_FILES[case]):
        load_activations(path)


def test_cli_bad_options(npz: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(npz), "--k", str(N)]) == 2
    assert f"{npz}: `--k` must be between 1 and N - 1 = 119 (got 120)" in capsys.readouterr().err
    assert main([str(npz), "--layers", "input", "h9"]) == 2
    err = capsys.readouterr().err
    assert "`layers` names layers that are not in the file (got ['h9']); the file holds ['input', 'h1'" in err
    with pytest.raises(ValueError, match=r"`layers` lists a layer twice \(got \['h1', 'h2', 'h1'\]\)"):
        load_activations(npz, ["h1", "h2", "h1"])
    with pytest.raises(SystemExit) as exit_info:
        main([str(npz), "--convention", "riemann"])
    assert exit_info.value.code == 2  # argparse's own usage error


def test_load_activations_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "mixed.npz"
    x = np.arange(30).reshape(10, 3)
    np.savez(path, a=x, b=x > 5, c=x.astype(np.float16), d=np.ones((10, 2, 2), dtype=np.float32))
    loaded = load_activations(path)
    assert [t.dtype for t in loaded.values()] == [torch.float64, torch.float64, torch.float32, torch.float32]
    assert loaded["d"].shape == (10, 4) and torch.equal(loaded["a"], torch.from_numpy(x).double())


def test_cli_excluded_network_prints_inf_and_nan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = torch.Generator().manual_seed(3)
    split = torch.cat([torch.randn(60, 2, generator=gen), torch.randn(60, 2, generator=gen) + 50.0])
    joined = [torch.randn(N, 4, generator=gen) for _ in range(3)]
    path = tmp_path / "split.pt"
    torch.save([split, *joined], path)  # two components in the input, one afterwards
    assert main([str(path), "--k", "5", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["excluded"] is True and info["coefficient"] == "nan"
    # The monitor would log the connected-pairs value in its place, flagged as excluded.
    assert info["logged"]["ricci/coefficient"] == info["coefficient_connected"] != "nan"
    assert info["logged"]["ricci/excluded"] == 1.0
    assert info["layers"][0]["components"] == 2
    assert info["transitions"][0]["eta"] in ("inf", "-inf")
    assert main([str(path), "--k", "5"]) == 0
    out = capsys.readouterr().out
    assert "global coefficient          nan  (undefined: excluded by the convention's rule)" in out
    assert "excluded                    yes" in out


def _unusual(case: str) -> list[torch.Tensor]:
    """The layers of ``activations()`` with the input stored in the way ``case`` names."""
    layers = activations()
    x = layers[0]
    if case == "sparse_coo":
        layers[0] = x.to_sparse()
    elif case == "sparse_csr":
        layers[0] = x.to_sparse_csr()
    elif case == "quantized":
        layers[0] = torch.quantize_per_tensor(x, 0.05, 0, torch.qint8)
    elif case == "meta":
        layers[0] = torch.empty(x.shape, device="meta")
    elif case == "int64_beyond_2_53":
        layers[0] = torch.arange(x.numel(), dtype=torch.int64).reshape(x.shape) + 2**53 - 2
    return layers


UNUSUAL_TENSORS = {
    "sparse_coo": r"layer '0' is a sparse tensor \(got layout torch\.sparse_coo\); save a dense one",
    "sparse_csr": r"layer '0' is a sparse tensor \(got layout torch\.sparse_csr\); save a dense one",
    "quantized": r"layer '0' is a quantized tensor \(got dtype torch\.qint8\); save `tensor\.dequantize\(\)`",
    "meta": r"layer '0' holds no data \(got a tensor on the meta device\)",
    "int64_beyond_2_53": (
        r"layer '0' holds integers beyond 2\*\*53 in magnitude, which float64 would round, merging distinct "
        rf"points \(got values in \[{2**53 - 2}, {2**53 - 3 + 3 * N}\]\)"
    ),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch: sparse CSR is beta, quantized tensors deprecated
@pytest.mark.parametrize("case", sorted(UNUSUAL_TENSORS))
def test_cli_exits_2_on_tensors_it_cannot_use(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "acts.pt"
    torch.save(_unusual(case), path)
    with pytest.raises(ValueError, match=rf"^{path}: {UNUSUAL_TENSORS[case]}"):
        load_activations(path)
    assert main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith(f"python -m lightning_ricci: error: {path}: layer '0' ")


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_integers_exact_up_to_2_53_refused_beyond(dtype: type, tmp_path: Path) -> None:
    rest = {name: t.numpy() for name, t in zip(NAMES[1:], activations()[1:])}
    # 3N distinct integers reaching -2**53 (int64) or 2**53 (uint64): float64 holds each exactly.
    start = -(2**53) if dtype is np.int64 else 2**53 - 3 * N + 1
    values = list(range(start, start + 3 * N))
    exact = np.array(values, dtype=dtype).reshape(N, 3)
    np.savez(tmp_path / "exact.npz", input=exact, **rest)
    loaded = load_activations(tmp_path / "exact.npz")["input"]
    assert loaded.dtype == torch.float64
    assert [int(v) for v in loaded.flatten().tolist()] == values
    beyond = exact.copy()
    beyond[-1, -1] = 2**53 + 1  # float64 rounds it to 2**53, which may be another point's value
    np.savez(tmp_path / "beyond.npz", input=beyond, **rest)
    with pytest.raises(ValueError, match=r"layer 'input' holds integers beyond 2\*\*53 in magnitude"):
        load_activations(tmp_path / "beyond.npz")
    assert main([str(tmp_path / "beyond.npz")]) == 2


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16, torch.float16])
def test_cli_reads_low_precision_floats_exactly(
    dtype: torch.dtype, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Multiples of 1/4 in [-6, 6] with at most three significant bits: every format here holds them
    # exactly, so the measurement must equal the float32 one.
    gen = torch.Generator().manual_seed(5)
    grid = torch.tensor([m * 2.0**e for m in (4, 5, 6, 7) for e in range(-4, 0)] + [0.0])
    layers = [
        grid[torch.randint(len(grid), (N, 6), generator=gen)]
        * torch.where(torch.rand(N, 6, generator=gen) < 0.5, -1.0, 1.0)
        for _ in range(4)
    ]
    stored = [t.to(dtype) for t in layers]
    assert all(torch.equal(s.float(), t) for s, t in zip(stored, layers))
    path = tmp_path / "low.pt"
    torch.save(stored, path)
    assert main([str(path), "--k", "7", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    expected = ricci_flow(layers, 7)
    assert [row["curvature"] for row in info["layers"]] == pytest.approx(expected.total_curvature.tolist())
    assert info["coefficient_connected"] == pytest.approx(expected.coefficient_connected, abs=1e-12)


@pytest.mark.parametrize(("dtype", "scale"), [(torch.float32, 2.0**66), (torch.float64, 2.0**520)])
def test_cli_huge_finite_activations(
    dtype: torch.dtype, scale: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # x * 2**66 (about 7e19) in float32 and x * 2**520 (about 3e156) in float64 are finite, but their
    # squared distances are not. Scaling by a power of two is exact and leaves every kNN graph as it
    # was: the CLI must give the unscaled result or refuse the file with exit status 2.
    layers = [t.to(dtype) for t in activations(2)]
    path = tmp_path / "huge.pt"
    torch.save([t * scale for t in layers], path)
    status = main([str(path), "--k", "6", "--json"])
    captured = capsys.readouterr()
    if status == 2:
        assert captured.err.startswith(f"python -m lightning_ricci: error: {path}: ")
        assert "Traceback" not in captured.err and len(captured.err.splitlines()) == 1
        return
    assert status == 0
    info = json.loads(captured.out)
    expected = ricci_flow(layers, 6)
    assert [row["curvature"] for row in info["layers"]] == pytest.approx(expected.total_curvature.tolist())
    assert [row["geodesic_sum"] for row in info["layers"]] == pytest.approx(expected.geodesic_sum.tolist())
    assert info["coefficient_connected"] == pytest.approx(expected.coefficient_connected, abs=1e-12)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", r"`--k` must be between 1 and N - 1 = 119 \(got 0\)"),
        ("-3", r"`--k` must be between 1 and N - 1 = 119 \(got -3\)"),
        ("119", None),
        ("+7", None),
    ],
)
def test_cli_k_range(value: str, message: str | None, npz: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([str(npz), "--k", value, "--json"])
    captured = capsys.readouterr()
    if message is None:
        assert status == 0 and json.loads(captured.out)["k"] == int(value)
    else:
        assert status == 2 and captured.out == ""
        assert re.search(message, captured.err), captured.err


@pytest.mark.parametrize("value", ["True", "1.5", "5e1", "five", ""])
def test_cli_k_must_be_an_integer(value: str, npz: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(npz), "--k", value])
    assert exit_info.value.code == 2
    assert f"argument --k: must be an integer (got {value!r})" in capsys.readouterr().err


def test_cli_single_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "one.npz"
    np.savez(path, a=np.zeros((1, 2)), b=np.ones((1, 3)), c=np.ones((1, 1)))
    assert main([str(path)]) == 2
    assert f"{path}: holds 1 point per layer; a kNN graph needs at least 2" in capsys.readouterr().err


def test_console_script_function(
    npz: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_ricci.__main__ import cli

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    module, _, function = pyproject["project"]["scripts"]["lightning-ricci"].partition(":")
    assert getattr(__import__(module, fromlist=[function]), function) is cli
    monkeypatch.setattr(sys, "argv", ["lightning-ricci", str(npz), "--json"])
    assert cli() == 0
    assert json.loads(capsys.readouterr().out)["num_points"] == N
    monkeypatch.setattr(sys, "argv", ["lightning-ricci", str(npz), "--k", "0"])
    assert cli() == 2
    assert capsys.readouterr().err.startswith(f"lightning-ricci: error: {npz}: `--k` must be between")


def test_installed_console_script(npz: Path, tmp_path: Path) -> None:
    script = shutil.which("lightning-ricci", path=str(Path(sys.executable).parent))
    assert script is not None, "no lightning-ricci beside this Python: reinstall with `pip install -e .`"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([script, str(npz), "--json"], check=False, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["num_points"] == N
    missing = tmp_path / "missing.npz"
    failed = subprocess.run([script, str(missing)], check=False, capture_output=True, text=True, env=env)
    assert failed.returncode == 2
    assert failed.stderr == f"lightning-ricci: error: {missing}: no such file\n"


def test_cli_out_of_memory_exits_2(
    npz: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_ricci.__main__ as cli_module

    def exhausted(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("DefaultCPUAllocator: not enough memory")

    monkeypatch.setattr(cli_module, "ricci_flow", exhausted)
    assert main([str(npz)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m lightning_ricci: error: {npz}: out of memory (OutOfMemoryError)")


def test_cli_module_doctests() -> None:
    # pytest's --doctest-modules skips __main__.py; its examples run here.
    import doctest

    import lightning_ricci.__main__ as cli_module

    results = doctest.testmod(cli_module, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 10 and results.failed == 0

"""``python -m lightning_ricci`` and ``load_activations`` on files the tests write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_ricci import ricci_flow
from lightning_ricci.__main__ import main
from lightning_ricci.analysis import load_activations

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
        assert [layer["name"] for layer in info["layers"]] == labels
        assert [row["layer_coefficient"] for row in info["transitions"]] == pytest.approx(
            expected.layer.tolist()
        )
    # --layers: a subset, in order, space- or comma-separated
    assert main([str(tmp_path / "dict.pth"), "--json", "--layers", "input,h2", "h3", "h4"]) == 0
    info = json.loads(capsys.readouterr().out)
    subset = ricci_flow([layers[0], layers[2], layers[3], layers[4]], 6)
    assert [layer["name"] for layer in info["layers"]] == ["input", "h2", "h3", "h4"]
    assert info["coefficient_connected"] == pytest.approx(subset.coefficient_connected, abs=1e-12)


def test_cli_out_writes_figures_and_summary(npz: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    assert main([str(npz), "--out", str(out)]) == 0
    assert (out / "flow.png").stat().st_size > 1000 and (out / "local.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())["num_points"] == N


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
    assert info["layers"][0]["components"] == 2
    assert info["transitions"][0]["eta"] in ("inf", "-inf")
    assert main([str(path), "--k", "5"]) == 0
    out = capsys.readouterr().out
    assert "global coefficient          nan  (undefined: excluded by the convention's rule)" in out
    assert "excluded                    yes" in out

"""``examples/reproduce_paper.py --fast`` writes the documented files, with finite numbers where defined."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _scripts import run_example

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "reproduce_paper.py"
DATASETS = ("circles", "four_discs", "cylinders", "tori", "spirals", "digits_1v7", "digits_6v9")
STATES = ("untrained", "trained")
CURVATURES = ("augmented_forman", "approx_ollivier")


def _reject(token: str) -> float:
    raise AssertionError(f"results.json contains {token}: the script must write null instead")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    for module in ("sklearn", "scipy", "matplotlib", "tqdm"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("reproduction")
    completed = run_example(SCRIPT.name, "--fast", "--out", str(out), "--n-boot", "200")
    results = json.loads((out / "results.json").read_text(), parse_constant=_reject)
    return out, results, completed.stdout


def test_files_and_layout(fast_run: tuple[Path, dict[str, Any], str]) -> None:
    out, results, stdout = fast_run
    for name in ("results.json", "networks.csv", "summary.csv", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    for name in ("coefficient_vs_accuracy.png", "trained_vs_untrained.png", "k_effect.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert set(results) == {"config", "networks", "datasets", "pooled", "wall_seconds"}
    assert list(results["datasets"]) == list(DATASETS)
    assert _finite(results["wall_seconds"])
    assert "| data set |" in stdout and "wall time of the grid" in stdout
    with open(out / "networks.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(results["networks"]) >= 2 * len(DATASETS)
    assert {"dataset", "test_accuracy", "trained_B_6pct_coefficient", "untrained_H_af_local_mean"} <= set(
        rows[0]
    )


def test_every_network_is_finite_where_defined(fast_run: tuple[Path, dict[str, Any], str]) -> None:
    _, results, _ = fast_run
    for net in results["networks"]:
        for key in ("train_accuracy", "test_accuracy", "steps", "seconds"):
            assert _finite(net[key]), (net["index"], key)
        assert len(net["k_baptista"]) == 3 and net["k_hehl"] >= 3
        for state in STATES:
            record = net[state]
            assert _finite(record["accuracy"])
            degenerate = record["degenerate"]  # a layer with all probe points equal: some values undefined
            assert [int(k) for k in record["baptista"]] == net["k_baptista"]
            for k, b in record["baptista"].items():
                assert isinstance(b["excluded"], bool)
                # Undefined by R's rules without exclusion: too few transitions with a finite change.
                undefined = degenerate or b["nan_transitions"] >= net["depth"] - 2
                if b["excluded"]:  # the exclusion rule drops the network: the paper's value is null
                    assert b["coefficient"] is None
                    assert _finite(b["coefficient_connected"]) or degenerate, (net["index"], state, k)
                elif not undefined:
                    assert _finite(b["coefficient"]), (net["index"], state, k)
                    assert b["coefficient"] == pytest.approx(b["coefficient_connected"])
            h = record["hehl"]
            assert (h["coefficient"] is None) == h["excluded"] or degenerate
            for curvature in CURVATURES:
                local = h[curvature]
                if not degenerate:
                    assert -1 <= local["local_mean"] <= 1, (net["index"], state, curvature)
                    assert 0 <= local["local_negative_share"] <= 1
                assert 0 <= local["local_defined_share"] <= 1
                assert len(local["layer"]) == net["depth"] + 1  # input -> h_1 -> ... -> sigmoid output


def _check_correlation(c: dict[str, Any], x: list[Any], y: list[Any]) -> None:
    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
    assert c["n"] == len(pairs)
    defined = len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1
    for kind in ("pearson", "spearman"):
        assert _finite(c[kind]) == defined, (kind, c, pairs)
        if defined:
            assert -1 <= c[kind] <= 1
        lo, hi = c[f"{kind}_ci"]
        assert (lo is None) == (hi is None)
        if lo is not None:
            assert lo <= hi


def test_every_data_set_is_finite_where_defined(fast_run: tuple[Path, dict[str, Any], str]) -> None:
    _, results, _ = fast_run
    for name, s in results["datasets"].items():
        nets = [n for n in results["networks"] if n["dataset"] == name]
        assert s["n_networks"] == len(nets) >= 2
        assert _finite(s["test_accuracy"]["mean"]) and _finite(s["untrained_accuracy"]["mean"])
        acc = [n["test_accuracy"] for n in nets]
        for k in s["k_baptista"]:
            b = s["baptista"][str(k)]
            for state in STATES:
                excluded = sum(n[state]["baptista"][str(k)]["excluded"] for n in nets)
                assert b[state]["n_excluded"] == excluded
                values = [n[state]["baptista"][str(k)]["coefficient"] for n in nets]
                assert (b[state]["coefficient"]["mean"] is None) == all(v is None for v in values)
                assert b[state]["coefficient"]["n"] == sum(v is not None for v in values)
            coef = [n["trained"]["baptista"][str(k)]["coefficient"] for n in nets]
            _check_correlation(b["corr_accuracy"]["all"], coef, acc)
            conn = [n["trained"]["baptista"][str(k)]["coefficient_connected"] for n in nets]
            _check_correlation(b["corr_accuracy_connected"]["all"], conn, acc)
        for state in STATES:
            for curvature in CURVATURES:
                local = s["hehl"][state][curvature]
                assert _finite(local["local_mean"]["mean"]) and _finite(local["local_negative_share"]["mean"])
            assert _finite(s["hehl"][state]["coefficient_connected"]["mean"])


# ------------------------------------------------------------------ the papers' own data: reproduce_real.py
REAL = "reproduce_real.py"
FMNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion_mnist"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    for module in ("scipy", "matplotlib", "mlxtend"):
        pytest.importorskip(module)
    if not all((FMNIST_DIR / f"test{c}.csv.gz").is_file() for c in (5, 9)):
        pytest.skip(f"Fashion-MNIST CSV files not found in {FMNIST_DIR}")
    out = tmp_path_factory.mktemp("real")
    # An adapted filter of 0.5 lets the few tiny --fast networks through, so the pooled statistic exists.
    run_example(REAL, "--fast", "--workers", "1", "--out", str(out), "--n-boot", "100", "--adapted-filter", "0.5",
                "--fmnist-dir", str(FMNIST_DIR), timeout=600)  # fmt: skip
    return out, json.loads((out / "results.json").read_text(), parse_constant=_reject)


def _pairs(entry: dict[str, Any]) -> tuple[list[float], list[float]]:
    """[B]'s correlation_shift pairs of one network, transcribed from the R script: (Ric_{l-1}, eta_l), l >= 2."""
    ric, eta = entry["total_curvature"], entry["eta"]
    keep = [(ric[i], eta[i]) for i in range(1, len(eta)) if ric[i] is not None and eta[i] is not None]
    return [a for a, _ in keep], [b for _, b in keep]


def test_real_files_and_fields(real_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = real_run
    for name in ("results.json", "networks_baptista.csv", "networks_hehl.csv", "table1.csv", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    for name in ("rho_vs_accuracy.png", "table1.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert {"config", "baptista", "hehl", "wall_seconds", "run"} <= set(results)
    probes = results["config"]["probes"]
    assert set(probes) == {"fmnist_5v9", "mnist_1v7", "mnist_6v9"}
    assert len(probes["fmnist_5v9"]["rows"]) == results["config"]["n_probe"]
    nets = results["baptista"]["networks"]
    assert len(nets) == 5
    for net in nets:
        assert 0 <= net["test_accuracy"] <= 1 and len(net["ks"]) == 3
        assert net["ks"] == [max(3, round(f * results["config"]["n_probe"])) for f in (0.015, 0.06, 0.15)]
        for k in map(str, net["ks"]):
            entry = net["trained"][k]
            assert len(entry["total_curvature"]) == net["depth"] + 1 and len(entry["eta"]) == net["depth"]
            assert isinstance(entry["excluded"], bool)
            x, y = _pairs(entry)
            if entry["coefficient"] is not None:  # the per-network coefficient is the same correlation
                assert entry["coefficient"] == pytest.approx(float(np.corrcoef(x, y)[0, 1]), abs=1e-9)
            if entry["excluded"]:
                assert entry["coefficient"] is None


def test_real_pooled_statistic_and_counts(real_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = real_run
    nets = results["baptista"]["networks"]
    arch = results["baptista"]["architectures"]["w50_d5"]
    assert arch["n_networks"] == len(nets)
    assert arch["n_pass_filter"] == sum(n["test_accuracy"] > 0.98 for n in nets)
    for k, kk in arch["k"].items():
        assert kk["n_excluded"] == sum(n["trained"][k]["excluded"] for n in nets)
        a = kk["adapted_filter"]
        passed = [n for n in nets if n["test_accuracy"] > 0.5]
        accepted = [n for n in passed if not n["trained"][k]["excluded"]]
        assert (a["n_pass"], a["n_accepted"], a["n_excluded"]) == (
            len(passed),
            len(accepted),
            len(passed) - len(accepted),
        )
        pairs = [_pairs(n["trained"][k]) for n in accepted]
        x = np.concatenate([p[0] for p in pairs]) if pairs else np.array([])
        y = np.concatenate([p[1] for p in pairs]) if pairs else np.array([])
        shift = a["correlation_shift"]
        assert shift["n_networks"] == len([p for p in pairs if p[0]]) and shift["n_pairs"] == len(x)
        if len(x) >= 3:
            assert shift["pearson"] == pytest.approx(float(np.corrcoef(x, y)[0, 1]), abs=1e-9)
            lo, hi = shift["pearson_ci"]
            assert lo is None or lo <= hi
        for key in ("pearson", "spearman"):
            c = a["corr_coefficient_accuracy"]
            assert c[key] is None or -1 <= c[key] <= 1


def test_real_table1(real_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = real_run
    table = results["hehl"]["table1"]
    assert list(table) == ["mnist_1v7", "mnist_6v9", "fmnist_5v9"]
    nets = results["hehl"]["networks"]
    for name, s in table.items():
        sub = [n for n in nets if n["dataset"] == name]
        assert s["n_networks"] == len(sub) == 2
        assert s["k"] == max(3, round(0.05 * results["config"]["probes"][name]["n_probe"]))
        assert len(s["published"]["local_mean"]) == 2
        for c in s["configs"]:
            group = [n for n in sub if (n["width"], n["depth"]) == (c["width"], c["depth"])]
            for state in ("trained", "untrained"):
                values = [n[state]["augmented_forman"]["local_mean"] for n in group]
                assert c[f"{state}_augmented_forman_local_mean"] == pytest.approx(float(np.mean(values)))
                assert -1 <= c[f"{state}_augmented_forman_local_mean"] <= 1
        lo, hi = s["range"]["trained_local_mean"]
        assert lo <= hi


def test_real_saved_weights_reproduce_the_coefficients(real_run: tuple[Path, dict[str, Any]]) -> None:
    """An outside check: rebuild a saved network's activations from weights.npz and the CSV files."""
    import gzip

    from lightning_ricci import ricci_flow

    out, results = real_run
    store = np.load(out / "weights.npz")
    images = {}
    for c in (5, 9):
        with gzip.open(FMNIST_DIR / f"test{c}.csv.gz", "rt") as fh:
            images[c] = np.loadtxt(fh, delimiter=",", skiprows=1, dtype=np.float32)[:, 1:]
    rows = store["probe/fmnist_5v9"]
    assert rows.tolist() == results["config"]["probes"]["fmnist_5v9"]["rows"]
    probe = torch.as_tensor(np.stack([images[c][i] for c, i in rows]))
    net = next(n for n in results["baptista"]["networks"] if n["weights_saved"])
    h, layers = probe, [probe]
    for i in range(1, net["depth"] + 1):
        h = torch.relu(
            h @ torch.as_tensor(store[f"{net['id']}/W{i}"]) + torch.as_tensor(store[f"{net['id']}/b{i}"])
        )
        layers.append(h)
    for k in map(str, net["ks"]):
        r = ricci_flow(layers, int(k), convention="baptista")
        expected = net["trained"][k]["coefficient"]
        assert (expected is None) == (not math.isfinite(r.coefficient))
        if expected is not None:
            assert r.coefficient == pytest.approx(expected, abs=1e-9)

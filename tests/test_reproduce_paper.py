"""``examples/reproduce_paper.py --fast`` writes the documented files, with finite numbers where defined."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
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

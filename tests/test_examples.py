"""Each example runs end to end with ``--fast`` and prints a finite final coefficient."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from _scripts import run_example


@pytest.mark.parametrize("script", ["two_circles.py", "digits.py"])
def test_example_fast(script: str, tmp_path: Path) -> None:
    if script == "digits.py":
        pytest.importorskip("sklearn")
    completed = run_example(script, "--fast", "--out", str(tmp_path / "runs"))
    match = re.search(r"final ricci/coefficient: ([-+0-9.]+)", completed.stdout)
    assert match is not None, completed.stdout
    assert math.isfinite(float(match.group(1)))
    assert list((tmp_path / "runs").rglob("events.out.tfevents.*"))

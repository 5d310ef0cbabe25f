"""Each example runs end to end with ``--fast`` and prints a finite final coefficient."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["two_circles.py", "digits.py"])
def test_example_fast(script: str, tmp_path: Path) -> None:
    if script == "digits.py":
        pytest.importorskip("sklearn")
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--fast", "--out", str(tmp_path / "runs")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=EXAMPLES.parent,
        # One thread: tiny models gain nothing from more, and a busy 2-core machine makes them crawl.
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    match = re.search(r"final ricci/coefficient: ([-+0-9.]+)", completed.stdout)
    assert match is not None, completed.stdout
    assert math.isfinite(float(match.group(1)))
    assert list((tmp_path / "runs").rglob("events.out.tfevents.*"))

"""Running the repository's example scripts from tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<script>`` with ``args`` in a subprocess and assert it exits 0.

    One thread: the tiny models of ``--fast`` runs gain nothing from more, and a busy 2-core machine
    makes them crawl.
    """
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=EXAMPLES.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed

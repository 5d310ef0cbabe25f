"""The geometry core must not import Lightning, matplotlib or the callback."""

from __future__ import annotations

import ast
import pathlib

import lightning_ricci.geometry

FORBIDDEN = ("lightning", "pytorch_lightning", "matplotlib", "lightning_ricci.callback", "lightning_ricci.plotting")


def test_geometry_imports_only_torch_side() -> None:
    root = pathlib.Path(lightning_ricci.geometry.__file__).parent
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN or n in FORBIDDEN]
    assert offenders == []


def test_functional_api_does_not_load_lightning() -> None:
    import subprocess
    import sys

    code = "import sys, lightning_ricci; lightning_ricci.ricci_flow; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

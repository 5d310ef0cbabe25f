"""Layering: the geometry core imports neither Lightning nor matplotlib nor the package's upper layers.

``lightning_ricci.geometry`` (every module under it, present and future) may import torch, numpy, the
standard library, its optional backends and itself, and nothing else of ``lightning_ricci``: the
callback, the plots, the loggers' sinks and the pipeline sit on top of it. The functional API
(``ricci_flow``, ``analyze``, the activation files of the CLI) loads neither Lightning nor matplotlib.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import lightning_ricci.geometry

#: Top-level packages the geometry core must not import (anywhere: at module level, in functions,
#: under TYPE_CHECKING).
FORBIDDEN_PACKAGES = ("lightning", "pytorch_lightning", "lightning_fabric", "matplotlib")
GEOMETRY = "lightning_ricci.geometry"
ROOT = pathlib.Path(lightning_ricci.geometry.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((GEOMETRY, *parts))


def imported_names(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every module ``source`` (the text of ``module``) imports, relative imports resolved, each
    ``from X import y`` also as ``X.y`` (``y`` may be a submodule).

    >>> imported_names("from ..callback import RicciFlowMonitor\\nimport torch", "lightning_ricci.geometry.flow")
    ['lightning_ricci.callback', 'lightning_ricci.callback.RicciFlowMonitor', 'torch']
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    return names


def forbidden(name: str) -> bool:
    """Whether the geometry core may not import ``name``."""
    top = name.split(".")[0]
    if top in FORBIDDEN_PACKAGES:
        return True
    return top == "lightning_ricci" and name != GEOMETRY and not name.startswith(GEOMETRY + ".")


def test_the_check_flags_what_it_should() -> None:
    source = "\n".join(
        [
            "import torch, numpy as np",
            "from . import knn",
            "from .knn import knn_graph",
            "from lightning_ricci.geometry._checks import check_int",
            "import matplotlib.pyplot as plt",
            "from .. import callback",
            "from ..plotting import flow_figure",
            "from lightning_ricci import sinks",
            "def lazy():",
            "    from lightning.pytorch import Trainer",
            "if False:",
            "    import pytorch_lightning",
            "from lightning_ricci.pipeline import scalars",
        ]
    )
    flagged = sorted({n for n in imported_names(source, f"{GEOMETRY}.flow") if forbidden(n)})
    assert flagged == [
        "lightning.pytorch",
        "lightning.pytorch.Trainer",
        "lightning_ricci",  # `from lightning_ricci import sinks` imports the top-level package too
        "lightning_ricci.callback",
        "lightning_ricci.pipeline",
        "lightning_ricci.pipeline.scalars",
        "lightning_ricci.plotting",
        "lightning_ricci.plotting.flow_figure",
        "lightning_ricci.sinks",
        "matplotlib.pyplot",
        "pytorch_lightning",
    ]
    # In a package's __init__, `from . import x` is the package itself.
    assert imported_names("from . import flow", GEOMETRY, is_package=True) == [GEOMETRY, f"{GEOMETRY}.flow"]


def test_geometry_imports_only_torch_side() -> None:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    # The scan sees the whole core (every module, also ones added later), not just a few files.
    assert {
        f"{GEOMETRY}.flow",
        f"{GEOMETRY}.knn",
        f"{GEOMETRY}.curvature",
        f"{GEOMETRY}.geodesics",
    } <= modules
    offenders = []
    for path in paths:
        names = imported_names(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")
        offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names if forbidden(name)]
    assert offenders == []


def test_functional_api_does_not_load_lightning_or_matplotlib() -> None:
    # A fresh process: import the package, every geometry module and the CLI's modules, run a tiny
    # ricci_flow, then list what got loaded.
    code = """
import pkgutil, sys, importlib, torch
import lightning_ricci, lightning_ricci.geometry, lightning_ricci.io, lightning_ricci.__main__
# the capture and measurement layers are torch-only too
import lightning_ricci.probes, lightning_ricci.capture, lightning_ricci.layers, lightning_ricci.reduce
import lightning_ricci.pipeline, lightning_ricci.scalars, lightning_ricci.stream
modules = [m.name for m in pkgutil.walk_packages(lightning_ricci.geometry.__path__, "lightning_ricci.geometry.")]
for name in modules:
    importlib.import_module(name)
lightning_ricci.ricci_flow([torch.randn(20, 3), torch.randn(20, 4), torch.randn(20, 2)], 4)
print(len(modules))
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning", "matplotlib"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    count, loaded = (out.stdout.splitlines() + ["", ""])[:2]
    assert int(count) >= 8  # the walk found the geometry modules
    assert loaded == ""

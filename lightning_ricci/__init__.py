"""lightning-ricci: Ricci-flow diagnostics for neural networks.

The geometry core (:func:`ricci_flow` and its pieces) and the offline analysis of any ``nn.Module``
(:func:`analyze`, :func:`critical_depth`) need only torch. :class:`RicciFlowMonitor`, the
Lightning callback, is imported lazily so that the functional API does not pull in Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_ricci.analysis import AnalysisResult, analyze, critical_depth
from lightning_ricci.capture import ActivationCapture
from lightning_ricci.geometry import (
    RicciFlowResult,
    RicciFlowScan,
    approx_ollivier_curvature,
    augmented_forman_curvature,
    forman_curvature,
    geodesic_distances,
    geodesic_sums,
    knn_graph,
    pearson,
    ricci_flow,
    to_pyg,
)
from lightning_ricci.pipeline import Pipeline
from lightning_ricci.scalars import scalars

if TYPE_CHECKING:
    from lightning_ricci.callback import RicciFlowMonitor

__version__ = "0.1.0"

__all__ = [
    "ActivationCapture",
    "AnalysisResult",
    "Pipeline",
    "RicciFlowMonitor",
    "RicciFlowResult",
    "RicciFlowScan",
    "__version__",
    "analyze",
    "approx_ollivier_curvature",
    "augmented_forman_curvature",
    "critical_depth",
    "forman_curvature",
    "geodesic_distances",
    "geodesic_sums",
    "knn_graph",
    "pearson",
    "ricci_flow",
    "scalars",
    "to_pyg",
]


def __getattr__(name: str) -> Any:
    if name == "RicciFlowMonitor":
        from lightning_ricci.callback import RicciFlowMonitor

        return RicciFlowMonitor
    raise AttributeError(f"module 'lightning_ricci' has no attribute {name!r}")

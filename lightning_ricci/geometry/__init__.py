"""Geometry core: kNN graphs, discrete curvature, geodesics and Ricci coefficients, in torch only.

Nothing here imports Lightning or matplotlib. The entry point is :func:`ricci_flow`; its pieces are
public for people who build on them.
"""

from lightning_ricci.geometry.coefficients import pearson
from lightning_ricci.geometry.curvature import (
    approx_ollivier_curvature,
    augmented_forman_curvature,
    forman_curvature,
)
from lightning_ricci.geometry.flow import ricci_flow
from lightning_ricci.geometry.geodesics import geodesic_distances, geodesic_sums
from lightning_ricci.geometry.interop import to_pyg
from lightning_ricci.geometry.knn import knn_graph
from lightning_ricci.geometry.result import RicciFlowResult, RicciFlowScan

__all__ = [
    "RicciFlowResult",
    "RicciFlowScan",
    "approx_ollivier_curvature",
    "augmented_forman_curvature",
    "forman_curvature",
    "geodesic_distances",
    "geodesic_sums",
    "knn_graph",
    "pearson",
    "ricci_flow",
    "to_pyg",
]

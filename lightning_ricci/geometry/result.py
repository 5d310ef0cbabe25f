"""The result of :func:`~lightning_ricci.ricci_flow`.

Shape symbols: N probe points, L layers (``len(layers)``, the input included), E_l undirected edges of
layer l.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

Convention = Literal["baptista", "hehl"]
CurvatureKind = Literal["forman", "augmented_forman", "approx_ollivier"]


@dataclass(frozen=True)
class RicciFlowResult:
    """Ricci-flow quantities of one network on one probe set.

    All tensors live on the device of the input layers. Float tensors are float64.

    Attributes:
        coefficient (float): global Ricci coefficient of the chosen convention; negative means
            Ricci-flow-like. ``nan`` where the convention leaves it undefined: the network is
            ``excluded``, fewer than two layer pairs remain, or a series is constant.
        coefficient_connected (float): the same correlation, with every geodesic change
            restricted to the pairs of points connected in *both* layers of the transition
            (``eta_connected``). It equals ``coefficient`` whenever ``coefficient`` is defined and stays
            finite when the paper's rule excludes the network or leaves a transition undefined
            (``nan`` only for constant series or too few pairs).
        excluded (bool): ``True`` when the convention's own rule drops the network: a change of
            connectivity between consecutive layers (``"baptista"``), any disconnected layer graph
            (``"hehl"``), or a layer whose points all coincide (both).
        curvature (Tensor): [L] total Forman curvature Ric_l of every layer, ``layers[0]``
            included. ``"baptista"``: sum over directed kNN edges i->j of 4 - D(i) - D(j) with
            D = in-degree + out-degree. ``"hehl"``: sum over undirected union edges of 4 - d(x) - d(y).
        eta (Tensor): [L - 1] change of summed geodesic distances for each transition l -> l+1.
            ``"baptista"``: summed over ordered pairs with R's infinity rules (may be +-inf or nan).
            ``"hehl"``: g_{l+1} - g_l with g_l = sum over unordered pairs (inf when disconnected).
        eta_connected (Tensor): [L - 1] the same change over pairs connected in both layers; finite,
            and equal to ``eta`` wherever ``eta`` is finite.
        geodesic_sum (Tensor): [L] sum of hop distances over unordered pairs that are connected.
        num_components (Tensor): [L] long, connected components of each layer's union kNN graph.
        local (Tensor): [N] local Ricci evolution coefficient of every probe point (Hehl et al.),
            ``nan`` where a neighbour becomes unreachable or a series is constant.
        layer (Tensor): [L - 1] layer Ricci coefficients (Hehl et al.), one per transition.
        node_curvature (Tensor): [L, N] scalar curvature of every point: the mean of the chosen
            edge curvature over its union-graph edges.
        edge_index (tuple[Tensor, ...]): per layer, [2, E_l] long undirected union edges, i < j.
        edge_curvature (tuple[Tensor, ...]): per layer, [E_l] chosen curvature of those edges.
        k (int): neighbours per point.
        convention (str): ``"baptista"`` or ``"hehl"``.
        curvature_kind (str): edge curvature used for ``local``, ``layer`` and ``node_curvature``.
    """

    coefficient: float
    coefficient_connected: float
    excluded: bool
    curvature: Tensor
    eta: Tensor
    eta_connected: Tensor
    geodesic_sum: Tensor
    num_components: Tensor
    local: Tensor
    layer: Tensor
    node_curvature: Tensor
    edge_index: tuple[Tensor, ...] = field(repr=False)
    edge_curvature: tuple[Tensor, ...] = field(repr=False)
    k: int
    convention: Convention
    curvature_kind: CurvatureKind

    @property
    def num_layers(self) -> int:
        """Number of layers L."""
        return int(self.curvature.numel())

    @property
    def num_points(self) -> int:
        """Number of probe points N."""
        return int(self.local.numel())

    @property
    def local_mean(self) -> float:
        """Mean of the finite local coefficients (``nan`` if there are none), as Hehl et al. report."""
        finite = self.local[~self.local.isnan()]
        return float(finite.mean()) if finite.numel() else math.nan

    @property
    def local_negative_share(self) -> float:
        """Share of points with a defined local coefficient whose coefficient is negative."""
        finite = self.local[~self.local.isnan()]
        return float((finite < 0).double().mean()) if finite.numel() else math.nan

    @property
    def critical_layer(self) -> int:
        """Index t of the transition where the layer coefficient bottoms out (``-1`` if undefined)."""
        layer = self.layer.nan_to_num(nan=math.inf)
        if not bool((layer < math.inf).any()):
            return -1
        return int(layer.argmin())

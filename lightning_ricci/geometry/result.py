"""The result of :func:`~lightning_ricci.ricci_flow`.

Shape symbols: N probe points, L layers (``len(layers)``, the input included), E_l undirected edges of
layer l.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lightning_ricci.geometry.conventions import Convention
from lightning_ricci.geometry.curvature import EdgeCurvature

CurvatureKind = EdgeCurvature

__all__ = ["Convention", "CurvatureKind", "RicciFlowResult", "RicciFlowScan"]


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
        total_curvature (Tensor): [L] total Forman curvature Ric_l of every layer, ``layers[0]``
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
        layer_coefficient (Tensor): [L - 1] layer Ricci coefficients (Hehl et al.), one per transition.
        node_curvature (Tensor): [L, N] scalar curvature of every point: the mean of the chosen
            edge curvature over its union-graph edges.
        edge_index (tuple[Tensor, ...]): per layer, [2, E_l] long undirected union edges, i < j.
        edge_curvature (tuple[Tensor, ...]): per layer, [E_l] chosen curvature of those edges.
        k (int): neighbours per point.
        convention (str): ``"baptista"`` or ``"hehl"``.
        curvature_kind (str): edge curvature used for ``local``, ``layer_coefficient``,
            ``node_curvature``, ``edge_curvature`` and ``curvature_gap``.
        class_modularity (Tensor, optional): [L] Newman modularity (resolution 1) of the partition of
            each layer's union graph by ``labels``, as ``networkx.community.modularity``. ``None`` when
            :func:`~lightning_ricci.ricci_flow` was called without ``labels``; so are the next three.
        class_normalized_cut (Tensor, optional): [L] 1/2 sum over classes c of cut(S_c, V - S_c) / vol(S_c).
        class_mixing (Tensor, optional): [L] share of union edges whose ends have different labels.
        curvature_gap (Tensor, optional): [L] (mean within - mean between) / sqrt((var within + var
            between) / 2) of the union edges' ``curvature_kind`` curvature, population variances
            (Hehl et al.); ``nan`` where one side has no edge.

    The union graphs of the class fields are unweighted, each undirected edge once. ``curvature`` and
    ``layer`` are deprecated aliases of ``total_curvature`` and ``layer_coefficient``.
    """

    coefficient: float
    coefficient_connected: float
    excluded: bool
    total_curvature: Tensor
    eta: Tensor
    eta_connected: Tensor
    geodesic_sum: Tensor
    num_components: Tensor
    local: Tensor
    layer_coefficient: Tensor
    node_curvature: Tensor
    edge_index: tuple[Tensor, ...] = field(repr=False)
    edge_curvature: tuple[Tensor, ...] = field(repr=False)
    k: int
    convention: Convention
    curvature_kind: CurvatureKind
    class_modularity: Tensor | None = None
    class_normalized_cut: Tensor | None = None
    class_mixing: Tensor | None = None
    curvature_gap: Tensor | None = None

    @property
    def curvature(self) -> Tensor:
        """Deprecated alias of :attr:`total_curvature` (removed in the next release)."""
        warnings.warn(
            "`RicciFlowResult.curvature` is deprecated: use `total_curvature` (the per-layer Forman totals)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.total_curvature

    @property
    def layer(self) -> Tensor:
        """Deprecated alias of :attr:`layer_coefficient` (removed in the next release)."""
        warnings.warn(
            "`RicciFlowResult.layer` is deprecated: use `layer_coefficient` (the layer Ricci coefficients)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.layer_coefficient

    @property
    def num_layers(self) -> int:
        """Number of layers L."""
        return int(self.total_curvature.numel())

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
        layer = self.layer_coefficient.nan_to_num(nan=math.inf)
        if not bool((layer < math.inf).any()):
            return -1
        return int(layer.argmin())


@dataclass(frozen=True)
class RicciFlowScan:
    """:func:`~lightning_ricci.ricci_flow` at several k on one probe set, and how stable it is across k.

    Attributes:
        ks (list[int]): the K values of k, in the order given.
        results (list[RicciFlowResult]): one result per k, in the same order.
        coefficients (Tensor): [K] float64 on the CPU, each result's ``coefficient``, or its
            ``coefficient_connected`` where the paper's value is ``nan`` (the value the monitor logs).
        spread (float): max - min of the finite ``coefficients`` (``nan`` if none is finite).
        sign_agreement (float): share of the finite ``coefficients`` whose sign equals the majority's
            sign (1.0: all agree; ``nan`` if none is finite).
    """

    ks: list[int]
    results: list[RicciFlowResult] = field(repr=False)
    coefficients: Tensor
    spread: float
    sign_agreement: float

    @classmethod
    def from_results(cls, ks: list[int], results: list[RicciFlowResult]) -> RicciFlowScan:
        """Summarise ``results`` (one per k in ``ks``)."""
        values = [
            r.coefficient if not math.isnan(r.coefficient) else r.coefficient_connected for r in results
        ]
        coefficients = torch.tensor(values, dtype=torch.float64)
        finite = coefficients[torch.isfinite(coefficients)]
        if finite.numel() == 0:
            return cls(list(ks), list(results), coefficients, math.nan, math.nan)
        spread = float(finite.max() - finite.min())
        signs = torch.sign(finite)
        majority = max(int((signs == s).sum()) for s in (-1.0, 0.0, 1.0))
        return cls(list(ks), list(results), coefficients, spread, majority / finite.numel())

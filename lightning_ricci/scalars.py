"""From a result to what is logged: the scalars, their keys, the payload and history of a measurement.

:func:`scalars` is the one place a :class:`~lightning_ricci.RicciFlowResult` (or a k scan) becomes the
numbers that :class:`~lightning_ricci.RicciFlowMonitor` logs, :func:`~lightning_ricci.analyze` reports
and the command line prints; :func:`payload` and :func:`history_entry` are the monitor's record of one
measurement; :func:`degenerate_message` and :func:`excluded_message` are the warnings about what the
numbers mean.

This module needs only torch.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from torch import Tensor

from lightning_ricci.geometry import ricci_flow
from lightning_ricci.geometry.result import RicciFlowResult, RicciFlowScan

if TYPE_CHECKING:
    from lightning_ricci.pipeline import Captured

__all__ = [
    "CLASS_FIELDS",
    "MIN_LAYERS",
    "Measurement",
    "degenerate_message",
    "excluded_message",
    "expected_keys",
    "first_result",
    "history_entry",
    "payload",
    "scalars",
    "takes_labels",
]

#: What one measurement gives: a result, or a scan over several k (``k=[...]``).
Measurement = RicciFlowResult | RicciFlowScan


def first_result(measurement: Measurement) -> RicciFlowResult:
    """The result of a measurement, or of a scan's first k (the one logged under the usual keys)."""
    return measurement.results[0] if isinstance(measurement, RicciFlowScan) else measurement


#: Fewest chosen layers (the probe input not counted) for a correlation over at least 3 points.
MIN_LAYERS = {"baptista": 4, "hehl": 3}


def degenerate_message(convention: str, num_layers: int) -> str | None:
    """A warning when ``num_layers`` chosen layers leave the coefficient a correlation of <= 2 points.

    ``baptista`` pairs the curvature of hidden layers 1..L-2 with the next change: L - 2 points for L
    layers with the input, so it needs 4 chosen layers; ``hehl`` pairs every layer but the last: it
    needs 3.

    >>> degenerate_message("hehl", 3) is None, degenerate_message("baptista", 3)[:40]
    (True, 'convention="baptista" with 3 chosen laye')
    """
    need = MIN_LAYERS.get(convention, 3)
    if num_layers >= need:
        return None
    points = num_layers - 1 if convention == "baptista" else num_layers
    return (
        f'convention="{convention}" with {num_layers} chosen layers: the coefficient is a correlation of '
        f"{max(points, 0)} point(s), always +-1 or undefined; choose at least {need} layers (`layers=`)"
    )


_CLASS_FIELDS = (
    ("modularity", "class_modularity"),
    ("normalized_cut", "class_normalized_cut"),
    ("mixing", "class_mixing"),
    ("curvature_gap", "curvature_gap"),
)


#: The class-structure keys ``ricci/class/{field}`` (with labels).
CLASS_FIELDS = tuple(key for key, _ in _CLASS_FIELDS)


def takes_labels() -> bool:
    """Whether this version's ``ricci_flow`` takes ``labels=`` (the class-structure fields).

    >>> isinstance(takes_labels(), bool)
    True
    """
    return "labels" in inspect.signature(ricci_flow).parameters


def _field(result: RicciFlowResult, new: str, old: str) -> Tensor:
    """A result field by its new name, falling back to the old one (``total_curvature``/``curvature``)."""
    names = {f.name for f in dataclasses.fields(result)}
    return cast(Tensor, getattr(result, new if new in names else old))


def scalars(result: Measurement, layer_names: Sequence[str]) -> dict[str, float]:
    """The logged numbers of one result, keyed as the monitor logs them (without its ``log_prefix``).

    Undefined values are NaN here (the monitor replaces them, see :mod:`lightning_ricci.carry`):

    * ``ricci/coefficient``: the convention's coefficient; where the paper's rule leaves it undefined,
      the coefficient over pairs connected in both layers (``coefficient_connected``); NaN if that is
      undefined too. ``ricci/excluded``: 1.0 when the connected-pairs value stands in, else 0.0.
    * ``ricci/local_mean``, ``ricci/local_negative_share``: Hehl et al.'s mean local coefficient and the
      share of negative ones.
    * ``ricci/critical_layer``: the transition t (layer t -> t+1) where the layer coefficient is lowest.
    * ``ricci/curvature/{layer}``: total Forman curvature of the layer's kNN graph (summed over the
      convention's edges: directed with in+out degree under ``baptista``); ``ricci/geodesic_sum/{layer}``:
      summed hop distances of connected pairs.
    * with labels: ``ricci/class/{modularity,normalized_cut,mixing,curvature_gap}`` of the last layer and
      ``ricci/class/{field}/{layer}`` for every layer.
    * a :class:`~lightning_ricci.RicciFlowScan` (``k=[...]``): the keys above of its first k's result,
      plus ``ricci/k/{k}/coefficient`` for every k (the scan's ``coefficients``: the paper's value, else
      the connected-pairs one), ``ricci/k/spread`` and ``ricci/k/sign_agreement``.

    Args:
        result (RicciFlowResult | RicciFlowScan): the result, or a scan over k.
        layer_names (Sequence[str]): the L layer names.

    Returns:
        dict[str, float]: key -> value.

    Raises:
        ValueError: ``layer_names`` does not have L entries.

    >>> import torch
    >>> from lightning_ricci import ricci_flow
    >>> g = torch.Generator().manual_seed(0)
    >>> layers = [torch.randn(30, 3, generator=g) for _ in range(4)]
    >>> keys = scalars(ricci_flow(layers, 4), ["input", "a", "b", "c"])
    >>> sorted(keys)[:3], "ricci/curvature/b" in keys
    (['ricci/coefficient', 'ricci/critical_layer', 'ricci/curvature/a'], True)
    >>> sorted(k for k in scalars(ricci_flow(layers, [4, 8]), ["input", "a", "b", "c"]) if "/k/" in k)
    ['ricci/k/4/coefficient', 'ricci/k/8/coefficient', 'ricci/k/sign_agreement', 'ricci/k/spread']
    """
    if isinstance(result, RicciFlowScan):
        keyed = scalars(result.results[0], layer_names)
        for k, value in zip(result.ks, result.coefficients.tolist()):
            keyed[f"ricci/k/{k}/coefficient"] = float(value)
        keyed["ricci/k/spread"] = float(result.spread)
        keyed["ricci/k/sign_agreement"] = float(result.sign_agreement)
        return keyed
    total = _field(result, "total_curvature", "curvature")
    if len(layer_names) != total.numel():
        raise ValueError(f"`layer_names` must name the {total.numel()} layers (got {len(layer_names)})")
    paper, connected = float(result.coefficient), float(result.coefficient_connected)
    out: dict[str, float] = {
        "ricci/coefficient": paper
        if math.isfinite(paper)
        else connected
        if math.isfinite(connected)
        else math.nan,
        "ricci/excluded": 0.0 if math.isfinite(paper) else 1.0,
        "ricci/local_mean": float(result.local_mean),
        "ricci/local_negative_share": float(result.local_negative_share),
        "ricci/critical_layer": float(result.critical_layer) if result.critical_layer >= 0 else math.nan,
    }
    for name, value in zip(layer_names, total.detach().cpu().tolist()):
        out[f"ricci/curvature/{name}"] = float(value)
    for name, value in zip(layer_names, result.geodesic_sum.detach().cpu().tolist()):
        out[f"ricci/geodesic_sum/{name}"] = float(value)
    for key, attribute in _CLASS_FIELDS:
        values = getattr(result, attribute, None)
        if not isinstance(values, Tensor) or values.numel() != len(layer_names):
            continue
        per_layer = [float(v) for v in values.detach().cpu().tolist()]
        out[f"ricci/class/{key}"] = per_layer[-1]
        for name, value in zip(layer_names, per_layer):
            out[f"ricci/class/{key}/{name}"] = value
    return out


def expected_keys(layer_names: Sequence[str], labels: bool, ks: Sequence[int] | None = None) -> list[str]:
    """The keys of :func:`scalars` for these layers (with ``labels``: the class keys too; with ``ks``, a
    k scan: the per-k keys), also logged when a measurement fails.

    >>> expected_keys(["input", "h"], labels=False)[-2:]
    ['ricci/geodesic_sum/input', 'ricci/geodesic_sum/h']
    """
    keys = ["ricci/coefficient", "ricci/local_mean", "ricci/local_negative_share", "ricci/critical_layer"]
    keys += [f"ricci/{kind}/{name}" for kind in ("curvature", "geodesic_sum") for name in layer_names]
    if labels and takes_labels():
        for field in CLASS_FIELDS:
            keys += [f"ricci/class/{field}", *(f"ricci/class/{field}/{name}" for name in layer_names)]
    if ks is not None:
        keys += [*(f"ricci/k/{k}/coefficient" for k in ks), "ricci/k/spread", "ricci/k/sign_agreement"]
    return keys


def excluded_message(convention: str, flag: str) -> str:
    """The warning for a measurement whose paper coefficient is undefined (``flag``: the prefixed
    ``ricci/excluded`` key).

    >>> excluded_message("hehl", "ricci/excluded")[:38]
    "the 'hehl' coefficient is undefined (a"
    """
    return (
        f"the {convention!r} coefficient is undefined (a kNN graph changed connectivity between layers, or a "
        f"series is constant); logging the both-layers-connected coefficient instead with {flag} = 1. "
        "Reported once."
    )


def payload(
    measurement: Measurement | None,
    captured: Captured | None,
    layer_names: Sequence[str],
    error: BaseException | None = None,
) -> dict[str, Any]:
    """What one measurement gives to log, as plain picklable values (the monitor broadcasts it).

    Keys: ``values`` (:func:`scalars`; empty on failure), ``error`` (``"Type: message"`` or None),
    ``reductions`` (layer name -> reduction), ``extra`` (``coefficient_paper``,
    ``coefficient_connected``, ``layer``: the layer coefficients, of the first k's result) and ``dims``
    (D_l of the captured layers).

    >>> payload(None, None, [], RuntimeError("boom"))["error"]
    'RuntimeError: boom'
    """
    if measurement is None:
        failed = f"{type(error).__name__}: {error}"
        return {"values": {}, "error": failed, "reductions": {}, "extra": {}, "dims": []}
    result = first_result(measurement)
    extra = {
        "coefficient_paper": float(result.coefficient),
        "coefficient_connected": float(result.coefficient_connected),
        "layer": [float(v) for v in result.layer_coefficient.detach().cpu().tolist()],
    }
    return {
        "values": scalars(measurement, layer_names),
        "error": None,
        "reductions": dict(captured.reductions) if captured is not None else {},
        "extra": extra,
        "dims": [int(t.shape[1]) for t in captured.layers] if captured is not None else [],
    }


def history_entry(
    sent: Mapping[str, Any],
    logged: Mapping[str, float],
    carried: set[str],
    layer_names: Sequence[str],
    **where: Any,
) -> dict[str, Any]:
    """The monitor's history entry of one measurement: ``where`` (``epoch``, ``global_step``: the step of
    its logged scalars, ``stage``) and the numbers of its :func:`payload` ``sent`` and of what was
    ``logged``: ``coefficient`` (as logged), ``coefficient_paper``, ``coefficient_connected`` (NaN when
    undefined), ``excluded``, ``failed``, ``carried`` (the keys replaced), ``local_mean``,
    ``local_negative_share``, ``critical_layer``, the ``curvature`` / ``geodesic_sum`` dicts layer ->
    value, ``layer`` (the layer coefficients), ``reductions`` and ``seconds``.
    """
    values, extra = sent["values"], sent["extra"]
    critical = values.get("ricci/critical_layer", math.nan)
    return {
        **where,
        "coefficient": logged["ricci/coefficient"],
        "coefficient_paper": extra.get("coefficient_paper", math.nan),
        "coefficient_connected": extra.get("coefficient_connected", math.nan),
        "excluded": bool(logged["ricci/excluded"]),
        "failed": sent["error"] is not None,
        "carried": sorted(carried),
        "local_mean": logged["ricci/local_mean"],
        "local_negative_share": logged["ricci/local_negative_share"],
        "critical_layer": int(critical) if math.isfinite(critical) else -1,
        "curvature": {n: logged.get(f"ricci/curvature/{n}", math.nan) for n in layer_names},
        "geodesic_sum": {n: logged.get(f"ricci/geodesic_sum/{n}", math.nan) for n in layer_names},
        "layer": list(extra.get("layer", [])),
        "reductions": dict(sent["reductions"]),
        "seconds": float(sent["seconds"]),
    }

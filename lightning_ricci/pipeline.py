"""The one measurement path: probe -> capture -> reduce -> ``ricci_flow`` -> scalars.

Shape symbols: N probe points, L layers (the probe input included), D_l features of layer l.

:class:`Pipeline` is used by :class:`~lightning_ricci.RicciFlowMonitor` (at each validation run),
:func:`~lightning_ricci.analyze` (once) and, through :func:`scalars`, by the command line, so the three
give the same numbers on the same model and probe by construction. The steps:

1. **Probe** (:func:`make_probe`): a tensor [N, ...]; a tuple ``(inputs, labels, ...)``; a dict batch
   (the input under ``input_key``, by default the first of :data:`INPUT_KEYS` present, the labels under
   ``label_key``, by default the first of :data:`LABEL_KEYS`); anything with ``batch_to_input(batch)``;
   or a graph (a ``torch_geometric.data.Data``, or any object with ``x``, ``edge_index`` and
   ``num_nodes``): its forward runs once on the whole graph and the probe points are the nodes of the
   ``node_mask`` attribute (``"val_mask"`` by default, all nodes where the graph has none). Integer
   labels [N] found this way go to ``ricci_flow(labels=...)``.
2. **Forward**: ``forward_fn(model, inputs)`` if given, else ``model(inputs)`` (``model(**inputs)`` for a
   dict input, ``model(data.x, data.edge_index)`` for a graph when ``forward`` takes two or more
   arguments, ``model(data)`` otherwise), in chunks of ``batch_size`` (graphs: once), in eval mode (every
   module's ``training`` flag is restored afterwards), under ``torch.no_grad()``, eagerly also under
   ``torch.compile`` (:func:`eager`), so that the temporary hooks fire and no graph is recompiled.
3. **Layers**: ``layers`` names, classes or a predicate, or the default rules of
   :mod:`lightning_ricci.capture` (blocks, else activation modules, else the children that run), capped
   at ``max_layers``; the probe input is layer 0 (``"input"``, or ``"probe_input"`` if a module is
   called so); integer inputs (token ids) enter it as floats.
4. **Reduce**: each layer's output becomes [N, D_l] by ``reduce`` (see :mod:`lightning_ricci.capture`),
   batch by batch into one buffer per layer. If any layer is float64 all are promoted to float64, else
   all are float32.
5. **Geometry**: ``ricci_flow(layers, k, ...)`` with ``k`` = :func:`default_k` of N unless given;
   ``k=[...]`` scans k in one call (a :class:`~lightning_ricci.RicciFlowScan`).
   Out of memory on CUDA: a retry on the GPU with 1/16 of the scratch memory (same result, slower),
   then the CPU; each warned once.
6. **Scalars**: :func:`scalars` turns the result into the logged keys.

**Cost guard.** Before the first measurement, :meth:`Pipeline.estimate` projects the activation memory
(N x sum of D_l x 4 bytes) and the time (the forward, timed on the first chunk, plus a model of the
geometry). Above :data:`ACTIVATION_BUDGET_MB` or :data:`TIME_BUDGET_S` the callers warn once with the
numbers and the knobs (``num_samples``, ``layers``, ``reduce``, ``max_layers``).

This module needs only torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from lightning_ricci.capture import (
    DEFAULT_MAX_LAYERS,
    ActivationCapture,
    CaptureError,
    CaptureValueError,
    Reduce,
    check_layer_spec,
    check_reduce,
    default_layers,
    find_layers,
    largest_output,
    reduce_output,
)
from lightning_ricci.geometry import ricci_flow
from lightning_ricci.geometry._checks import check_choice
from lightning_ricci.geometry.curvature import EDGE_CURVATURES
from lightning_ricci.geometry.flow import CONVENTIONS
from lightning_ricci.geometry.knn import KNN_BACKENDS, KnnBackend
from lightning_ricci.geometry.result import Convention, CurvatureKind, RicciFlowResult, RicciFlowScan

__all__ = [
    "ACTIVATION_BUDGET_MB",
    "CLASS_FIELDS",
    "INPUT_KEYS",
    "INPUT_LAYER",
    "LABEL_KEYS",
    "TIME_BUDGET_S",
    "Captured",
    "Cost",
    "Measurement",
    "Pipeline",
    "Probe",
    "default_k",
    "degenerate_message",
    "excluded_message",
    "history_entry",
    "payload",
    "eager",
    "eval_mode",
    "check_k",
    "expected_keys",
    "first_result",
    "is_graph",
    "make_probe",
    "probe_from_dataset",
    "scalars",
    "takes_labels",
]

#: Name of the probe input, the first layer (``"probe_input"`` if a module of the model is called so).
INPUT_LAYER = "input"
#: Dict-batch keys tried, in order, for the model input when ``input_key`` is not given.
INPUT_KEYS = ("x", "input", "inputs", "input_ids", "pixel_values", "image", "images", "features", "data")
#: Dict-batch keys tried, in order, for the labels when ``label_key`` is not given.
LABEL_KEYS = ("y", "label", "labels", "target", "targets", "class", "classes")
#: Projected activation memory (MB) above which the cost guard warns.
ACTIVATION_BUDGET_MB = 1024.0
#: Projected seconds per measurement above which the cost guard warns.
TIME_BUDGET_S = 30.0
# Rough CPU throughput of the geometry, for the cost guard only: the kNN distance GEMMs (flop/s) and the
# all-pairs BFS (seconds per layer and N^2) at the defaults, measured on a 2-core CPU.
_GEMM_FLOPS = 1e10
_BFS_SECONDS = 3e-8
#: With ``batch_size=None``, probe points per forward pass are chosen so that a batch's largest module
#: output times 12 (a bound on the tensors alive at once inside a residual block) stays within this many bytes.
FORWARD_BUDGET_BYTES = 128 * 2**20
_ALIVE = 12
# Scratch memory of the retry after a CUDA out-of-memory error (the default is 2 GiB).
_SMALL_CUDA_BUDGET = 1 << 27

LayerSpec = (
    Sequence[str] | type[nn.Module] | tuple[type[nn.Module], ...] | Callable[[str, nn.Module], bool] | None
)
ForwardFn = Callable[[nn.Module, Any], Any]
#: What one measurement gives: a result, or a scan over several k (``k=[...]``).
Measurement = RicciFlowResult | RicciFlowScan


def default_k(num_points: int) -> int:
    """The default number of neighbours for ``num_points`` probe points.

    5 % of N as in Hehl et al. (k = 50 at N = 1000), at least 5 and at most 50, and always below N.

    Args:
        num_points (int): probe size N (at least 2).

    Returns:
        int: k.

    >>> default_k(1000), default_k(200), default_k(64), default_k(4)
    (50, 10, 5, 3)
    """
    return max(1, min(num_points - 1, max(5, min(50, round(0.05 * num_points)))))


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run everything inside eagerly, also code under ``torch.compile`` (so temporary hooks fire).

    ``set_stance("force_eager")`` makes compiled modules and functions run their original Python code
    without recompiling anything; the compiled training graph is left as it is.

    >>> with eager():
    ...     torch.compile(lambda t: t + 1)(torch.zeros(1))
    tensor([1.])
    """
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None:  # torch < 2.6
        yield
        return
    with set_stance("force_eager"):
        yield


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode; restore every module's own ``training`` flag afterwards.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()); net[1].eval()  # doctest: +ELLIPSIS
    Dropout(...)
    >>> with eval_mode(net):
    ...     net.training
    False
    >>> net.training, net[1].training
    (True, False)
    """
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_k(k: Any) -> int | list[int] | None:
    """Validate ``k``: None, an int >= 1, or a non-empty sequence of distinct ints >= 1 (a k scan).

    Args:
        k (Any): the value to check.

    Returns:
        int | list[int] | None: ``k`` (a sequence as a list).

    Raises:
        TypeError: a sequence holding something other than ints (bools included).
        ValueError: an int below 1, an empty sequence, a value below 1 or a repeated value.

    >>> check_k(None), check_k(5), check_k((10, 30, 50))
    (None, 5, [10, 30, 50])
    """
    if k is None or _is_int(k):
        if k is not None and k < 1:
            raise ValueError(f"`k` must be a positive int or None (got {k!r})")
        return cast("int | None", k)
    if not isinstance(k, Sequence) or isinstance(k, (str, bytes)):
        raise ValueError(f"`k` must be a positive int, a list of them or None (got {k!r})")
    values = list(k)
    if not values:
        raise ValueError("`k` must hold at least one value (got an empty sequence)")
    wrong = [v for v in values if not _is_int(v)]
    if wrong:
        raise TypeError(
            f"`k` must hold ints (got {wrong[0]!r} of type {type(wrong[0]).__name__} in {values})"
        )
    if min(values) < 1:
        raise ValueError(f"`k` must hold ints >= 1 (got {values})")
    if len(set(values)) != len(values):
        raise ValueError(f"`k` must hold distinct values (got {values})")
    return cast("list[int]", values)


def first_result(measurement: Measurement) -> RicciFlowResult:
    """The result of a measurement, or of a scan's first k (the one logged under the usual keys)."""
    return measurement.results[0] if isinstance(measurement, RicciFlowScan) else measurement


def is_graph(obj: Any) -> bool:
    """Whether ``obj`` is a graph probe: an object (a PyG ``Data``) with tensors ``x`` and ``edge_index``.

    >>> is_graph(torch.zeros(3, 2)), is_graph(type("G", (), {"x": torch.zeros(3, 2), "edge_index": torch.zeros(2, 0)})())
    (False, True)
    """
    return (
        not isinstance(obj, (Tensor, Mapping, tuple, list))
        and isinstance(getattr(obj, "edge_index", None), Tensor)
        and isinstance(getattr(obj, "x", None), Tensor)
    )


def _first_tensor(obj: Any) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    values = obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, (tuple, list)) else ()
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


def _as_labels(value: Any, num_points: int) -> Tensor | None:
    """Integer class ids [N] (a float tensor of whole numbers counts); anything else: no labels."""
    if not isinstance(value, Tensor) or value.dim() != 1 or value.shape[0] != num_points:
        return None
    if value.is_floating_point():
        if not bool((value == value.round()).all()) or bool((value < 0).any()):
            return None
        return value.long()
    if value.dtype == torch.bool or value.is_complex():
        return value.long() if value.dtype == torch.bool else None
    return value.long() if bool((value >= 0).all()) else None


@dataclasses.dataclass
class Probe:
    """A probe set: what the model is fed, how many points it has, their labels, and how to chunk it.

    Build it with :func:`make_probe`.

    Attributes:
        batch (Any): the whole probe as a batch: a tensor, tuple, dict or graph.
        num_points (int): N.
        labels (Tensor | None): [N] long class ids, or None.
        nodes (Tensor | None): [N] long node indices of a graph probe, else None.
        input_key (str | None): the dict key of the model input.
        batch_to_input (Callable | None): the callable that turns a batch into the model input.
    """

    batch: Any
    num_points: int
    labels: Tensor | None = None
    nodes: Tensor | None = None
    input_key: str | None = None
    batch_to_input: Callable[[Any], Any] | None = None

    @property
    def is_graph(self) -> bool:
        """Whether the probe is one graph whose forward runs once."""
        return self.nodes is not None

    def chunks(self, batch_size: int) -> Iterator[Any]:
        """The probe as batches of at most ``batch_size`` points (a graph: once, whole)."""
        if self.is_graph:
            yield self.batch
            return
        for start in range(0, self.num_points, batch_size):
            yield _slice(self.batch, start, min(start + batch_size, self.num_points), self.num_points)

    def head(self, count: int) -> Any:
        """The first ``count`` points as one batch (a graph: whole)."""
        return next(self.chunks(count))

    def model_input(self, batch: Any) -> Any:
        """What the model is called with for one batch."""
        if self.batch_to_input is not None:
            return self.batch_to_input(batch)
        if self.is_graph:
            return batch
        if isinstance(batch, Mapping):
            return batch[self.input_key]
        if isinstance(batch, (tuple, list)):
            return batch[0]
        return batch

    def input_features(self, batch: Any, model_input: Any) -> Tensor:
        """The probe input of one batch (layer 0): the graph's node features at the probe nodes, or the
        model input's first tensor."""
        if self.is_graph:
            assert self.nodes is not None
            x = model_input.x if is_graph(model_input) else batch.x
            return cast(Tensor, x).index_select(0, self.nodes.to(x.device))
        tensor = _first_tensor(model_input)
        if tensor is None:
            raise TypeError(
                f"the model input holds no tensor (got {type(model_input).__name__}); the probe input is "
                "layer 0: pass `input_key=` or a `batch_to_input` that returns one"
            )
        return tensor


def _slice(obj: Any, start: int, stop: int, num_points: int) -> Any:
    if isinstance(obj, Tensor):
        return obj[start:stop] if obj.dim() > 0 and obj.shape[0] == num_points else obj
    if isinstance(obj, Mapping):
        return type(obj)({key: _slice(value, start, stop, num_points) for key, value in obj.items()})  # type: ignore[call-arg]
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_slice(value, start, stop, num_points) for value in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_slice(value, start, stop, num_points) for value in obj)
    return obj


def make_probe(
    batch: Any,
    *,
    input_key: str | None = None,
    label_key: str | None = None,
    batch_to_input: Callable[[Any], Any] | None = None,
    node_mask: str | None = "val_mask",
    max_points: int | None = None,
    seed: int = 0,
    argument: str = "probe",
) -> Probe:
    """Build a :class:`Probe` from a batch of any supported kind (see the module docstring).

    Args:
        batch (Any): a tensor [N, ...], a tuple ``(inputs, labels, ...)``, a dict batch, a graph, or
            anything ``batch_to_input`` understands.
        input_key (str, optional): the dict key of the model input. Default: None (:data:`INPUT_KEYS`).
        label_key (str, optional): the dict key of the labels. Default: None (:data:`LABEL_KEYS`).
        batch_to_input (Callable, optional): batch -> model input. Default: None.
        node_mask (str, optional): for a graph, the boolean node attribute whose nodes are the probe
            points; ``None`` or a missing attribute: all nodes. Default: ``"val_mask"``.
        max_points (int, optional): for a graph, keep at most this many nodes (a seeded sample).
            Default: None.
        seed (int, optional): the seed of that sample. Default: 0.
        argument (str, optional): the argument name in error messages. Default: ``"probe"``.

    Returns:
        Probe: the probe.

    Raises:
        TypeError: an unsupported batch, or a dict without a known input key.
        ValueError: fewer than 3 points, or ``input_key`` / ``label_key`` not in the dict.

    >>> probe = make_probe({"x": torch.zeros(10, 3), "y": torch.arange(10) % 2})
    >>> probe.num_points, probe.input_key, probe.labels.tolist()[:4]
    (10, 'x', [0, 1, 0, 1])
    """
    labels: Tensor | None = None
    nodes: Tensor | None = None
    key: str | None = None
    if is_graph(batch):
        num_nodes = int(getattr(batch, "num_nodes", None) or batch.x.shape[0])
        mask = getattr(batch, node_mask, None) if node_mask else None
        if (
            isinstance(mask, Tensor)
            and mask.dtype == torch.bool
            and mask.numel() == num_nodes
            and bool(mask.any())
        ):
            nodes = mask.nonzero().flatten().cpu()
        else:
            nodes = torch.arange(num_nodes)
        if max_points is not None and nodes.numel() > max_points:
            generator = torch.Generator().manual_seed(seed)
            nodes = nodes[torch.randperm(nodes.numel(), generator=generator)[:max_points]].sort().values
        y = getattr(batch, "y", None)
        if isinstance(y, Tensor) and y.dim() == 1 and y.shape[0] == num_nodes:
            labels = _as_labels(y.index_select(0, nodes.to(y.device)).cpu(), nodes.numel())
        num_points = int(nodes.numel())
    elif isinstance(batch, Mapping):
        if input_key is not None and input_key not in batch:
            raise ValueError(
                f"`input_key` must be a key of the batch (got {input_key!r}; keys {list(batch)[:12]})"
            )
        if label_key is not None and label_key not in batch:
            raise ValueError(
                f"`label_key` must be a key of the batch (got {label_key!r}; keys {list(batch)[:12]})"
            )
        key = input_key or next((k for k in INPUT_KEYS if k in batch), None)
        if key is None and batch_to_input is None:
            raise TypeError(
                f"`{argument}` is a dict batch without a known input key (got keys {list(batch)[:12]}): pass "
                f"`input_key=` (and `label_key=`), or `batch_to_input=`"
            )
        first = _first_tensor(batch[key]) if key is not None else _first_tensor(batch)
        num_points = _num_points(first, argument)
        found_label = label_key or next((k for k in LABEL_KEYS if k in batch), None)
        if found_label is not None:
            labels = _as_labels(batch[found_label], num_points)
    elif isinstance(batch, (tuple, list)) and not isinstance(batch, Tensor):
        if len(batch) == 0:
            raise TypeError(
                f"`{argument}` must be a tensor [N, ...] or a tuple (inputs, labels) (got an empty {type(batch).__name__})"
            )
        first = batch[0] if batch_to_input is None else _first_tensor(batch)
        if not isinstance(first, Tensor) and batch_to_input is None:
            raise TypeError(
                f"`{argument}` must be a tensor [N, ...] or a tuple (inputs, labels) whose first element is one "
                f"(got {type(first).__name__})"
            )
        num_points = _num_points(first, argument)
        if len(batch) > 1:
            labels = _as_labels(batch[1], num_points)
    elif isinstance(batch, Tensor):
        num_points = _num_points(batch, argument)
    elif batch_to_input is not None:
        num_points = _num_points(_first_tensor(batch_to_input(batch)), argument)
    else:
        raise TypeError(
            f"`{argument}` must be a tensor [N, ...], a tuple (inputs, labels), a dict batch or a graph "
            f"(got {type(batch).__name__}); for other batches pass `batch_to_input=`"
        )
    return Probe(batch, num_points, labels, nodes, key, batch_to_input)


def _num_points(tensor: Any, argument: str) -> int:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"`{argument}` must hold a tensor [N, ...] of inputs (got {type(tensor).__name__})")
    if tensor.dim() == 0 or tensor.shape[0] < 3:
        raise ValueError(
            f"`{argument}` must hold at least 3 samples along dim 0 (got shape {tuple(tensor.shape)})"
        )
    return int(tensor.shape[0])


def probe_from_dataset(
    dataset: Any,
    collate: Callable[[list[Any]], Any],
    num_samples: int,
    seed: int,
    indices: Sequence[int] | None = None,
    **options: Any,
) -> tuple[Probe, list[int]]:
    """The default probe: a seeded sample of ``num_samples`` items of ``dataset`` (sorted indices),
    collated as one batch; or, when the dataset holds a graph, that graph with at most ``num_samples``
    nodes of its ``node_mask``. ``indices`` (restored from a checkpoint) win over the seed.

    Args:
        dataset (Any): a map-style dataset.
        collate (Callable): the dataloader's ``collate_fn``.
        num_samples (int): the probe size (capped by the dataset size).
        seed (int): the sample's seed.
        indices (Sequence[int], optional): the indices (graph: node indices) to use. Default: None.
        **options: passed to :func:`make_probe` (``input_key``, ``label_key``, ``batch_to_input``,
            ``node_mask``, ``argument``).

    Returns:
        tuple[Probe, list[int]]: the probe and its indices.

    Raises:
        ValueError: a dataset without ``len()``, or restored indices out of its range.

    >>> probe, indices = probe_from_dataset([(torch.tensor([float(i)]), i % 2) for i in range(10)],
    ...                                     torch.utils.data.default_collate, 4, seed=0)
    >>> probe.num_points, indices == sorted(indices)
    (4, True)
    """
    argument = options.pop("argument", "the validation batch")
    try:
        size = len(dataset)
    except TypeError:
        raise ValueError(
            f"the default probe cannot sample a {type(dataset).__name__} without `len()` (an IterableDataset); "
            "pass `probe=` explicitly"
        ) from None
    first = dataset[0]
    if is_graph(first):
        probe = make_probe(first, **options, max_points=num_samples, seed=seed, argument=argument)
        assert probe.nodes is not None
        if indices is not None:
            probe.nodes = torch.tensor(list(indices), dtype=torch.long)
            probe.num_points = len(indices)
        return probe, probe.nodes.tolist()
    if indices is None:
        generator = torch.Generator().manual_seed(seed)
        indices = torch.randperm(size, generator=generator)[: min(num_samples, size)].sort().values.tolist()
    elif indices and max(indices) >= size:
        raise ValueError(
            f"the restored probe indices go up to {max(indices)}, but the dataset has {size} samples: resume "
            "with the same data, or pass `probe=`"
        )
    batch = collate([dataset[i] for i in indices])
    return make_probe(batch, **options, argument=argument), list(indices)


def default_forward(model: nn.Module, inputs: Any) -> Any:
    """``model(inputs)``; ``model(**inputs)`` for a dict; ``model(x, edge_index)`` for a graph when the
    model's ``forward`` takes two or more arguments, else ``model(graph)``.

    >>> default_forward(nn.Linear(2, 1), torch.zeros(3, 2)).shape
    torch.Size([3, 1])
    """
    if is_graph(inputs):
        try:
            params = inspect.signature(model.forward).parameters.values()
        except (TypeError, ValueError):
            params = []  # type: ignore[assignment]
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params):
            return model(inputs.x, inputs.edge_index)
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


@dataclasses.dataclass
class Captured:
    """The layers of one probe pass, ready for ``ricci_flow``.

    Attributes:
        names (list[str]): the L layer names, the probe input first.
        layers (list[Tensor]): [N, D_l] float32 (all float64 if any was), on the model's device.
        reductions (dict[str, str]): layer name -> the reduction applied (``"flatten"``, ``"mean"``, ...).
        labels (Tensor | None): [N] class ids of the probe, or None.
    """

    names: list[str]
    layers: list[Tensor]
    reductions: dict[str, str]
    labels: Tensor | None = None


@dataclasses.dataclass(frozen=True)
class Cost:
    """Projected cost of one measurement (the cost guard).

    Attributes:
        activation_mb (float): N x sum of D_l x bytes per value, in MB.
        forward_seconds (float): the probe forward, extrapolated from the first chunk.
        geometry_seconds (float): a model of ``ricci_flow``'s time on a 2-core CPU.
    """

    activation_mb: float
    forward_seconds: float
    geometry_seconds: float

    @property
    def seconds(self) -> float:
        """The projected total."""
        return self.forward_seconds + self.geometry_seconds

    def over_budget(self) -> bool:
        """Whether it exceeds :data:`ACTIVATION_BUDGET_MB` or :data:`TIME_BUDGET_S`."""
        return self.activation_mb > ACTIVATION_BUDGET_MB or self.seconds > TIME_BUDGET_S

    def warning(self, num_points: int, num_layers: int) -> str:
        """The cost guard's warning: the numbers and the knobs."""
        return (
            f"a measurement of {num_points} probe points on {num_layers} layers projects {self.activation_mb:.3g} "
            f"MB of activations and about {self.seconds:.1f} s (forward {self.forward_seconds:.1f} s, geometry "
            f"{self.geometry_seconds:.1f} s); lower `num_samples`, choose fewer `layers` or `max_layers`, or pool "
            'more (`reduce="mean"`)'
        )


class Pipeline:
    """The measurement configuration and its steps (see the module docstring).

    Args:
        layers: module names (``"name:i"``, ``"name[key]"`` allowed), module classes, a predicate
            ``(name, module) -> bool``, or None for the default rules. Default: None.
        k (int | Sequence[int], optional): neighbours per point; a list scans k (one ``ricci_flow`` call
            returning a :class:`~lightning_ricci.RicciFlowScan`). Default: None (:func:`default_k` of N).
        convention (str): ``"baptista"`` or ``"hehl"``. Default: ``"baptista"``.
        curvature (str): edge curvature of the local and layer coefficients. Default: ``"forman"``.
        knn_backend (str): passed to ``ricci_flow``. Default: ``"auto"``.
        memory_budget (int, optional): passed to ``ricci_flow``. Default: None.
        reduce (str | Callable | Mapping): per-layer reduction. Default: ``"auto"``.
        max_layers (int): cap on the default layers. Default: :data:`~lightning_ricci.capture.DEFAULT_MAX_LAYERS`.
        batch_size (int, optional): probe points per forward pass. Default: None: chosen by
            :meth:`resolve` so that a batch's largest module output times 12 stays within
            :data:`FORWARD_BUDGET_BYTES` (128 MB), between 8 and 256 (256 for MLPs).
        forward_fn (Callable, optional): ``forward_fn(model, inputs) -> output``. Default: None
            (:func:`default_forward`).

    Raises:
        TypeError, ValueError: a bad argument (the message names it).

    >>> net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> pipeline = Pipeline(k=5)
    >>> result, captured = pipeline.measure(net, make_probe(torch.randn(40, 2)))
    >>> captured.names, result.k
    (['input', '1', '3'], 5)
    """

    def __init__(
        self,
        layers: LayerSpec = None,
        k: int | Sequence[int] | None = None,
        *,
        convention: Convention = "baptista",
        curvature: CurvatureKind = "forman",
        knn_backend: KnnBackend = "auto",
        memory_budget: int | None = None,
        reduce: Reduce | Mapping[str, Reduce] = "auto",
        max_layers: int = DEFAULT_MAX_LAYERS,
        batch_size: int | None = None,
        forward_fn: ForwardFn | None = None,
    ) -> None:
        self.layers = check_layer_spec(layers)
        checked_k = check_k(k)
        check_choice("convention", convention, CONVENTIONS)
        check_choice("curvature", curvature, EDGE_CURVATURES)
        check_choice("knn_backend", knn_backend, KNN_BACKENDS)
        check_reduce(reduce)
        for name, value in (("max_layers", max_layers), ("batch_size", batch_size)):
            if (value is not None or name == "max_layers") and not (_is_int(value) and cast(int, value) >= 1):
                raise ValueError(f"`{name}` must be an int >= 1 (got {value!r})")
        if forward_fn is not None and not callable(forward_fn):
            raise TypeError(f"`forward_fn` must be callable (got {type(forward_fn).__name__})")
        self.k = checked_k
        self.convention: Convention = convention
        self.curvature: CurvatureKind = curvature
        self.knn_backend: KnnBackend = knn_backend
        self.memory_budget = memory_budget
        self.reduce = reduce
        self.max_layers = max_layers
        self.requested_batch_size = batch_size
        self.batch_size = 256 if batch_size is None else batch_size
        self.forward_fn: ForwardFn = forward_fn or default_forward
        self.rule = "names" if isinstance(self.layers, list) else None

    # ------------------------------------------------------------------ probe pass

    def _call(
        self,
        model: nn.Module,
        probe: Probe,
        batch: Any,
        prepare: Callable[[Any], Any] | None,
        convert: Callable[[Any], Any] | None,
        context: Callable[[], contextlib.AbstractContextManager[Any]] | None,
        record: Callable[[Tensor], None] | None = None,
    ) -> Any:
        if prepare is not None:
            batch = prepare(batch)
        inputs = probe.model_input(batch)
        if record is not None:
            record(probe.input_features(batch, inputs))
        if convert is not None:
            inputs = convert(inputs)
        forward = torch.compiler.disable(lambda: self.forward_fn(model, inputs), recursive=True)  # type: ignore[no-untyped-call]
        with torch.no_grad(), eager(), context() if context is not None else contextlib.nullcontext():
            return forward()

    def resolve(
        self,
        model: nn.Module,
        probe: Probe,
        *,
        prepare: Callable[[Any], Any] | None = None,
        convert: Callable[[Any], Any] | None = None,
        context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> tuple[list[str], list[int], float]:
        """The module layers (without the input), chosen and checked on the first few probe points.

        One forward over at most 64 points (a graph: whole) picks the layers (the default rules need it),
        and one more captures them, so that a named layer that does not run, or gives no float tensor with
        the sample dim first, is reported here rather than at the first measurement.

        Returns:
            tuple[list[str], list[int], float]: the layer names (a module called several times expanded
            to ``"name:i"``), the reduced feature counts D_l of the L layers (the input first), and the
            seconds per probe point of the checking forward.

        Raises:
            ValueError: an unknown name (listing the modules that exist) or no layer at all; a layer that
                does not run or gives an unusable output (:class:`~lightning_ricci.capture.CaptureValueError`,
                also a ``CaptureError``).
        """
        points = probe.num_points if probe.is_graph else min(self.batch_size, probe.num_points, 64)
        sample = probe.head(points)
        # Rows of every hooked output: the batch, or all the nodes of a graph.
        rows = _rows_of_graph(probe) if probe.is_graph else points
        spec = self.layers
        dims: list[int] = []

        def record(features: Tensor) -> None:
            features = features if features.is_floating_point() else features.float()
            dims.append(int(reduce_output(features, self._input_reduce(), INPUT_LAYER)[0].shape[1]))

        with eval_mode(model):
            if isinstance(spec, list):
                names = ActivationCapture(model, spec).names
                self.rule = "names"
            elif spec is None:

                def run() -> Any:
                    return self._call(model, probe, sample, prepare, convert, context)

                names, self.rule = default_layers(model, run, rows=rows, max_layers=self.max_layers)
            else:
                names = find_layers(
                    model, lambda: self._call(model, probe, sample, prepare, convert, context), spec
                )
                self.rule = "selected"
            check = ActivationCapture(model, names, reduce=self.reduce, rows=probe.nodes)
            start = time.perf_counter()
            try:
                with check:
                    check.forward(
                        lambda: self._call(model, probe, sample, prepare, convert, context, record),
                        batch_size=None if probe.is_graph else points,
                    )
                acts = check.activations()
            except CaptureError as err:
                raise CaptureValueError(f"`layers`: {err}") from None
            seconds = time.perf_counter() - start
            if self.requested_batch_size is None and not probe.is_graph:
                largest = largest_output(
                    model, lambda: self._call(model, probe, sample, prepare, convert, context), points
                )
                self.batch_size = max(8, min(256, FORWARD_BUDGET_BYTES // (largest * 4 * _ALIVE)))
        return list(acts), [dims[0], *(int(a.shape[1]) for a in acts.values())], seconds / points

    def capture(
        self,
        model: nn.Module,
        probe: Probe,
        names: Sequence[str],
        *,
        prepare: Callable[[Any], Any] | None = None,
        convert: Callable[[Any], Any] | None = None,
        context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> Captured:
        """One probe pass: the probe input and the reduced outputs of ``names``.

        Raises:
            CaptureError: a layer did not run or gave an unusable output (see :class:`ActivationCapture`).
        """
        capture = ActivationCapture(
            model, list(names), reduce=self.reduce, num_rows=probe.num_points, rows=probe.nodes
        )
        inputs: Tensor | None = None
        filled = 0
        how = "flatten"

        def record(features: Tensor) -> None:
            nonlocal inputs, filled, how
            if not features.is_floating_point():
                features = features.float()
            block, how = reduce_output(features, self._input_reduce(), INPUT_LAYER)
            if inputs is None:
                inputs = block.new_empty((probe.num_points, block.shape[1]))
            inputs[filled : filled + block.shape[0]] = block
            filled += block.shape[0]

        with eval_mode(model), capture:
            for batch in probe.chunks(self.batch_size):
                rows = None if probe.is_graph else _rows(batch, probe)
                capture.forward(
                    lambda batch=batch: self._call(model, probe, batch, prepare, convert, context, record),  # type: ignore[misc]
                    batch_size=rows,
                )
            acts = capture.activations()
        assert inputs is not None
        input_name = INPUT_LAYER if INPUT_LAYER not in acts else "probe_input"
        tensors = [inputs.to(next(iter(acts.values())).device), *acts.values()]
        if any(t.dtype == torch.float64 for t in tensors):
            tensors = [t.double() for t in tensors]
        reductions = {input_name: how, **capture.reductions}
        return Captured([input_name, *acts], tensors, reductions, probe.labels)

    def _input_reduce(self) -> Reduce:
        reduce = self.reduce
        if isinstance(reduce, Mapping):
            return reduce.get(INPUT_LAYER, "auto")
        return reduce

    # ------------------------------------------------------------------ geometry

    def k_for(self, num_points: int) -> int | list[int]:
        """The k (a list: the scan) of a measurement on ``num_points`` points."""
        return self.k if self.k is not None else default_k(num_points)

    def check_points(self, num_points: int, what: str) -> None:
        """Raise a ``ValueError`` naming ``k`` if a given k is not below ``num_points`` (``what`` names N)."""
        if self.k is None:
            return
        largest = max(self.k) if isinstance(self.k, list) else self.k
        if largest >= num_points:
            raise ValueError(f"`k` must be smaller than {what} {num_points} (got {self.k})")

    def compute(
        self,
        captured: Captured,
        warn: Callable[[str, str], None] | None = None,
        process_group: Any = None,
    ) -> Measurement:
        """``ricci_flow`` on the captured layers, with the out-of-memory policy of the module docstring.

        Args:
            captured (Captured): the layers.
            warn (Callable[[str, str], None], optional): ``warn(key, message)`` for the OOM retries.
                Default: None (``warnings.warn``).
            process_group (ProcessGroup, optional): share the work between the ranks of this
                ``torch.distributed`` group (every rank must call with the same probe); every rank gets
                the single-process result. No out-of-memory retry then: one rank cannot change its
                device alone. Default: None (this process only).
        """
        layers = captured.layers
        k = self.k_for(layers[0].shape[0])
        kwargs: dict[str, Any] = {
            "convention": self.convention,
            "curvature": self.curvature,
            "knn_backend": self.knn_backend,
        }
        if captured.labels is not None and takes_labels():
            kwargs["labels"] = captured.labels.to(layers[0].device)
        if warn is None:

            def warn(key: str, message: str) -> None:
                import warnings

                warnings.warn(message, stacklevel=3)

        if process_group is not None:
            return ricci_flow(
                layers, k, memory_budget=self.memory_budget, process_group=process_group, **kwargs
            )
        try:
            return ricci_flow(layers, k, memory_budget=self.memory_budget, **kwargs)
        except torch.cuda.OutOfMemoryError:
            if layers[0].device.type == "cpu":
                raise
        # CUDA out of memory: first retry on the GPU with 1/16 of the default scratch memory (smaller
        # distance blocks and BFS source blocks; the result is the same), then on the CPU.
        torch.cuda.empty_cache()
        try:
            result = ricci_flow(layers, k, memory_budget=_SMALL_CUDA_BUDGET, **kwargs)
            warn(
                "oom-chunks",
                f"ricci_flow ran out of GPU memory for {layers[0].shape[0]} probe points; retried with smaller "
                "chunks (slower). Lower `num_samples` to avoid the retry.",
            )
            return result
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
        warn(
            "oom",
            f"ricci_flow ran out of GPU memory for {layers[0].shape[0]} probe points, even with smaller chunks; "
            "computing on the CPU instead (slower). Lower `num_samples` to stay on the GPU.",
        )
        if "labels" in kwargs:
            kwargs["labels"] = kwargs["labels"].cpu()
        return ricci_flow([t.cpu() for t in layers], k, memory_budget=self.memory_budget, **kwargs)

    def measure(self, model: nn.Module, probe: Probe) -> tuple[Measurement, Captured]:
        """Resolve the layers, capture and compute in one go (what :func:`~lightning_ricci.analyze` does)."""
        names, _, _ = self.resolve(model, probe)
        captured = self.capture(model, probe, names)
        return self.compute(captured), captured

    def estimate(self, captured_dims: Sequence[int], num_points: int, seconds_per_point: float) -> Cost:
        """The projected cost of a measurement with layers of ``captured_dims`` features on N points."""
        total = float(sum(captured_dims))
        megabytes = num_points * total * 4 / 2**20
        gemm = 2.0 * num_points**2 * total / _GEMM_FLOPS
        bfs = len(captured_dims) * num_points**2 * _BFS_SECONDS
        return Cost(megabytes, seconds_per_point * num_points, gemm + bfs)

    def describe(
        self, captured_dims: Sequence[int], names: Sequence[str], reductions: Mapping[str, str]
    ) -> str:
        """One line naming the layers, the rule that chose them, their reductions and sizes."""
        parts = [f"{name} [{reductions.get(name, '?')}, {dim}]" for name, dim in zip(names, captured_dims)]
        return f"{len(names)} layers (rule: {self.rule}): " + ", ".join(parts)


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


def _rows(batch: Any, probe: Probe) -> int:
    tensor = _first_tensor(probe.model_input(batch)) if probe.batch_to_input is None else None
    if tensor is None:
        tensor = _first_tensor(batch)
    assert tensor is not None
    return int(tensor.shape[0])


def _rows_of_graph(probe: Probe) -> int:
    return int(getattr(probe.batch, "num_nodes", None) or probe.batch.x.shape[0])


# --------------------------------------------------------------------------- scalars

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
    """The monitor's history entry of one measurement: ``where`` (``epoch``, ``global_step``, ``stage``)
    and the numbers of its :func:`payload` ``sent`` and of what was ``logged`` (see
    :class:`~lightning_ricci.RicciFlowMonitor`'s ``history``).
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

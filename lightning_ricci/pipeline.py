"""The one measurement path: probe -> capture -> reduce -> ``ricci_flow`` -> scalars.

Shape symbols: N probe points, L layers (the probe input included), D_l features of layer l.

:class:`Pipeline` is used by :class:`~lightning_ricci.RicciFlowMonitor` (at each validation run),
:func:`~lightning_ricci.analyze` (once) and, through :func:`~lightning_ricci.scalars.scalars`, by the command line, so the three
give the same numbers on the same model and probe by construction. The steps:

1. **Probe**: a :class:`~lightning_ricci.probes.Probe` (:func:`~lightning_ricci.probes.make_probe`:
   tensors, ``(x, y)`` tuples, dict batches, graphs).
2. **Forward**: ``forward_fn(model, inputs)`` if given, else ``model(inputs)`` (``model(**inputs)`` for a
   dict input, ``model(data.x, data.edge_index)`` for a graph when ``forward`` takes two or more
   arguments, ``model(data)`` otherwise), in chunks of ``batch_size`` (graphs: once), in eval mode (every
   module's ``training`` flag is restored afterwards), under ``torch.no_grad()``, eagerly also under
   ``torch.compile`` (:func:`eager`), so that the temporary hooks fire and no graph is recompiled.
3. **Layers**: ``layers`` names, classes or a predicate, or the default rules of
   :mod:`lightning_ricci.layers` (blocks, else activation modules, else the children that run), capped
   at ``max_layers``; the probe input is layer 0 (``"input"``, or ``"probe_input"`` if a module is
   called so); integer inputs (token ids) enter it as floats.
4. **Reduce**: each layer's output becomes [N, D_l] by ``reduce`` (see :mod:`lightning_ricci.reduce`),
   batch by batch into one buffer per layer. If any layer is float64 all are promoted to float64, else
   all are float32.
5. **Geometry**: ``ricci_flow(layers, k, ...)`` with ``k`` = :func:`default_k` of N unless given;
   ``k=[...]`` scans k in one call (a :class:`~lightning_ricci.RicciFlowScan`).
   Out of memory on CUDA: a retry on the GPU with 1/16 of the scratch memory (same result, slower),
   then the CPU; each warned once.
6. **Scalars**: :func:`~lightning_ricci.scalars.scalars` turns the result into the logged keys.

**Cost guard.** Before the first measurement, :meth:`Pipeline.estimate` projects the activation memory
(N x sum of D_l x 4 bytes) and the time (the forward, timed on the first chunk, plus a model of the
geometry). Above :data:`ACTIVATION_BUDGET_MB` or :data:`TIME_BUDGET_S` the callers warn once with the
numbers and the knobs (``num_samples``, ``layers``, ``reduce``, ``max_layers``).

This module needs only torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from lightning_ricci.capture import ActivationCapture
from lightning_ricci.geometry import ricci_flow
from lightning_ricci.geometry._checks import check_choice
from lightning_ricci.geometry.curvature import EDGE_CURVATURES
from lightning_ricci.geometry.flow import CONVENTIONS
from lightning_ricci.geometry.knn import KNN_BACKENDS, KnnBackend
from lightning_ricci.geometry.result import Convention, CurvatureKind
from lightning_ricci.layers import (
    DEFAULT_MAX_LAYERS,
    check_layer_spec,
    default_layers,
    find_layers,
    largest_output,
)
from lightning_ricci.probes import ForwardFn, Probe, default_forward
from lightning_ricci.reduce import CaptureError, CaptureValueError, Reduce, check_reduce, reduce_output
from lightning_ricci.scalars import Measurement, degenerate_message, takes_labels

__all__ = [
    "ACTIVATION_BUDGET_MB",
    "FORWARD_BUDGET_BYTES",
    "INPUT_LAYER",
    "TIME_BUDGET_S",
    "Captured",
    "Cost",
    "LayerSpec",
    "Pipeline",
    "Setup",
    "check_k",
    "default_k",
    "eager",
    "eval_mode",
]

#: Name of the probe input, the first layer (``"probe_input"`` if a module of the model is called so).
INPUT_LAYER = "input"
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


@dataclasses.dataclass
class Setup:
    """The layers of a measurement, resolved and checked once (:meth:`Pipeline.setup`).

    Attributes:
        names (list[str]): the module layers (without the input); ``"name:i"`` for repeated calls.
        layer_names (list[str]): the L layer names, the probe input first (``"input"``, or
            ``"probe_input"`` if a module is called so).
        dims (list[int]): D_l of the L layers; empty when the layers could not be checked.
        cost (Cost | None): the projected cost of one measurement (None without ``dims``).
        warnings (list[tuple[str, str]]): ``(key, message)`` to warn about once: ``"setup"`` (named layers
            that do not run), ``"degenerate"`` (a correlation of <= 2 points), ``"cost"`` (over budget).
    """

    names: list[str]
    layer_names: list[str]
    dims: list[int]
    cost: Cost | None
    warnings: list[tuple[str, str]]


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
        max_layers (int): cap on the default layers. Default: :data:`~lightning_ricci.layers.DEFAULT_MAX_LAYERS`.
        batch_size (int, optional): probe points per forward pass. Default: None: chosen by
            :meth:`resolve` so that a batch's largest module output times 12 stays within
            :data:`FORWARD_BUDGET_BYTES` (128 MB), between 8 and 256 (256 for MLPs).
        forward_fn (Callable, optional): ``forward_fn(model, inputs) -> output``. Default: None
            (:func:`default_forward`).

    Raises:
        TypeError, ValueError: a bad argument (the message names it).

    >>> net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> from lightning_ricci.probes import make_probe
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
        rows = probe.graph_rows() if probe.is_graph else points
        spec = self.layers
        dims: list[int] = []

        def record(features: Tensor) -> None:
            dims.append(int(self.input_block(features)[0].shape[1]))

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

    def setup(
        self,
        model: nn.Module,
        probe: Probe,
        *,
        lenient: bool = False,
        prepare: Callable[[Any], Any] | None = None,
        convert: Callable[[Any], Any] | None = None,
        context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> Setup:
        """:meth:`resolve` the layers and check the configuration: the warnings to give once, the cost.

        Args:
            lenient (bool, optional): named layers (``layers=[...]``) that do not run, or give no float
                tensor, are kept with a ``"setup"`` warning (every measurement then fails) instead of
                raising. Default: False.

        Raises:
            ValueError: as :meth:`resolve` (with ``lenient``, only for unknown names or selections).
        """
        warnings: list[tuple[str, str]] = []
        try:
            names, dims, seconds_per_point = self.resolve(
                model, probe, prepare=prepare, convert=convert, context=context
            )
        except CaptureError as err:
            if not lenient or not isinstance(self.layers, list):
                raise
            warnings.append(("setup", f"{err}; every measurement will fail until it does (ricci/failed = 1)"))
            names, dims, seconds_per_point = list(self.layers), [], 0.0
        message = degenerate_message(self.convention, len(names))
        if message is not None:
            warnings.append(("degenerate", message))
        cost = self.estimate(dims, probe.num_points, seconds_per_point) if dims else None
        if cost is not None and cost.over_budget():
            warnings.append(("cost", cost.warning(probe.num_points, len(dims))))
        input_name = INPUT_LAYER if INPUT_LAYER not in names else "probe_input"
        return Setup(names, [input_name, *names], dims, cost, warnings)

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
            block, how = self.input_block(features)
            if inputs is None:
                inputs = block.new_empty((probe.num_points, block.shape[1]))
            inputs[filled : filled + block.shape[0]] = block
            filled += block.shape[0]

        with eval_mode(model), capture:
            for batch in probe.chunks(self.batch_size):
                rows = None if probe.is_graph else probe.rows(batch)
                capture.forward(
                    lambda batch=batch: self._call(model, probe, batch, prepare, convert, context, record),  # type: ignore[misc]
                    batch_size=rows,
                )
            acts = capture.activations()
        assert inputs is not None
        return self.assemble(inputs, how, acts, capture.reductions, probe.labels)

    def input_layer(self, probe: Probe, prepare: Callable[[Any], Any] | None = None) -> tuple[Tensor, str]:
        """Layer 0 of the whole probe without a forward pass: [N, D_0] and its reduction.

        The same values :meth:`capture` records (each chunk through ``prepare``, the model input's first
        tensor, integer inputs as floats, reduced by ``reduce``).
        """
        blocks: list[Tensor] = []
        how = "flatten"
        for batch in probe.chunks(self.batch_size):
            if prepare is not None:
                batch = prepare(batch)
            block, how = self.input_block(probe.input_features(batch, probe.model_input(batch)))
            blocks.append(block)
        return torch.cat(blocks) if len(blocks) > 1 else blocks[0], how

    @staticmethod
    def assemble(
        inputs: Tensor,
        how: str,
        acts: Mapping[str, Tensor],
        reductions: Mapping[str, str],
        labels: Tensor | None,
    ) -> Captured:
        """The :class:`Captured` of layer 0 and the module layers: on the module layers' device, all
        float64 if any is, the input named ``"input"`` (``"probe_input"`` if a module is called so)."""
        input_name = INPUT_LAYER if INPUT_LAYER not in acts else "probe_input"
        tensors = [inputs.to(next(iter(acts.values())).device), *acts.values()]
        if any(t.dtype == torch.float64 for t in tensors):
            tensors = [t.double() for t in tensors]
        return Captured([input_name, *acts], tensors, {input_name: how, **reductions}, labels)

    def input_block(self, features: Tensor) -> tuple[Tensor, str]:
        """Layer 0 of one batch from the model input's tensor: integers as floats, then ``reduce`` (the
        ``"input"`` entry of a dict ``reduce``, else ``"auto"``; a str or callable applies to it too)."""
        reduce = self.reduce
        if isinstance(reduce, Mapping):
            reduce = reduce.get(INPUT_LAYER, "auto")
        return reduce_output(
            features if features.is_floating_point() else features.float(), reduce, INPUT_LAYER
        )

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

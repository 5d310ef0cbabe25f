"""Read a probe's activations from batches the model runs anyway: the validation loop.

Shape symbols: N probe points, B rows of one loop batch, M probe points in that batch.

The default probe of :class:`~lightning_ricci.RicciFlowMonitor` is a set of dataset indices. When the
validation loader visits its dataset in order (a ``SequentialSampler`` under a ``BatchSampler`` of a fixed
batch size: the usual validation loader, not shuffled), the batch and row of every probe point are known
(:func:`loop_plan`). A :class:`ProbeStream` then hooks the layers for the whole loop, keeps those rows of
every layer output while the validation steps run, and the measurement needs no forward pass of its own:
on a ResNet or a ViT, that pass costs more than all of the geometry.

What the loop gives is checked before it is used, so that a validation step that feeds the model
something else than the probe pass would is never measured silently:

* per batch, the model input of the probe rows must match the probe's own input layer
  (:meth:`ProbeStream.batch_start`; random validation transforms fail here);
* every hooked layer must run once per batch with the batch's rows as dim 0, as in the probe pass;
* once, on up to :data:`VERIFY_POINTS` probe points, the layers read from the loop must match a probe
  pass over the same points (:meth:`ProbeStream.verify`; relative error at most :data:`VERIFY_RTOL`,
  or :data:`VERIFY_RTOL_HALF` for float16/bfloat16 outputs).

A batch that fails is skipped and its points come from a probe pass over the missing points only (as do
the points of batches the loop did not run: ``limit_val_batches``, ``drop_last``); a failed check of the
input or of the layers stops the streaming for good (:attr:`ProbeStream.broken` says why).

This module needs only torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from lightning_ricci.capture import ActivationCapture, CaptureError
from lightning_ricci.pipeline import Captured, Pipeline
from lightning_ricci.probes import Probe
from lightning_ricci.reduce import first_tensor

__all__ = [
    "VERIFY_POINTS",
    "VERIFY_RTOL",
    "VERIFY_RTOL_HALF",
    "LoopPlan",
    "ProbeStream",
    "in_order_batch_size",
    "loop_plan",
]

#: Probe points compared once between the loop and a probe pass.
VERIFY_POINTS = 64
#: Largest relative error ||loop - pass|| / ||pass|| of a layer (float32 and float64 outputs).
VERIFY_RTOL = 1e-2
#: The same for layers computed in float16 or bfloat16 (autocast, ``"bf16-true"``).
VERIFY_RTOL_HALF = 5e-2
# Largest relative error of the probe input between the loop and the probe's own batch.
_INPUT_RTOL = 1e-5
_INPUT_RTOL_HALF = 1e-2

#: Batch index -> (rows of that batch, positions of those points in the probe), both [M] long.
LoopPlan = dict[int, tuple[Tensor, Tensor]]


def in_order_batch_size(loader: Any) -> int | None:
    """The batch size of a ``DataLoader`` that visits its dataset in order (a ``SequentialSampler`` under
    a ``BatchSampler``), else None.

    >>> from torch.utils.data import TensorDataset
    >>> in_order_batch_size(DataLoader(TensorDataset(torch.zeros(4)), batch_size=3)), in_order_batch_size([1])
    (3, None)
    """
    if not isinstance(loader, DataLoader):
        return None
    batches = loader.batch_sampler
    if type(loader.sampler) is not SequentialSampler or type(batches) is not BatchSampler:
        return None
    return int(batches.batch_size)


def loop_plan(loader: Any, indices: Sequence[int]) -> LoopPlan | None:
    """Where a loader puts each probe point, or None when that is not known before it runs.

    Known for a ``DataLoader`` over a map-style dataset with a ``SequentialSampler`` and a
    ``BatchSampler`` (the default one of ``batch_size=``): dataset index i is row ``i % batch_size`` of
    batch ``i // batch_size``. Points past the last batch that ``drop_last`` keeps are left out.

    Args:
        loader (Any): the dataloader the loop iterates.
        indices (Sequence[int]): the probe's dataset indices, in probe order.

    Returns:
        dict[int, tuple[Tensor, Tensor]] | None: batch index -> (rows, probe positions).

    >>> from torch.utils.data import TensorDataset
    >>> plan = loop_plan(DataLoader(TensorDataset(torch.zeros(10, 2)), batch_size=4), [1, 2, 5, 9])
    >>> {b: (rows.tolist(), pos.tolist()) for b, (rows, pos) in plan.items()}
    {0: ([1, 2], [0, 1]), 1: ([1], [2]), 2: ([1], [3])}
    >>> loop_plan(DataLoader(TensorDataset(torch.zeros(10, 2)), batch_size=4, shuffle=True), [1]) is None
    True
    """
    size = in_order_batch_size(loader)
    if size is None or not indices:
        return None
    try:
        total = len(loader.dataset)
    except TypeError:
        return None
    kept = (total // size) * size if loader.batch_sampler.drop_last else total
    index = torch.as_tensor(list(indices), dtype=torch.long)
    positions = torch.arange(index.numel())
    inside = index < kept
    index, positions = index[inside], positions[inside]
    plan: LoopPlan = {}
    for batch in torch.unique(index // size).tolist():
        chosen = (index // size) == batch
        plan[int(batch)] = (index[chosen] % size, positions[chosen])
    return plan


def _relative_error(got: Tensor, want: Tensor) -> float:
    """||got - want|| / ||want|| (0 for equal tensors, inf for other shapes)."""
    if got.shape != want.shape:
        return math.inf
    if torch.equal(got, want):
        return 0.0
    scale = float(torch.linalg.vector_norm(want, dtype=torch.float64))
    return float(torch.linalg.vector_norm(got - want.to(got.dtype), dtype=torch.float64)) / max(scale, 1e-30)


class ProbeStream:
    """The probe's layers, read from a loop that runs the model on the probe's data (see the module docstring).

    Use: :meth:`start` before the loop; :meth:`batch_start` / :meth:`batch_end` around every batch of
    the loader the plan is for; :meth:`stop` after it (also when the loop raised); then :meth:`result`.

    Args:
        pipeline (Pipeline): the measurement's configuration (reductions, batch size).
        model (nn.Module): the model whose modules are hooked.
        probe (Probe): the probe (not a graph).
        names (Sequence[str]): the resolved module layers (without the input).
        plan (LoopPlan): from :func:`loop_plan`.
        input_layer (tuple[Tensor, str]): the probe's layer 0 and its reduction
            (:meth:`Pipeline.input_layer`): what the loop's inputs are checked against.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        model: nn.Module,
        probe: Probe,
        names: Sequence[str],
        plan: LoopPlan,
        input_layer: tuple[Tensor, str],
    ) -> None:
        if probe.is_graph:
            raise ValueError("`probe`: a graph probe runs whole; it cannot be read from a loop")
        self.pipeline, self.model, self.probe, self.names, self.plan = (
            pipeline,
            model,
            probe,
            list(names),
            plan,
        )
        self.inputs, self.input_reduction = input_layer
        self.broken: str | None = None
        self.verified = False
        self.skipped = 0
        self.last_skip: str | None = None
        self._seconds = 0.0
        self._capture: ActivationCapture | None = None
        self._batch: tuple[Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        """Hook the layers for one run of the loop; nothing is recorded outside the planned batches."""
        self.stop()
        if self.broken is not None:
            return
        self._capture = ActivationCapture(
            self.model, self.names, reduce=self.pipeline.reduce, num_rows=self.probe.num_points
        )
        self._capture.attach()
        self._capture.pause()
        self.skipped, self.last_skip, self._seconds = 0, None, 0.0

    def batch_start(self, batch_idx: int, batch: Any) -> None:
        """Before batch ``batch_idx`` runs: open it if it holds probe points and its input is the probe's."""
        capture = self._capture
        if capture is None or batch_idx not in self.plan:
            return
        start = time.perf_counter()
        try:
            self._open(capture, batch_idx, batch)
        finally:
            self._seconds += time.perf_counter() - start

    def _open(self, capture: ActivationCapture, batch_idx: int, batch: Any) -> None:
        rows, positions = self.plan[batch_idx]
        try:
            tensor = first_tensor(self.probe.model_input(batch))
            if tensor is None or tensor.dim() == 0:
                raise CaptureError("the loop batch holds no input tensor")
            batch_rows = int(tensor.shape[0])
            if int(rows.max()) >= batch_rows:
                raise CaptureError(
                    f"batch {batch_idx} has {batch_rows} rows, the plan needs {int(rows.max()) + 1}"
                )
            features = tensor.index_select(0, rows.to(tensor.device))  # (not a graph: layer 0 is the input)
            half = features.dtype in (torch.float16, torch.bfloat16)
            got = self.pipeline.input_block(features)[0]
        except Exception as err:  # noqa: BLE001 - a batch we cannot read is skipped, never raised into the loop
            self._skip(f"{err}")
            return
        want = self.inputs.index_select(0, positions.to(self.inputs.device)).to(got.device)
        if _relative_error(got, want) > (_INPUT_RTOL_HALF if half else _INPUT_RTOL):
            self.broken = (
                f"the inputs of the validation loop are not the probe's (batch {batch_idx}: random validation "
                "transforms, or data that changed since the probe was drawn?)"
            )
            self.stop()
            return
        self._batch = (rows, positions)
        capture.open_batch(rows, batch_rows)

    def batch_end(self) -> None:
        """After the batch ran: store its probe rows (a batch whose layers failed is skipped)."""
        if self._capture is None or self._batch is None:
            return
        positions = self._batch[1]
        self._batch = None
        start = time.perf_counter()
        try:
            self._capture.close_batch(positions)
        except Exception as err:  # noqa: BLE001 - a batch we cannot store is skipped, never raised into the loop
            self._skip(str(err))
        self._seconds += time.perf_counter() - start

    def _skip(self, why: str) -> None:
        self.skipped += 1
        self.last_skip = why
        if self._capture is not None:
            self._capture.pause()

    def stop(self) -> None:
        """Remove the hooks (safe to call more than once; the recorded rows are kept)."""
        self._batch = None
        if self._capture is not None:
            self._capture.remove()

    # ------------------------------------------------------------------ the result

    @property
    def seconds(self) -> float:
        """Seconds this stream added to its last run of the loop (its callbacks and hooks)."""
        hooks = self._capture.hook_seconds if self._capture is not None else 0.0
        return self._seconds + hooks

    @property
    def written(self) -> Tensor:
        """[N] bool: the probe points read from the loop in its last run."""
        if self._capture is None or self.broken is not None:
            return torch.zeros(self.probe.num_points, dtype=torch.bool)
        return self._capture.written

    def verify(self, run_pass: Callable[[Probe], Captured]) -> bool:
        """Compare up to :data:`VERIFY_POINTS` points read from the loop with a probe pass over them.

        Args:
            run_pass (Callable[[Probe], Captured]): the probe pass (``Pipeline.capture`` with the
                caller's device and precision handling) over a sub-probe.

        Returns:
            bool: whether they match; if not, :attr:`broken` says which layer differs and the stream stops.
        """
        written = self.written.nonzero().flatten()[:VERIFY_POINTS]
        if self.verified or written.numel() == 0 or self._capture is None:
            return self.verified
        acts = self._capture.activations(partial=True)
        reference = run_pass(self.probe.take(written))
        if list(acts) != reference.names[1:]:
            self.broken = f"the loop ran the layers as {list(acts)}, the probe pass as {reference.names[1:]}"
        else:
            for (name, got), want in zip(acts.items(), reference.layers[1:]):
                got = got.index_select(0, written.to(got.device))
                half = self._capture.dtypes.get(name) in (torch.float16, torch.bfloat16)
                error = _relative_error(got, want.to(got.device))
                if error > (VERIFY_RTOL_HALF if half else VERIFY_RTOL):
                    self.broken = (
                        f"layer {name!r} in the validation loop differs from the probe pass by {error:.2g} (relative), "
                        "so the validation step does not run the model as the probe pass does"
                    )
                    break
        self.verified = self.broken is None
        return self.verified

    def result(self, run_pass: Callable[[Probe], Captured]) -> Captured:
        """The probe's layers: those read from the loop, the missing points from a probe pass over them.

        Raises:
            CaptureError: the probe pass failed (the stream itself never raises here).
        """
        assert self._capture is not None and self.broken is None
        written = self.written
        missing = (~written).nonzero().flatten()
        if written.any():
            acts = dict(self._capture.activations(partial=True))
            reductions = dict(self._capture.reductions)
        else:
            acts, reductions = {}, {}
        if missing.numel():
            filled = run_pass(self.probe.take(missing))
            if not acts:
                acts = {
                    name: layer.new_empty((self.probe.num_points, layer.shape[1]))
                    for name, layer in zip(filled.names[1:], filled.layers[1:])
                }
                reductions = {name: filled.reductions[name] for name in filled.names[1:]}
            for buffer, layer in zip(acts.values(), filled.layers[1:]):
                buffer.index_copy_(0, missing.to(buffer.device), layer.to(buffer.device, buffer.dtype))
        return self.pipeline.assemble(self.inputs, self.input_reduction, acts, reductions, self.probe.labels)

"""How :class:`~lightning_ricci.RicciFlowMonitor` reaches the trainer: its data, its device and precision,
and its validation loop.

* :func:`probe_from_trainer`: the default probe, a seeded sample of the first validation (or test)
  dataloader's dataset, collated by that loader's ``collate_fn``.
* :func:`runner`: how a probe batch reaches the model as a validation batch does: the LightningModule's
  (or datamodule's) batch-transfer hooks (default probe) or a plain move to the device (``probe=``),
  the precision plugin's input conversion and its forward context.
* :func:`shared_group`: the process group that shares ``ricci_flow`` between DDP ranks, if any.
* :func:`open_stream`: a :class:`~lightning_ricci.stream.ProbeStream` that reads the probe's activations
  from the validation loop itself, where that loop visits the probe's dataset in order, on one process,
  with an eagerly running model; else None (the monitor then runs a probe pass).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import default_collate

from lightning_ricci.pipeline import Captured, Pipeline
from lightning_ricci.probes import Probe, probe_from_dataset
from lightning_ricci.stream import ProbeStream, in_order_batch_size, loop_plan

__all__ = [
    "TRANSFER_HOOKS",
    "LoopSource",
    "first_loader",
    "visited_items",
    "is_compiled",
    "open_stream",
    "probe_from_trainer",
    "runner",
    "shared_group",
]

#: The LightningModule / datamodule hooks a validation batch goes through before the step.
TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def first_loader(trainer: Trainer, stage: str) -> Any:
    """The first validation (``stage="test"``: test) dataloader of the trainer, or None."""
    loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
    if isinstance(loaders, Mapping):
        loaders = next(iter(loaders.values()), None)
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    return loaders


def probe_from_trainer(
    trainer: Trainer,
    stage: str,
    num_samples: int,
    seed: int,
    indices: list[int] | None,
    options: dict[str, Any],
) -> tuple[Probe, list[int], Any]:
    """The default probe, its dataset indices and the dataset it was drawn from.

    Raises:
        ValueError: the trainer has no such dataloader with a ``dataset`` (the message says to pass
            ``probe=``), or the restored ``indices`` do not fit the dataset.
    """
    loader = first_loader(trainer, stage)
    dataset = getattr(loader, "dataset", None)
    where = "test" if stage == "test" else "validation"
    if dataset is None:
        raise ValueError(
            f"RicciFlowMonitor(probe=None) samples the {where} dataloader's dataset, but the trainer has "
            f"no {where} dataloader with a `dataset`; pass `probe=` explicitly"
        )
    collate = getattr(loader, "collate_fn", None) or default_collate
    among = visited_items(trainer, stage, loader)
    probe, chosen = probe_from_dataset(
        dataset, collate, num_samples, seed, indices, among, **options, argument=f"the {where} batch"
    )
    return probe, chosen, dataset


def visited_items(trainer: Trainer, stage: str, loader: Any) -> int | None:
    """How many items of its dataset, from the start, a loop limited by ``limit_val_batches`` (or
    ``limit_test_batches``) visits, for a loader that visits them in order; else None."""
    batch_size = in_order_batch_size(loader)
    if batch_size is None:
        return None
    limit = trainer.limit_test_batches if stage == "test" else trainer.limit_val_batches
    try:
        length, size = len(loader), len(loader.dataset)
    except TypeError:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        return None
    count = min(length, limit) if isinstance(limit, int) else int(length * limit)
    return min(size, int(count) * batch_size)


def runner(trainer: Trainer, pl_module: LightningModule, stage: str, given: bool) -> dict[str, Any]:
    """``prepare`` / ``convert`` / ``context`` for :meth:`Pipeline.capture` (see the module docstring)."""
    plugin = trainer.precision_plugin
    datamodule = getattr(trainer, "datamodule", None)
    hooks = []
    for name in TRANSFER_HOOKS:
        owner: Any = datamodule if datamodule is not None and is_overridden(name, datamodule) else pl_module
        hooks.append((name, getattr(owner, name)))

    def transfer(batch: Any) -> Any:
        for name, hook in hooks:
            batch = hook(batch, pl_module.device, 0) if name == "transfer_batch_to_device" else hook(batch, 0)
        return batch

    def move(batch: Any) -> Any:
        return move_data_to_device(batch, pl_module.device)

    context = getattr(plugin, "test_step_context" if stage == "test" else "val_step_context", None)
    return {
        "prepare": move if given else transfer,
        "convert": plugin.convert_input,
        "context": context or plugin.forward_context,
    }


def is_compiled(pl_module: LightningModule) -> bool:
    """Whether the module, or one of its submodules, runs under ``torch.compile``."""
    if getattr(pl_module, "_compiler_ctx", None):
        return True
    optimized = getattr(getattr(torch, "_dynamo", None), "eval_frame", None)
    kind = getattr(optimized, "OptimizedModule", None)
    return kind is not None and any(isinstance(m, kind) for m in pl_module.modules())


def open_stream(
    trainer: Trainer,
    pl_module: LightningModule,
    stage: str,
    pipeline: Pipeline,
    probe: Probe,
    names: list[str],
    indices: list[int] | None,
    dataset: Any,
) -> ProbeStream | None:
    """A stream of the probe from this stage's loop, or None where the loop cannot give it.

    It can where the probe was drawn from the first loader's dataset (``indices`` known, not a graph),
    that loader visits it in order (:func:`~lightning_ricci.stream.loop_plan`), the trainer runs one
    process (a ``DistributedSampler`` splits the data between ranks) and the model runs eagerly (hooks
    under ``torch.compile`` would recompile it).
    """
    loader = first_loader(trainer, stage)
    if (
        indices is None
        or probe.is_graph
        or not names
        or trainer.world_size > 1
        or getattr(loader, "dataset", None) is not dataset
        or is_compiled(pl_module)
    ):
        return None
    plan = loop_plan(loader, indices)
    if not plan:
        return None
    prepare = runner(trainer, pl_module, stage, given=False)["prepare"]
    try:
        reference = pipeline.input_layer(probe, prepare)
    except Exception:  # noqa: BLE001 - the probe pass will meet (and report) the same problem
        return None
    return ProbeStream(pipeline, pl_module, probe, names, plan, reference)


def shared_group(trainer: Trainer, captured: Captured | None) -> Any:
    """The group that shares ``ricci_flow`` between the ranks, or None (global rank 0 computes alone).

    Shared when ``torch.distributed`` runs with more than one rank, every rank captured the probe
    (a collective decision, so that no rank waits in a collective the others skip), and the
    backend can move the captured tensors (gloo: CPU; NCCL: CUDA).
    """
    if trainer.world_size < 2 or not dist.is_available() or not dist.is_initialized():
        return None
    everywhere = trainer.strategy.reduce_boolean_decision(captured is not None, all=True)
    if not everywhere or captured is None:
        return None
    device = captured.layers[0].device.type
    backend = str(dist.get_backend()).lower()
    if (backend, device) not in {("gloo", "cpu"), ("nccl", "cuda")}:
        return None
    return dist.group.WORLD


class LoopSource:
    """The monitor's side of :class:`~lightning_ricci.stream.ProbeStream`: which stream serves a loop,
    hooking it in and out around the loop, and the probe's layers after it.

    A stream is kept across validation runs (it is checked against a probe pass once) and made anew when
    the loader or the probe changes.
    """

    def __init__(self) -> None:
        self.stream: ProbeStream | None = None
        self.active: ProbeStream | None = None
        self._key: tuple[str, int, int] | None = None

    def forget(self) -> None:
        """Drop the stream (a new probe or new layers)."""
        self.end()
        self.stream, self._key = None, None

    def begin(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        stage: str,
        pipeline: Pipeline,
        probe: Probe,
        names: list[str],
        indices: list[int] | None,
        dataset: Any,
    ) -> None:
        """Hook the stream for this stage's loop (made if needed: :func:`open_stream`)."""
        self.end()
        key = (stage, id(first_loader(trainer, stage)), id(probe))
        if self.stream is None or self._key != key:
            self.stream = open_stream(trainer, pl_module, stage, pipeline, probe, names, indices, dataset)
            self._key = key
        if self.stream is not None and self.stream.broken is None:
            self.stream.start()
            self.active = self.stream

    def batch_start(self, batch_idx: int, batch: Any, dataloader_idx: int) -> None:
        if self.active is not None and dataloader_idx == 0:
            self.active.batch_start(batch_idx, batch)

    def batch_end(self, dataloader_idx: int) -> None:
        if self.active is not None and dataloader_idx == 0:
            self.active.batch_end()

    def end(self) -> ProbeStream | None:
        """Unhook the loop (safe to call more than once); the stream that was hooked, if any."""
        stream, self.active = self.active, None
        if stream is not None:
            stream.stop()
        return stream

    def check(
        self, stream: ProbeStream, run_pass: Callable[[Probe], Captured], warn: Callable[[str, str], None]
    ) -> bool:
        """Whether the loop's probe rows can be used (compared with a pass over some, the first time)."""
        ok = stream.broken is None and (stream.verified or stream.verify(run_pass))
        if stream.broken is not None:
            warn(
                "loop",
                f"reading the probe from the validation loop stopped: {stream.broken}; a probe pass measures "
                'instead (pass `capture="pass"` to skip the attempt)',
            )
        return ok and bool(stream.written.any())

    def capture(
        self, probe: Probe, run_pass: Callable[[Probe], Captured], warn: Callable[[str, str], None]
    ) -> tuple[Captured, int, float]:
        """The probe's layers after the loop: read from it where it could (the missing points from a pass
        over them), else from a probe pass; with the points read from the loop and the seconds the
        stream added to the loop.
        """
        stream = self.end()
        if stream is None or not self.check(stream, run_pass, warn):
            return run_pass(probe), 0, 0.0
        written = int(stream.written.sum())
        if written < probe.num_points:
            warn(
                "loop-missing",
                f"{probe.num_points - written} of the {probe.num_points} probe points were not in the validation "
                f"batches that ran (`limit_val_batches`, `drop_last`, or a skipped batch: {stream.last_skip or 'none'}); "
                "they are measured with a probe pass",
            )
        return stream.result(run_pass), written, stream.seconds

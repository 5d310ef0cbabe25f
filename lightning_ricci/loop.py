"""How :class:`~lightning_ricci.RicciFlowMonitor` reaches the trainer: its data, its device and precision,
and its validation loop.

* :func:`probe_from_trainer`: the default probe, a seeded sample of the first validation (or test)
  dataloader's dataset, collated by that loader's ``collate_fn``.
* :func:`runner`: how a probe batch reaches the model as a validation batch does: the LightningModule's
  (or datamodule's) batch-transfer hooks (default probe) or a plain move to the device (``probe=``),
  the precision plugin's input conversion and its forward context.
* :func:`open_stream`: a :class:`~lightning_ricci.stream.ProbeStream` that reads the probe's activations
  from the validation loop itself, where that loop visits the probe's dataset in order, on one process,
  with an eagerly running model; else None (the monitor then runs a probe pass).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import default_collate

from lightning_ricci.pipeline import Pipeline
from lightning_ricci.probes import Probe, probe_from_dataset
from lightning_ricci.stream import ProbeStream, loop_plan

__all__ = ["TRANSFER_HOOKS", "first_loader", "is_compiled", "open_stream", "probe_from_trainer", "runner"]

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
    probe, chosen = probe_from_dataset(
        dataset, collate, num_samples, seed, indices, **options, argument=f"the {where} batch"
    )
    return probe, chosen, dataset


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
    return ProbeStream(pipeline, pl_module, probe, names, plan, pipeline.input_layer(probe, prepare))

"""``RicciFlowMonitor``: measure the Ricci flow of a model's layers while it trains.

Shape symbols: N probe points, L layers (the probe input included), D_l features of layer l.

At every validation run (and ``trainer.test()``) the callback passes a fixed probe set through the model
once and logs the result with ``pl_module.log``, so it reaches every logger, ``trainer.callback_metrics``,
``EarlyStopping`` and ``ModelCheckpoint``. The measurement itself (probe, layers, reductions,
``ricci_flow``, scalars) is :mod:`lightning_ricci.pipeline`, the one path that
:func:`~lightning_ricci.analyze` and the command line use too; this module holds only the Lightning
parts: probe sampling from the validation data, the rank-0 compute and broadcast, logging, figures and
histograms through :mod:`lightning_ricci.sinks`, history and checkpoint state.

Example:

.. code-block:: python

    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning_ricci import RicciFlowMonitor

    trainer = Trainer(callbacks=[
        RicciFlowMonitor(),  # the probe's labels give the ricci/class/* keys
        EarlyStopping(monitor="ricci/class/modularity", mode="max", min_delta=0.01, patience=5),
    ])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import WarningCache  # type: ignore[attr-defined]
from typing_extensions import override

from lightning_ricci.capture import ActivationCapture, CaptureError
from lightning_ricci.carry import Carry, carried_message, monitored_modes
from lightning_ricci.geometry.knn import KnnBackend
from lightning_ricci.geometry.result import Convention, CurvatureKind, RicciFlowResult, RicciFlowScan
from lightning_ricci.layers import DEFAULT_MAX_LAYERS
from lightning_ricci.loop import TRANSFER_HOOKS, LoopSource, probe_from_trainer, runner, shared_group
from lightning_ricci.pipeline import Captured, LayerSpec, Pipeline, default_k
from lightning_ricci.probes import ForwardFn, Probe, make_probe
from lightning_ricci.reduce import Reduce
from lightning_ricci.scalars import (
    Measurement,
    excluded_message,
    expected_keys,
    first_result,
    history_entry,
)
from lightning_ricci.scalars import payload as make_payload
from lightning_ricci.sinks import log_flow_figure, log_result_histograms, logged_step

__all__ = ["RicciFlowMonitor", "default_k", "figure_due"]

#: Measurements projected (or last seen) to take longer than this announce themselves while they run.
PROGRESS_SECONDS = 1.0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def figure_due(index: int, log_figures: int, fitting: bool) -> bool:
    """Whether measurement ``index`` (0-based, of this fit) gets the flow figure.

    The first and every ``log_figures``-th after it; outside fit (``trainer.validate``/``test``) every
    measurement is the last, so always; ``log_figures=0``: never. The last measurement of a fit gets
    its figure at the end of training if this skipped it.

    >>> [i for i in range(12) if figure_due(i, 5, True)], figure_due(3, 5, False), figure_due(0, 0, True)
    ([0, 5, 10], True, False)
    """
    if log_figures <= 0:
        return False
    return not fitting or index % log_figures == 0


class RicciFlowMonitor(Callback):
    r"""Log the Ricci-flow diagnostics of a model's layers at every validation run.

    **Probe.** A fixed set of N points: by default a seeded sample of ``num_samples`` items of the first
    validation dataloader's dataset (first among the items a ``limit_val_batches`` loop visits, where the
    loader visits them in order), drawn once (indices saved in checkpoints), collated by that
    loader's ``collate_fn`` and passed through the LightningModule's (or datamodule's) batch-transfer
    hooks as a validation batch is. Tensor, tuple ``(x, y)`` and dict batches (``input_key`` /
    ``label_key``, or ``batch_to_input``) work; a graph dataset (PyG ``Data``) gives a graph probe: the
    forward runs once on the whole graph and the probe points are its ``node_mask`` nodes
    (``val_mask`` by default, at most ``num_samples``). ``probe=`` gives the probe directly, used as
    given (the transfer hooks are not applied; a warning says so where the model overrides them).
    Labels of the probe (the dataset's, a ``(x, y)`` probe's, ``label_key``, a graph's ``y``) go to
    ``ricci_flow(labels=...)``, which adds the class-structure keys.

    **Layers and reductions** follow :mod:`lightning_ricci.capture`: by default the block outputs of
    residual and transformer models (with the head), else the activation modules in forward order (the
    papers' MLPs, unchanged), else the children that run (functional activations); at most
    ``max_layers``. Each output is reduced to [N, D_l] (``reduce="auto"``: flattened up to 4096 values per
    sample, else pooled). The layers, the rule and the reductions are printed at the first measurement
    and stored in :attr:`reductions` and every history entry.

    **Reading the probe from the validation loop** (``capture="auto"``). Where the validation loader
    visits its dataset in order (not shuffled), on one process, with an eager model, the default probe's
    activations are kept from the validation steps themselves (:mod:`lightning_ricci.stream`): no
    separate probe forward, which on a conv net or transformer costs more than the geometry. The loop's
    inputs are checked against the probe at every batch and its layers once against a probe pass over up
    to 64 points (at the sanity check); points the loop did not reach (``limit_val_batches``) come from a
    pass over them. Otherwise, and with ``capture="pass"``, ``probe=``, graphs, DDP or ``torch.compile``,
    one probe pass runs in ``on_validation_epoch_end``. ``history[i]["from_loop"]`` counts the points read
    from the loop.

    **Cost.** Before the first measurement the projected activation memory and time are checked
    against :data:`~lightning_ricci.pipeline.ACTIVATION_BUDGET_MB` and
    :data:`~lightning_ricci.pipeline.TIME_BUDGET_S`; above them, one warning gives the numbers and the
    knobs. A measurement that takes more than about a second prints a line when it starts.

    Logged at each measurement (``P`` is ``log_prefix``), through ``pl_module.log`` in
    ``on_validation_epoch_end`` / ``on_test_epoch_end``: the keys of :func:`~lightning_ricci.scalars.scalars`
    (``P ricci/coefficient``, ``P ricci/local_mean``, ``P ricci/local_negative_share``,
    ``P ricci/critical_layer``, ``P ricci/curvature/{layer}``, ``P ricci/geodesic_sum/{layer}``, and with
    labels ``P ricci/class/{modularity,normalized_cut,mixing,curvature_gap}`` of the last layer and
    ``P ricci/class/{field}/{layer}``; with ``k=[...]`` ``P ricci/k/{k}/coefficient``, ``P ricci/k/spread``,
    ``P ricci/k/sign_agreement``), plus the flags ``P ricci/excluded`` (1: the paper's coefficient
    is undefined and the connected-pairs value stands in), ``P ricci/failed`` (1: the measurement raised;
    warned once) and ``P ricci/carried`` (1: some value of this measurement was undefined or failed and
    was replaced).

    **Failures and undefined values never win** (:mod:`lightning_ricci.carry`). No logged value is NaN or
    Inf: an undefined or failed value is replaced by the last valid one of its key, before any by the
    worst value of its range for the ``mode`` of the ``EarlyStopping`` / ``ModelCheckpoint`` watching it
    (else its natural direction), and such an ``EarlyStopping`` has its patience held for that check.

    **Early stopping.** With labels in the probe, the rule the study supports (README, ``docs/studies``):
    ``EarlyStopping(monitor="ricci/class/modularity", mode="max", min_delta=0.01, patience=5)``: 3 to 10
    epochs saved at <= 0.1 pp test accuracy on 4 of 5 data sets, but -9.2 pp on four_discs, where accuracy
    keeps rising after the class structure stalls. No key matched validation loss on every data set.

    **Extras** (:mod:`lightning_ricci.sinks`: TensorBoard, W&B, MLflow), at the step of the measurement's
    scalars: histograms ``P ricci/union_edge_curvature/{layer}`` (the ``curvature=`` kind of every union
    edge) and ``P ricci/local_coefficients``; the figure ``P ricci/flow`` on the schedule of
    ``log_figures`` (:func:`figure_due`), and for the last measurement at the end of training.

    Args:
        probe (Any, optional): the probe (tensor, ``(x, y)``, dict batch or graph). Default: None.
        layers (Sequence[str] | type | tuple[type, ...] | Callable, optional): module names
            (``"name:i"``: the i-th call; ``"name[0]"`` / ``"name[key]"``: an element of a tuple/dict output),
            classes or a predicate ``(name, module) -> bool``. Default: None (the default rules).
        k (int | Sequence[int], optional): neighbours per point. A list (``k=[10, 30, 50]``: non-empty,
            distinct ints >= 1) scans k in one ``ricci_flow`` call: the first k's result is logged under
            the usual keys, plus ``ricci/k/{k}/coefficient`` per k, ``ricci/k/spread`` and
            ``ricci/k/sign_agreement`` (carried and flagged like the others). Default: None
            (:func:`default_k` of N: 50 at N = 1000).
        convention (str, optional): ``"baptista"`` or ``"hehl"``. Default: ``"baptista"``.
        curvature (str, optional): edge curvature of the local and layer coefficients. Default: ``"forman"``.
        num_samples (int, optional): size of the default probe. Default: 1000.
        seed (int, optional): seed of the default probe sample. Default: 0.
        every_n_epochs (int, optional): measure in epochs where ``(epoch + 1) % every_n_epochs == 0``
            (values above 1 leave stale values that ``EarlyStopping`` counts; prefer
            ``Trainer(check_val_every_n_epoch=n)``). Default: 1.
        run_on_sanity_check (bool, optional): also measure during the sanity check. The probe is built
            and the layers resolved (and checked to run) then either way. Default: False.
        strict (bool, optional): re-raise failures (capture errors, geometry exceptions) instead of
            flagging them. Default: False.
        log_prefix (str, optional): prepended to every key; tells two monitors apart. Default: ``""``.
        batch_size (int, optional): probe points per forward pass. Default: None (chosen from the
            largest module output: 256 for MLPs, fewer for wide conv maps; see the pipeline).
        log_histograms (bool, optional): write the histograms. Default: True.
        log_figures (bool | int, optional): figure schedule (``True``: every measurement). Default: 10.
        knn_backend (str, optional): passed to ``ricci_flow``. Default: ``"auto"``.
        reduce (str | Callable | Mapping, optional): per-layer reduction. Default: ``"auto"``.
        max_layers (int, optional): cap on the default layers. Default: 12.
        input_key (str, optional): dict batches: the model input's key. Default: None (``"x"``, ...).
        label_key (str, optional): dict batches: the labels' key. Default: None (``"y"``, ...).
        batch_to_input (Callable, optional): batch -> model input. Default: None.
        forward_fn (Callable, optional): ``forward_fn(model, inputs) -> output`` for any forward
            signature. Default: None (:func:`~lightning_ricci.probes.default_forward`).
        node_mask (str, optional): graph probes: the boolean node attribute of probe nodes.
            Default: ``"val_mask"``.
        capture (str, optional): ``"auto"``: read the probe from the validation loop where it can (see
            above), else a probe pass; ``"pass"``: always a probe pass. Default: ``"auto"``.

    Attributes:
        last_result (RicciFlowResult | None): the latest result (with ``k=[...]`` the first k's); under
            distributed training on every rank that shared the computation, else on global rank 0 only.
        last_scan (RicciFlowScan | None): with ``k=[...]``, the latest scan (same ranks).
        layer_names (list[str]): the L layer names, ``"input"`` first.
        reductions (dict[str, str]): layer name -> reduction applied.
        layer_rule (str): ``"blocks"``, ``"activations"``, ``"children"``, ``"names"`` or ``"selected"``.
        history (list[dict]): one entry per measurement outside the sanity check
            (:func:`~lightning_ricci.scalars.history_entry`: ``epoch``, ``global_step``, ``stage``, the
            coefficients as logged and as computed, flags, per-layer values, ``reductions``, ``seconds``:
            the monitor's own time), plus ``from_loop``, the probe points read from the validation loop.
            Saved in checkpoints.
        probe_indices (list[int] | None): dataset indices (graph: node indices) of the default probe,
            saved in checkpoints so that a resumed run measures the same points.
        critical_layer (int | None): at the end of fit, the critical transition of the last measurement.

    ``trainer.test()`` measures too (history ``stage="test"``), on the monitor's probe (sampled from the
    test data if no validation run built one). A model without a validation loop gets one warning that
    the monitor will never measure during fit.

    Distributed training: the probe pass runs on every rank (under FSDP and DeepSpeed ZeRO-3 the forward
    is a collective; a forward that raises is re-raised, the one fatal case), ``ricci_flow`` shares its
    work between the ranks (``process_group=WORLD``, gloo on the CPU, NCCL on CUDA; else rank 0 computes
    alone), and rank 0's numbers are logged on every rank, so ``EarlyStopping`` stops all ranks together.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument with a bad value (the message names it and what was received).

    >>> monitor = RicciFlowMonitor(k=10, convention="hehl", log_prefix="probe_a/")
    >>> monitor.state_key
    "RicciFlowMonitor{'log_prefix': 'probe_a/'}"
    """

    def __init__(
        self,
        probe: Any = None,
        layers: LayerSpec = None,
        k: int | Sequence[int] | None = None,
        *,
        convention: Convention = "baptista",
        curvature: CurvatureKind = "forman",
        num_samples: int = 1000,
        seed: int = 0,
        every_n_epochs: int = 1,
        run_on_sanity_check: bool = False,
        strict: bool = False,
        log_prefix: str = "",
        batch_size: int | None = None,
        log_histograms: bool = True,
        log_figures: bool | int = 10,
        knn_backend: KnnBackend = "auto",
        reduce: Reduce | Mapping[str, Reduce] = "auto",
        max_layers: int = DEFAULT_MAX_LAYERS,
        input_key: str | None = None,
        label_key: str | None = None,
        batch_to_input: Callable[[Any], Any] | None = None,
        forward_fn: ForwardFn | None = None,
        node_mask: str | None = "val_mask",
        capture: Literal["auto", "pass"] = "auto",
    ) -> None:
        super().__init__()
        self.pipeline = Pipeline(
            layers,
            k,
            convention=convention,
            curvature=curvature,
            knn_backend=knn_backend,
            reduce=reduce,
            max_layers=max_layers,
            batch_size=batch_size,
            forward_fn=forward_fn,
        )
        for name, value, low in (("num_samples", num_samples, 3), ("every_n_epochs", every_n_epochs, 1)):
            if not _is_int(value) or value < low:
                raise ValueError(f"`{name}` must be an int >= {low} (got {value!r})")
        if not isinstance(log_figures, (bool, int)) or log_figures < 0:
            raise ValueError(f"`log_figures` must be a bool or an int >= 0 (got {log_figures!r})")
        if not _is_int(seed):
            raise TypeError(f"`seed` must be an int (got {type(seed).__name__})")
        if not isinstance(log_prefix, str):
            raise TypeError(f"`log_prefix` must be a str (got {type(log_prefix).__name__})")
        if capture not in ("auto", "pass"):
            raise ValueError(f"`capture` must be 'auto' or 'pass' (got {capture!r})")
        if batch_to_input is not None and not callable(batch_to_input):
            raise TypeError(f"`batch_to_input` must be callable (got {type(batch_to_input).__name__})")
        self._probe_options: dict[str, Any] = {
            "input_key": input_key,
            "label_key": label_key,
            "batch_to_input": batch_to_input,
            "node_mask": node_mask,
        }
        self._probe: Probe | None = None
        self._probe_given = probe is not None
        if probe is not None:
            self._probe = make_probe(probe, **self._probe_options)
        points = self._probe.num_points if self._probe is not None else None
        if points is not None:
            self.pipeline.check_points(points, "the number of probe points")
        else:
            self.pipeline.check_points(num_samples, "`num_samples`")

        self.k, self.convention, self.curvature, self.knn_backend = (
            self.pipeline.k,
            convention,
            curvature,
            knn_backend,
        )
        self.num_samples, self.seed, self.every_n_epochs = num_samples, seed, every_n_epochs
        self.run_on_sanity_check, self.strict, self.log_prefix = run_on_sanity_check, strict, log_prefix
        self.batch_size, self.log_histograms = batch_size, log_histograms
        self.log_figures = int(log_figures)  # measurements between figures; 0: none

        self.last_result: RicciFlowResult | None = None
        self.last_scan: RicciFlowScan | None = None
        self.layer_names: list[str] = []
        self.reductions: dict[str, str] = {}
        self.layer_rule = ""
        self.history: list[dict[str, Any]] = []
        self.probe_indices: list[int] | None = None
        self.critical_layer: int | None = None
        self._module_layers: list[str] | None = None
        self._dims: list[int] = []
        self.capture = capture
        self._probe_dataset: Any = None
        self._loop = LoopSource()  # reads the probe from the validation loop where it can
        self._from_loop, self._loop_seconds = 0, 0.0
        self._carry = Carry()
        self._announce = False
        self._described = False
        self._unplotted_step: int | None = None
        self._fit_measurements = 0
        self._warnings = WarningCache()

    # ------------------------------------------------------------------ configuration

    @property
    def state_key(self) -> str:
        return self._generate_state_key(log_prefix=self.log_prefix)

    def _key(self, name: str) -> str:
        return f"{self.log_prefix}{name}"

    @property
    def _name(self) -> str:
        return f"RicciFlowMonitor(log_prefix={self.log_prefix!r})" if self.log_prefix else "RicciFlowMonitor"

    @property
    def probe(self) -> Any:
        """The probe's model input (a tensor [N, ...]; the graph of a graph probe), None until built."""
        if self._probe is None:
            return None
        batch = self._probe.batch
        return batch if self._probe.is_graph else self._probe.model_input(batch)

    def _warn(self, key: str, message: str) -> None:
        self._warnings.warn(f"{self._name}: {message}")

    # ------------------------------------------------------------------ lifecycle

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Forget the layers resolved for a previous model; they are resolved again for this run."""
        self._module_layers = None

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the configuration against the model and the trainer."""
        if isinstance(self.pipeline.layers, list):
            ActivationCapture(
                pl_module, self.pipeline.layers
            )  # raises for unknown names, listing the ones that exist
        if trainer.limit_val_batches == 0 or not is_overridden("validation_step", pl_module):
            self._warn(
                "no-val",
                "the model has no validation loop (no `validation_step`, or `limit_val_batches=0`): the monitor "
                "measures at validation runs and will never measure during this fit",
            )
        if self.every_n_epochs > 1:
            for cb in trainer.callbacks:  # type: ignore[attr-defined]
                if isinstance(cb, EarlyStopping) and cb.monitor.startswith(f"{self.log_prefix}ricci/"):
                    self._warn(
                        "stale",
                        f"every_n_epochs={self.every_n_epochs} leaves a stale {cb.monitor!r} in the epochs it "
                        "skips, and EarlyStopping counts those against its patience (with `strict=True` it raises "
                        "at the first skipped epoch). Use `Trainer(check_val_every_n_epoch=n)` instead.",
                    )
        self._fit_measurements = 0

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Build the probe and resolve the layers (first time); hook the loop where it can give the probe."""
        self._carry.release()  # a held check that did not run: give the patience back
        self._begin(trainer, pl_module, "validate")

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._begin(trainer, pl_module, "test")

    @override
    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._loop.batch_start(batch_idx, batch, dataloader_idx)

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._loop.batch_end(dataloader_idx)

    on_test_batch_start = on_validation_batch_start
    on_test_batch_end = on_validation_batch_end

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Measure on the probe set and log (see the class docstring)."""
        self._run(trainer, pl_module, "validate")

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Measure in ``trainer.test()`` as well."""
        self._run(trainer, pl_module, "test")

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Remove the loop's hooks if the loop raised."""
        self._loop.end()

    def _due(self, trainer: Trainer) -> bool:
        if trainer.sanity_checking:
            return self.run_on_sanity_check
        fitting = trainer.state.fn == TrainerFn.FITTING
        return not fitting or (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _begin(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._loop.end()
        self._prepare(trainer, pl_module, stage)
        if self.capture == "auto" and (self._due(trainer) or trainer.sanity_checking):
            assert self._probe is not None and self._module_layers is not None
            names = self._module_layers if self._dims else []  # layers that failed at setup: no stream
            self._loop.begin(
                trainer,
                pl_module,
                stage,
                self.pipeline,
                self._probe,
                names,
                self.probe_indices,
                self._probe_dataset,
            )

    def _run(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._probe is None or self._module_layers is None:
            self._prepare(trainer, pl_module, stage)
        if not self._due(trainer):
            stream = self._loop.end()
            if stream is not None and trainer.sanity_checking:  # check the loop against a pass, cheaply
                try:
                    self._loop.check(stream, self._pass(trainer, pl_module, stage), self._warn)
                except CaptureError:
                    pass  # the pass itself fails: the first measurement flags it
            return
        self._measure(trainer, pl_module, stage)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the figure of the last measurement if its schedule skipped it (loggers are still open)."""
        if self._unplotted_step is not None and self.last_result is not None and trainer.is_global_zero:
            self._log_figure(trainer, self.last_result, self._unplotted_step)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record the critical layer of the last measurement; report what the measurements cost."""
        if not self.history:
            return
        seconds = [float(e["seconds"]) for e in self.history if "seconds" in e]
        if seconds and self._probe is not None:
            looped = sum(1 for e in self.history if e.get("from_loop"))
            how = f"{looped} read the probe from the validation loop" if looped else "each with a probe pass"
            rank_zero_info(
                f"{self._name}: {len(seconds)} measurements of {self._probe.num_points} probe points took "
                f"{sum(seconds) / len(seconds):.3f} s each on average ({how}; the geometry included)"
            )
        entry = self.history[-1]
        self.critical_layer = int(entry["critical_layer"])
        if self.critical_layer >= 0 and len(self.layer_names) > self.critical_layer + 1:
            t = self.critical_layer
            rank_zero_info(
                f"{self._name}: critical layer at the end of fit: transition {t} "
                f"({self.layer_names[t]} -> {self.layer_names[t + 1]}), layer coefficient {entry['layer'][t]:.4f}"
            )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [dict(entry) for entry in self.history],
            "probe_indices": None if self.probe_indices is None else list(self.probe_indices),
            "critical_layer": self.critical_layer,
            **self._carry.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(entry) for entry in state_dict.get("history", [])]
        indices = state_dict.get("probe_indices")
        self.probe_indices = None if indices is None else [int(i) for i in indices]
        self.critical_layer = state_dict.get("critical_layer")
        self._carry.load_state_dict(state_dict)
        if not self._probe_given:
            self._probe = None  # rebuilt from the restored indices at the next validation run

    # ------------------------------------------------------------------ probe and layers

    def _prepare(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._probe is None:
            self._probe, self.probe_indices, self._probe_dataset = probe_from_trainer(
                trainer, stage, self.num_samples, self.seed, self.probe_indices, self._probe_options
            )
            self._loop.forget()
        points = self._probe.num_points
        self.pipeline.check_points(points, "the number of probe points")
        if self._module_layers is not None:
            return
        if self._probe_given and any(is_overridden(name, pl_module) for name in TRANSFER_HOOKS):
            self._warn(
                "given-probe",
                "`probe=` is used as given: the LightningModule's batch-transfer hooks are not applied to it "
                "(the default probe, sampled from the validation data, goes through them)",
            )
        setup = self.pipeline.setup(
            pl_module,
            self._probe,
            lenient=not self.strict,
            **runner(trainer, pl_module, stage, self._probe_given),
        )
        for key, message in setup.warnings:
            self._warn(key, message)
        self._module_layers, self._dims, self.layer_names = setup.names, setup.dims, setup.layer_names
        self.layer_rule = self.pipeline.rule or ""
        self._announce = setup.cost is not None and setup.cost.seconds > PROGRESS_SECONDS
        self._loop.forget()

    # ------------------------------------------------------------------ measurement

    def _measure(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        assert self._probe is not None and self._module_layers is not None
        start = time.perf_counter()
        if self._announce and trainer.is_global_zero and not trainer.sanity_checking:
            rank_zero_info(
                f"{self._name}: measuring {self._probe.num_points} probe points on {len(self.layer_names)} layers "
                f"(epoch {trainer.current_epoch}) ..."
            )
        captured = None
        error: BaseException | None = None
        try:  # every rank: the forward may be a collective
            captured, self._from_loop, self._loop_seconds = self._loop.capture(
                self._probe, self._pass(trainer, pl_module, stage), self._warn
            )
        except CaptureError as err:
            error = err
        payload: dict[str, Any] | None = None
        result: Measurement | None = None
        group = shared_group(trainer, captured)
        if captured is not None and (group is not None or trainer.is_global_zero):
            try:
                result = self.pipeline.compute(captured, warn=self._warn, process_group=group)
            except Exception as err:  # noqa: BLE001 - the geometry must not stop training unless strict
                error = err
        if result is not None:
            self.last_result = first_result(result)
            self.last_scan = result if isinstance(result, RicciFlowScan) else None
        if trainer.is_global_zero:
            payload = make_payload(result, captured, self.layer_names, error)
            payload["seconds"] = time.perf_counter() - start + self._loop_seconds
        payload = trainer.strategy.broadcast(payload, src=0)
        assert payload is not None
        if payload["error"] is not None:
            if self.strict:
                if error is not None:
                    raise error
                raise RuntimeError(f"RicciFlowMonitor: the measurement failed on rank 0: {payload['error']}")
            self._warn(
                "failed",
                f"a measurement failed ({payload['error']}); its values are carried forward from the last valid "
                f"measurement with {self._key('ricci/failed')} = 1, and training continues. Pass strict=True to "
                "raise instead. Reported once.",
            )
        self._log(trainer, pl_module, payload, stage)
        self._announce = self._announce or payload["seconds"] > PROGRESS_SECONDS

    def _pass(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> Callable[[Probe], Captured]:
        """The probe pass over a (sub-)probe, with the trainer's device and precision handling."""
        how = runner(trainer, pl_module, stage, self._probe_given)
        assert self._module_layers is not None
        names = self._module_layers
        return lambda probe: self.pipeline.capture(pl_module, probe, names, **how)

    def _log(self, trainer: Trainer, pl_module: LightningModule, payload: dict[str, Any], stage: str) -> None:
        values: dict[str, float] = payload["values"]
        failed = payload["error"] is not None
        labels = self._probe.labels if self._probe is not None else None
        logged, carried = self._carry.settle(
            values,
            expected_keys(self.layer_names, labels is not None, self._ks()),
            monitored_modes(trainer.callbacks, self.log_prefix),  # type: ignore[attr-defined]
            int(torch.unique(labels).numel()) if labels is not None else None,
            failed,
        )
        if carried and not failed:
            self._warn("carried", carried_message(carried, self._key("ricci/carried")))
        elif values.get("ricci/excluded") == 1.0:
            self._warn("excluded", excluded_message(self.convention, self._key("ricci/excluded")))
        sync = trainer.world_size > 1
        for key, value in logged.items():
            # Every rank holds the same broadcast numbers; "max" over equal values is exact and keeps
            # Lightning from warning about unsynced epoch-level metrics.
            pl_module.log(
                self._key(key),
                float(value),
                on_step=False,
                on_epoch=True,
                batch_size=1,
                sync_dist=sync,
                reduce_fx="max",
            )
        if trainer.sanity_checking:
            return
        self._carry.commit(values, logged)
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting and carried:  # EarlyStopping on a carried key: its coming check must not count this one
            self._carry.hold(trainer.callbacks, {self._key(k) for k in carried})  # type: ignore[attr-defined]
        step = logged_step(trainer)
        self.reductions = dict(payload["reductions"]) or self.reductions
        where = {"epoch": int(trainer.current_epoch), "global_step": step, "stage": stage}
        self.history.append(history_entry(payload, logged, carried, self.layer_names, **where))
        self.history[-1]["from_loop"] = self._from_loop
        if not failed and not self._described and payload.get("dims"):
            self._described = True
            rank_zero_info(
                f"{self._name}: {self.pipeline.describe(payload['dims'], self.layer_names, payload['reductions'])}"
            )
        if not failed and trainer.is_global_zero and self.last_result is not None:
            self._log_extras(trainer, self.last_result, step, fitting)
        if fitting:
            self._fit_measurements += 1

    def _ks(self) -> list[int] | None:
        return self.pipeline.k if isinstance(self.pipeline.k, list) else None

    # ------------------------------------------------------------------ histograms and figures

    def _log_extras(self, trainer: Trainer, result: RicciFlowResult, step: int, fitting: bool) -> None:
        if self.log_histograms:
            log_result_histograms(trainer.loggers, result, self.layer_names, self.log_prefix, step)
        if figure_due(self._fit_measurements, self.log_figures, fitting):
            self._log_figure(trainer, result, step)
        elif self.log_figures:
            self._unplotted_step = step

    def _log_figure(self, trainer: Trainer, result: RicciFlowResult, step: int) -> None:
        self._unplotted_step = None
        try:
            log_flow_figure(trainer.loggers, result, self.layer_names, self._key("ricci/flow"), step)
        except ModuleNotFoundError as err:
            self.log_figures = 0
            self._warn("plots", f"figures disabled: {err}")

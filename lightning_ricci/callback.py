"""``RicciFlowMonitor``: measure the Ricci flow of a classifier's layers while it trains.

Shape symbols: N probe points, L layers (the probe input included), D_l features of layer l.

At every validation run the callback passes a fixed probe set through the model once, captures the
outputs of the chosen layers with temporary forward hooks (:mod:`lightning_ricci.capture`), calls
:func:`lightning_ricci.ricci_flow` on ``[probe input, layer 1, ..., layer L-1]`` and logs the result
with ``pl_module.log``, so it reaches every logger, ``trainer.callback_metrics``, ``EarlyStopping`` and
``ModelCheckpoint``.

Example:

.. code-block:: python

    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning_ricci import RicciFlowMonitor

    trainer = Trainer(callbacks=[RicciFlowMonitor(),
                                 EarlyStopping(monitor="ricci/coefficient", mode="min", patience=3)])
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import default_collate

# default_k and _eager live in analysis.py (torch only), shared with `analyze`.
from lightning_ricci.analysis import _eager, default_k
from lightning_ricci.capture import (
    ACTIVATION_TYPES,
    ActivationCapture,
    _select,
    candidate_module_names,
    check_layer_spec,
    find_layers,
)
from lightning_ricci.geometry import ricci_flow
from lightning_ricci.geometry._checks import check_choice
from lightning_ricci.geometry.curvature import EDGE_CURVATURES
from lightning_ricci.geometry.flow import CONVENTIONS
from lightning_ricci.geometry.knn import KNN_BACKENDS
from lightning_ricci.geometry.result import Convention, CurvatureKind, RicciFlowResult

__all__ = ["RicciFlowMonitor", "default_k"]

INPUT_LAYER = "input"

# Scratch memory of the retry after a CUDA out-of-memory error (the default is 2 GiB).
_SMALL_CUDA_BUDGET = 1 << 27


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _probe_input(probe: Any, argument: str = "probe") -> Tensor:
    """The model input of a probe: a tensor, or the first element of a tuple/list (labels are ignored)."""
    x = probe[0] if isinstance(probe, (tuple, list)) and len(probe) > 0 else probe
    if isinstance(probe, Mapping):
        raise TypeError(
            f"`{argument}` is a mapping (keys {list(probe)[:8]}); RicciFlowMonitor needs the model input as a "
            "tensor: pass `probe=tensor` or `probe=(inputs, labels)`"
        )
    if not isinstance(x, Tensor):
        raise TypeError(
            f"`{argument}` must be a tensor [N, ...] or a tuple (inputs, labels) whose first element is one "
            f"(got {type(x).__name__})"
        )
    if x.dim() == 0 or x.shape[0] < 3:
        raise ValueError(
            f"`{argument}` must hold at least 3 samples along dim 0 (got shape {tuple(x.shape)})"
        )
    return x


def _input_layer(x: Tensor) -> Tensor:
    x = x.detach()
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype=dtype)
    return x.reshape(x.shape[0], -1)


def _finite(value: float) -> bool:
    return math.isfinite(value)


class RicciFlowMonitor(Callback):
    r"""Log the Ricci-flow coefficient of a model's layers at every validation run.

    The probe set is a fixed set of N inputs. By default it is a seeded sample of ``num_samples`` points
    of the first validation dataloader's dataset, drawn once (indices saved in checkpoints). The layer
    list handed to :func:`~lightning_ricci.ricci_flow` is the probe input (flattened) followed by the
    outputs of the chosen modules in order, flattened per sample by the rule of
    :mod:`lightning_ricci.capture`. By default the chosen modules are the model's activation modules
    (:data:`~lightning_ricci.capture.ACTIVATION_TYPES`: ``nn.ReLU``, ``nn.GELU``, ``nn.Tanh``, ...) in the
    order the forward pass calls them; a module called several times gives one layer per call. With
    ``convention="baptista"`` the coefficient pairs hidden layers only, so it needs at least three
    chosen modules (two give a single pair, and the logged value falls back to 0.0). The probe is moved
    to the model's device and through the precision plugin's ``convert_input``, but not through the
    LightningModule's batch-transfer hooks: pass ``probe=`` already transformed if the model relies on them.

    Logged at each measurement (``P`` is ``log_prefix``), through ``pl_module.log`` in
    ``on_validation_epoch_end``:

    * ``P ricci/coefficient``: the global coefficient of ``convention``; **never NaN or Inf**. Where
      the convention leaves it undefined, the coefficient over pairs connected in both layers
      (``coefficient_connected``) is logged, and where even that is undefined, 0.0. Negative means
      Ricci-flow-like; more negative is stronger, so early-stop with ``mode="min"``.
    * ``P ricci/excluded``: 1.0 when a fallback value was logged, else 0.0.
    * ``P ricci/failed``: 1.0 when the geometry raised (the coefficient is then logged as 0.0).
    * ``P ricci/local_mean`` and ``P ricci/local_negative_share``: mean of the local coefficients
      (Hehl et al.) and the share of negative ones (0.0 where no point has a defined one).
    * ``P ricci/critical_layer``: the transition t (layer t -> t+1) where the layer coefficient is
      lowest, -1 if undefined.
    * ``P ricci/curvature/{layer}`` and ``P ricci/geodesic_sum/{layer}`` for every layer, ``input``
      included.
    * On loggers whose ``experiment`` has ``add_histogram``/``add_figure`` (TensorBoard): histograms
      ``P ricci/edge_curvature/{layer}`` and ``P ricci/local`` at every measurement, and a figure
      ``P ricci/flow`` (curvature and geodesic change across layers; needs
      ``pip install 'lightning-ricci[plots]'``) on the schedule of ``log_figures``, plus one for the
      last measurement when training ends.

    Args:
        probe (Tensor | tuple, optional): the probe inputs [N, ...], or ``(inputs, labels, ...)`` whose
            first element is used. Used as given (``num_samples`` does not apply). Default: None (sample
            the validation dataset).
        layers (Sequence[str] | type | tuple[type, ...] | Callable, optional): module names (wrapper
            prefixes such as ``module.`` or ``_orig_mod.`` may be left out; ``"name:i"`` picks the i-th
            call of a module run several times), or module classes, or a predicate
            ``(name, module) -> bool`` (these two are ordered by the forward pass). Default: None
            (activation modules).
        k (int, optional): neighbours per point. Default: None, meaning :func:`default_k` of N (5 % of
            N, clipped to [5, 50]: 50 for the default 1000 points).
        convention (str, optional): ``"baptista"`` or ``"hehl"``, see :func:`~lightning_ricci.ricci_flow`.
            Default: ``"baptista"``.
        curvature (str, optional): ``"forman"``, ``"augmented_forman"`` or ``"approx_ollivier"`` for the
            local and layer coefficients. Default: ``"forman"``.
        num_samples (int, optional): size of the default probe, capped by the dataset size. Default: 1000.
        seed (int, optional): seed of the default probe sample. Default: 0.
        every_n_epochs (int, optional): measure in epochs where ``(epoch + 1) % every_n_epochs == 0``.
            Values above 1 leave a stale ``ricci/coefficient`` in ``callback_metrics`` in between, which
            ``EarlyStopping`` counts against its patience (and ``EarlyStopping(strict=True)`` raises in the
            first skipped epoch); to measure less often while early-stopping on it, use
            ``Trainer(check_val_every_n_epoch=n)`` instead. Default: 1.
        run_on_sanity_check (bool, optional): also measure during the sanity check (nothing reaches
            the loggers then). The probe is built and the layers are resolved during the sanity check
            either way, so configuration errors show up early. Default: False.
        strict (bool, optional): re-raise exceptions from the geometry instead of warning once and
            logging the coefficient as 0.0 with ``ricci/failed`` = 1. Default: False.
        log_prefix (str, optional): prepended to every key; needed to tell two monitors apart.
            Default: ``""``.
        batch_size (int, optional): probe points per forward pass. Default: 256.
        log_histograms (bool, optional): write edge-curvature histograms where the logger can.
            Default: True.
        log_figures (bool | int, optional): where the logger can, write the flow figure at the first
            measurement and every ``log_figures``-th after it, and for the last measurement when training
            ends; ``True`` means every measurement, ``False`` or 0 never. Rendering a figure costs about
            0.1-0.4 s of CPU time, more than the geometry at the defaults, hence not every time by
            default. Default: 10.
        knn_backend (str, optional): passed to :func:`~lightning_ricci.ricci_flow`. Default: ``"auto"``.

    Attributes:
        last_result (RicciFlowResult | None): the latest result (on global rank 0 only; other ranks get
            the logged numbers, not the tensors).
        layer_names (list[str]): names of the L layers given to ``ricci_flow``, ``"input"`` first.
        history (list[dict]): one entry per measurement outside the sanity check: ``epoch``,
            ``global_step``, ``coefficient`` (as logged), ``coefficient_paper`` (NaN when undefined),
            ``coefficient_connected``, ``excluded``, ``failed``, ``local_mean``, ``local_negative_share``,
            ``critical_layer``, per layer ``curvature``/``geodesic_sum`` dicts, the ``layer`` list, and
            ``seconds`` (wall time of the probe pass and the geometry on rank 0). Saved in checkpoints.
        probe_indices (list[int] | None): the dataset indices of the default probe. Saved in checkpoints
            so that a resumed run measures the same points.
        critical_layer (int | None): at the end of fit, the critical transition of the last measurement.

    Cost: one forward pass over the probe per measurement (in chunks of ``batch_size``) and one
    ``ricci_flow`` call on the model's device (about 0.16 s on a 2-core CPU for N = 1000, six layers,
    k = 50; peak extra memory about 75 MB).
    The captured activations stay on that device: about N x (sum of D_l) x 4 bytes, which for conv
    feature maps can be large; lower ``num_samples`` or choose fewer ``layers`` then.

    Distributed training: the probe forward runs on every rank (under FSDP and DeepSpeed ZeRO-3 the
    forward is a collective, so it must), ``ricci_flow`` runs on global rank 0 only, and the logged numbers
    are broadcast with ``trainer.strategy.broadcast`` and logged on every rank, so ``EarlyStopping``
    stops all ranks at the same epoch. Tested with DDP (``ddp``, ``ddp_spawn``). FSDP and DeepSpeed
    ZeRO-3 take the same path (the forward on every rank gathers the sharded parameters; the hooked
    outputs are whole per-sample activations, so the numbers are the single-device ones), and
    ``_fsdp_wrapped_module.``/``_checkpoint_wrapped_module.`` prefixes are normalised away, but these
    strategies are not covered by the tests. Tensor-parallel layers whose outputs are sharded along
    features are not supported.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument with a bad value (the message names it and what was received).

    >>> monitor = RicciFlowMonitor(k=10, convention="hehl", log_prefix="probe_a/")
    >>> monitor.state_key
    "RicciFlowMonitor{'log_prefix': 'probe_a/'}"
    """

    def __init__(
        self,
        probe: Tensor | Sequence[Any] | None = None,
        layers: Sequence[str]
        | type[nn.Module]
        | tuple[type[nn.Module], ...]
        | Callable[[str, nn.Module], bool]
        | None = None,
        k: int | None = None,
        *,
        convention: Convention = "baptista",
        curvature: CurvatureKind = "forman",
        num_samples: int = 1000,
        seed: int = 0,
        every_n_epochs: int = 1,
        run_on_sanity_check: bool = False,
        strict: bool = False,
        log_prefix: str = "",
        batch_size: int = 256,
        log_histograms: bool = True,
        log_figures: bool | int = 10,
        knn_backend: str = "auto",
    ) -> None:
        super().__init__()
        self._probe_x: Tensor | None = None
        self._probe_given = probe is not None
        if probe is not None:
            self._probe_x = _probe_input(probe)
        self._layer_spec = check_layer_spec(layers)
        if k is not None and (not _is_int(k) or k < 1):
            raise ValueError(f"`k` must be a positive int or None (got {k!r})")
        check_choice("convention", convention, CONVENTIONS)
        check_choice("curvature", curvature, EDGE_CURVATURES)
        check_choice("knn_backend", knn_backend, KNN_BACKENDS)
        for name, value, low in (
            ("num_samples", num_samples, 3),
            ("every_n_epochs", every_n_epochs, 1),
            ("batch_size", batch_size, 1),
        ):
            if not _is_int(value) or value < low:
                raise ValueError(f"`{name}` must be an int >= {low} (got {value!r})")
        if not isinstance(log_figures, (bool, int)) or log_figures < 0:
            raise ValueError(f"`log_figures` must be a bool or an int >= 0 (got {log_figures!r})")
        if not _is_int(seed):
            raise TypeError(f"`seed` must be an int (got {type(seed).__name__})")
        if not isinstance(log_prefix, str):
            raise TypeError(f"`log_prefix` must be a str (got {type(log_prefix).__name__})")
        num_points = self._probe_x.shape[0] if self._probe_x is not None else None
        if k is not None and num_points is not None and k >= num_points:
            raise ValueError(f"`k` must be smaller than the number of probe points {num_points} (got {k})")
        if k is not None and num_points is None and k >= num_samples:
            raise ValueError(f"`k` must be smaller than `num_samples` {num_samples} (got {k})")

        self.k = k
        self.convention: Convention = convention
        self.curvature: CurvatureKind = curvature
        self.num_samples = num_samples
        self.seed = seed
        self.every_n_epochs = every_n_epochs
        self.run_on_sanity_check = run_on_sanity_check
        self.strict = strict
        self.log_prefix = log_prefix
        self.batch_size = batch_size
        self.log_histograms = log_histograms
        self.log_figures = int(log_figures)  # measurements between figures; 0: none
        self._unplotted_step: int | None = None  # global step of a measurement still without a figure
        self.knn_backend = knn_backend

        self.last_result: RicciFlowResult | None = None
        self.layer_names: list[str] = []
        self.history: list[dict[str, Any]] = []
        self.probe_indices: list[int] | None = None
        self.critical_layer: int | None = None
        self._module_layers: list[str] | None = None
        self._capture: ActivationCapture | None = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ configuration

    @property
    def state_key(self) -> str:
        return self._generate_state_key(log_prefix=self.log_prefix)

    def _key(self, name: str) -> str:
        return f"{self.log_prefix}ricci/{name}"

    @property
    def probe(self) -> Tensor | None:
        """The probe inputs [N, ...] on the CPU (None until the first validation run builds them)."""
        return self._probe_x

    # ------------------------------------------------------------------ lifecycle

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Forget the layers resolved for a previous model; they are resolved again for this run."""
        self._module_layers = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the configuration against the model: layer names, activation modules, EarlyStopping."""
        # Two monitors with one `log_prefix` share a `state_key`: the Trainer itself refuses them.
        self._check_model(pl_module)
        if self.every_n_epochs > 1:
            for cb in trainer.callbacks:  # type: ignore[attr-defined]
                if isinstance(cb, EarlyStopping) and cb.monitor.startswith(f"{self.log_prefix}ricci/"):
                    rank_zero_warn(
                        f"RicciFlowMonitor(every_n_epochs={self.every_n_epochs}) leaves a stale {cb.monitor!r} "
                        "in the epochs it skips, and EarlyStopping counts those against its patience (with "
                        "`strict=True` it raises at the first skipped epoch, before any measurement). Use "
                        "`Trainer(check_val_every_n_epoch=n)` with `every_n_epochs=1` instead."
                    )

    def _check_model(self, pl_module: LightningModule) -> None:
        spec = self._layer_spec
        if isinstance(spec, list):
            ActivationCapture(pl_module, spec)  # raises for unknown names, listing the ones that exist
            return
        if spec is None:
            found = _select(pl_module, lambda name, module: isinstance(module, ACTIVATION_TYPES))
        elif isinstance(spec, (type, tuple)):
            found = _select(pl_module, lambda name, module: isinstance(module, spec))
        else:
            found = _select(pl_module, spec)
        if not found:
            what = (
                "activation modules (nn.ReLU, nn.GELU, ...)" if spec is None else "modules matching `layers`"
            )
            candidates = candidate_module_names(pl_module)
            raise ValueError(
                f"RicciFlowMonitor found no {what} in {type(pl_module).__name__}; activations applied as "
                "functions (F.relu, torch.tanh) cannot be hooked. Pass `layers=[...]` with module names, "
                f"for example from: {', '.join(repr(n) for n in candidates[:60]) or 'none'}"
            )

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Measure on the probe set and log (see the class docstring)."""
        self._prepare(trainer, pl_module)
        if trainer.sanity_checking and not self.run_on_sanity_check:
            return
        if not trainer.sanity_checking and not self._is_due(trainer):
            return
        payload = self._measure(trainer, pl_module)
        self._log(pl_module, trainer, payload)
        if not trainer.sanity_checking:
            self.history.append(payload["entry"])

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record the critical layer of the last measurement; report what the measurements cost."""
        if not self.history:
            return
        seconds = [float(e["seconds"]) for e in self.history if "seconds" in e]
        if seconds and self._probe_x is not None:
            rank_zero_info(
                f"RicciFlowMonitor: {len(seconds)} measurements of {self._probe_x.shape[0]} probe points took "
                f"{sum(seconds) / len(seconds):.3f} s each on average (probe pass and geometry)"
            )
        entry = self.history[-1]
        self.critical_layer = int(entry["critical_layer"])
        if self.critical_layer >= 0 and len(self.layer_names) > self.critical_layer + 1:
            t = self.critical_layer
            rank_zero_info(
                f"RicciFlowMonitor: critical layer at the end of fit: transition {t} "
                f"({self.layer_names[t]} -> {self.layer_names[t + 1]}), layer coefficient "
                f"{entry['layer'][t]:.4f}"
            )

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._remove_hooks()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        if self._capture is not None:
            self._capture.remove()
            self._capture = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [dict(entry) for entry in self.history],
            "probe_indices": None if self.probe_indices is None else list(self.probe_indices),
            "layer_names": list(self.layer_names),
            "critical_layer": self.critical_layer,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(entry) for entry in state_dict.get("history", [])]
        indices = state_dict.get("probe_indices")
        self.probe_indices = None if indices is None else [int(i) for i in indices]
        self.critical_layer = state_dict.get("critical_layer")
        if not self._probe_given:
            self._probe_x = None  # rebuilt from the restored indices at the next validation run

    # ------------------------------------------------------------------ probe and layers

    def _is_due(self, trainer: Trainer) -> bool:
        if trainer.state.fn != TrainerFn.FITTING:
            return True
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._probe_x is None:
            self._probe_x = self._probe_from_val_data(trainer)
        num_points = self._probe_x.shape[0]
        if self.k is not None and self.k >= num_points:
            raise ValueError(
                f"`k` must be smaller than the number of probe points {num_points} (got {self.k})"
            )
        if self._module_layers is None:
            spec = self._layer_spec
            if isinstance(spec, list):
                self._module_layers = ActivationCapture(pl_module, spec).names
            else:
                select = ACTIVATION_TYPES if spec is None else spec
                sample = self._probe_x[: min(num_points, self.batch_size)]
                modes = {m: m.training for m in pl_module.modules()}
                try:
                    pl_module.eval()
                    self._module_layers = find_layers(
                        pl_module, lambda: self._forward(trainer, pl_module, sample), select
                    )
                finally:
                    for module, mode in modes.items():
                        module.training = mode
            inputs_name = INPUT_LAYER if INPUT_LAYER not in self._module_layers else "probe_input"
            self.layer_names = [inputs_name, *self._module_layers]

    def _probe_from_val_data(self, trainer: Trainer) -> Tensor:
        loaders = trainer.val_dataloaders
        if isinstance(loaders, Mapping):
            loaders = next(iter(loaders.values()), None)
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        dataset = getattr(loaders, "dataset", None)
        if dataset is None:
            raise ValueError(
                "RicciFlowMonitor(probe=None) samples the validation dataloader's dataset, but the trainer has "
                "no validation dataloader with a `dataset`; pass `probe=` explicitly"
            )
        try:
            size = len(dataset)
        except TypeError:
            raise ValueError(
                f"RicciFlowMonitor(probe=None) cannot sample a {type(dataset).__name__} without `len()` "
                "(an IterableDataset); pass `probe=` explicitly"
            ) from None
        if self.probe_indices is None:
            generator = torch.Generator().manual_seed(self.seed)
            count = min(self.num_samples, size)
            self.probe_indices = torch.randperm(size, generator=generator)[:count].sort().values.tolist()
        elif self.probe_indices and max(self.probe_indices) >= size:
            raise ValueError(
                f"the restored probe indices go up to {max(self.probe_indices)}, but the validation dataset "
                f"has {size} samples: resume with the same validation data, or pass `probe=`"
            )
        collate = getattr(loaders, "collate_fn", None) or default_collate
        batch = collate([dataset[i] for i in self.probe_indices])
        return _probe_input(batch, argument="the validation batch").detach().cpu()

    def _forward(self, trainer: Trainer, pl_module: LightningModule, x: Tensor) -> Any:
        """One probe forward: no_grad, the precision plugin's input conversion and context, eager."""
        plugin = trainer.precision_plugin
        x = plugin.convert_input(move_data_to_device(x, pl_module.device))
        context = getattr(plugin, "val_step_context", plugin.forward_context)
        call = torch.compiler.disable(lambda inputs: pl_module(inputs), recursive=True)  # type: ignore[no-untyped-call]
        with torch.no_grad(), _eager(), context():
            return call(x)

    def _probe_pass(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Tensor]:
        assert self._probe_x is not None and self._module_layers is not None
        modes = {m: m.training for m in pl_module.modules()}
        capture = ActivationCapture(pl_module, self._module_layers)
        self._capture = capture
        try:
            pl_module.eval()
            with capture:
                for start in range(0, self._probe_x.shape[0], self.batch_size):
                    xb = self._probe_x[start : start + self.batch_size]
                    capture.forward(
                        lambda xb=xb: self._forward(trainer, pl_module, xb),  # type: ignore[misc]
                        batch_size=xb.shape[0],
                    )
            acts = capture.activations()
        finally:
            capture.remove()
            self._capture = None
            for module, mode in modes.items():
                module.training = mode
        if list(acts) != self._module_layers:
            self._module_layers = list(acts)
            self.layer_names = [self.layer_names[0], *acts]
        return acts

    # ------------------------------------------------------------------ measurement

    def _measure(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        start = time.perf_counter()
        acts = self._probe_pass(trainer, pl_module)  # every rank: the forward may be a collective
        payload: dict[str, Any] | None = None
        error: BaseException | None = None
        if trainer.is_global_zero:
            device = next(iter(acts.values())).device
            assert self._probe_x is not None
            layers = [_input_layer(self._probe_x.to(device)), *acts.values()]
            if any(t.dtype == torch.float64 for t in layers):
                layers = [t.double() for t in layers]
            try:
                result = self._ricci_flow(layers)
            except Exception as err:  # noqa: BLE001 - the geometry must not stop training unless strict
                error = err
                payload = self._failure_payload(trainer, err)
            else:
                self.last_result = result
                payload = self._payload(trainer, result)
            payload["entry"]["seconds"] = time.perf_counter() - start
        payload = trainer.strategy.broadcast(payload, src=0)
        assert payload is not None
        if payload["error"] is not None:
            if self.strict:
                if error is not None:
                    raise error
                raise RuntimeError(f"RicciFlowMonitor: ricci_flow failed on rank 0: {payload['error']}")
            self._warn_once(
                "failed",
                f"RicciFlowMonitor: ricci_flow failed at epoch {trainer.current_epoch} ({payload['error']}); "
                f"logging {self._key('coefficient')} = 0.0 with {self._key('failed')} = 1 and continuing. "
                "Pass strict=True to raise instead.",
            )
        elif payload["entry"]["excluded"]:
            self._warn_once(
                "excluded",
                f"RicciFlowMonitor: the {self.convention!r} coefficient is undefined at epoch "
                f"{trainer.current_epoch} (a kNN graph changed connectivity between layers, or a series is "
                f"constant); logging the both-layers-connected coefficient instead (0.0 if that is undefined "
                f"too) with {self._key('excluded')} = 1. Reported once.",
            )
        if payload["local_fallback"]:
            self._warn_once(
                "local",
                "RicciFlowMonitor: no probe point has a defined local coefficient; logging "
                f"{self._key('local_mean')} = 0.0. Reported once.",
            )
        ok = payload["error"] is None and self.last_result is not None
        if ok and trainer.is_global_zero and not trainer.sanity_checking:
            assert self.last_result is not None
            self._log_extras(trainer, self.last_result)
        return payload

    def _ricci_flow(self, layers: list[Tensor]) -> RicciFlowResult:
        k = self.k if self.k is not None else default_k(layers[0].shape[0])
        kwargs: dict[str, Any] = {
            "convention": self.convention,
            "curvature": self.curvature,
            "knn_backend": self.knn_backend,
        }
        try:
            return ricci_flow(layers, k, **kwargs)
        except torch.cuda.OutOfMemoryError:
            if layers[0].device.type == "cpu":
                raise
        # CUDA out of memory: first retry on the GPU with 1/16 of the default scratch memory (smaller
        # distance blocks and BFS source blocks; the result is the same), then on the CPU.
        torch.cuda.empty_cache()
        try:
            result = ricci_flow(layers, k, memory_budget=_SMALL_CUDA_BUDGET, **kwargs)
            self._warn_once(
                "oom-chunks",
                f"RicciFlowMonitor: ricci_flow ran out of GPU memory for {layers[0].shape[0]} probe points; "
                "retried with smaller chunks (slower). Lower `num_samples` to avoid the retry.",
            )
            return result
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
        self._warn_once(
            "oom",
            f"RicciFlowMonitor: ricci_flow ran out of GPU memory for {layers[0].shape[0]} probe points, "
            "even with smaller chunks; computing on the CPU instead (slower). Lower `num_samples` to stay "
            "on the GPU.",
        )
        return ricci_flow([t.cpu() for t in layers], k, **kwargs)

    def _entry(self, trainer: Trainer) -> dict[str, Any]:
        return {"epoch": int(trainer.current_epoch), "global_step": int(trainer.global_step)}

    def _failure_payload(self, trainer: Trainer, err: BaseException) -> dict[str, Any]:
        entry = self._entry(trainer)
        entry.update(
            coefficient=0.0,
            coefficient_paper=math.nan,
            coefficient_connected=math.nan,
            excluded=True,
            failed=True,
            local_mean=0.0,
            local_negative_share=0.0,
            critical_layer=-1,
            curvature={},
            geodesic_sum={},
            layer=[],
        )
        return {"entry": entry, "error": f"{type(err).__name__}: {err}", "local_fallback": False}

    def _payload(self, trainer: Trainer, result: RicciFlowResult) -> dict[str, Any]:
        paper = float(result.coefficient)
        connected = float(result.coefficient_connected)
        if _finite(paper):
            coefficient, excluded = paper, False
        else:
            coefficient, excluded = (connected if _finite(connected) else 0.0), True
        local_mean, local_share = float(result.local_mean), float(result.local_negative_share)
        local_fallback = not (_finite(local_mean) and _finite(local_share))
        names = self.layer_names
        entry = self._entry(trainer)
        entry.update(
            coefficient=coefficient,
            coefficient_paper=paper,
            coefficient_connected=connected,
            excluded=excluded,
            failed=False,
            local_mean=local_mean if _finite(local_mean) else 0.0,
            local_negative_share=local_share if _finite(local_share) else 0.0,
            critical_layer=int(result.critical_layer),
            curvature=dict(zip(names, result.curvature.detach().cpu().tolist())),
            geodesic_sum=dict(zip(names, result.geodesic_sum.detach().cpu().tolist())),
            layer=result.layer.detach().cpu().tolist(),
        )
        return {"entry": entry, "error": None, "local_fallback": local_fallback}

    # ------------------------------------------------------------------ logging

    def _log(self, pl_module: LightningModule, trainer: Trainer, payload: dict[str, Any]) -> None:
        entry = payload["entry"]
        metrics: dict[str, float] = {
            self._key("coefficient"): entry["coefficient"],
            self._key("excluded"): float(entry["excluded"]),
            self._key("failed"): float(entry["failed"]),
            self._key("local_mean"): entry["local_mean"],
            self._key("local_negative_share"): entry["local_negative_share"],
            self._key("critical_layer"): float(entry["critical_layer"]),
        }
        for name, value in entry["curvature"].items():
            metrics[self._key(f"curvature/{name}")] = value
        for name, value in entry["geodesic_sum"].items():
            metrics[self._key(f"geodesic_sum/{name}")] = value
        # Every rank holds the same broadcast numbers; "max" over equal values is exact and keeps
        # Lightning from warning about unsynced epoch-level metrics.
        sync = trainer.world_size > 1
        for key, value in metrics.items():
            pl_module.log(
                key, float(value), on_step=False, on_epoch=True, batch_size=1, sync_dist=sync, reduce_fx="max"
            )

    def _log_extras(self, trainer: Trainer, result: RicciFlowResult) -> None:
        """Histograms at every measurement and the figure on its schedule, where the logger can take them."""
        step = int(trainer.global_step)
        if self.log_histograms:
            for logger, experiment in self._experiments(trainer, "add_histogram"):
                with self._guard(logger):
                    for name, values in zip(self.layer_names, result.edge_curvature):
                        if values.numel():
                            experiment.add_histogram(
                                self._key(f"edge_curvature/{name}"), values.detach().float().cpu(), step
                            )
                    local = result.local[~result.local.isnan()]
                    if local.numel():
                        experiment.add_histogram(self._key("local"), local.detach().float().cpu(), step)
        if self.log_figures:
            # `history` does not hold this measurement yet: its length is the measurement's index. Outside
            # fit (trainer.validate) every measurement is the last one, so it always gets its figure.
            fitting = trainer.state.fn == TrainerFn.FITTING
            if not fitting or len(self.history) % self.log_figures == 0:
                self._log_figure(trainer, result, step)
            else:
                self._unplotted_step = step

    def _log_figure(self, trainer: Trainer, result: RicciFlowResult, step: int) -> None:
        self._unplotted_step = None
        targets = self._experiments(trainer, "add_figure")
        if not targets:
            return
        figure = self._figure(result)
        if figure is None:
            return
        for logger, experiment in targets:
            with self._guard(logger):
                experiment.add_figure(self._key("flow"), figure, step, close=False)
        figure.clear()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the figure of the last measurement if its schedule skipped it (loggers are still open here)."""
        if self._unplotted_step is not None and self.last_result is not None and trainer.is_global_zero:
            self._log_figure(trainer, self.last_result, self._unplotted_step)

    @staticmethod
    def _experiments(trainer: Trainer, method: str) -> list[tuple[Any, Any]]:
        """(logger, experiment) pairs whose experiment has a callable ``method`` (TensorBoard's)."""
        found = []
        for logger in trainer.loggers:
            try:
                experiment: Any = getattr(logger, "experiment", None)
            except Exception:  # noqa: BLE001, S112 - a logger without a usable experiment gets no extras
                continue
            if callable(getattr(experiment, method, None)):
                found.append((logger, experiment))
        return found

    @contextlib.contextmanager
    def _guard(self, logger: Any) -> Iterator[None]:
        """A logger that cannot take histograms or figures must not stop training: warn once, go on."""
        try:
            yield
        except Exception as err:  # noqa: BLE001
            self._warn_once(
                f"extras-{type(logger).__name__}",
                f"RicciFlowMonitor: could not write histograms/figures to {type(logger).__name__} "
                f"({type(err).__name__}: {err}); skipping them for this logger.",
            )

    def _figure(self, result: RicciFlowResult) -> Any:
        try:
            from lightning_ricci.plotting import flow_figure

            return flow_figure(result, self.layer_names)
        except ModuleNotFoundError as err:
            self.log_figures = 0
            self._warn_once("plots", f"RicciFlowMonitor: figures disabled: {err}")
            return None

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        rank_zero_warn(message)

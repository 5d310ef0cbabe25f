"""Capture layer activations with temporary forward hooks, by module name.

Shape symbols: N probe points, B points in one forward batch, D_l flattened features of layer l.

Layers are addressed by their ``named_modules()`` names. Wrapper prefixes that distributed,
compiled or checkpointed models insert (:data:`WRAPPER_PREFIXES`) are normalised away, so ``"net.0"``
finds ``"module._orig_mod.net.0"`` and ``"net._checkpoint_wrapped_module.0"``. A module that runs more
than once per forward pass (one ``nn.ReLU`` reused after every linear layer) gives one layer per
call, named ``"name:0"``, ``"name:1"``, ...; ``"name:i"`` selects the i-th call alone.

**Flattening rule.** Every captured output becomes one [B, D_l] row block, dim 0 being the sample:

* a tensor [B, *] is flattened per sample: a conv feature map [B, C, H, W] gives [B, C*H*W], a
  token sequence [B, T, E] gives [B, T*E], a vector [B] gives [B, 1];
* a tuple or list contributes its first tensor, searched depth-first (``nn.LSTM``'s
  ``(output, (h, c))`` gives ``output``, ``nn.MultiheadAttention``'s ``(out, weights)`` gives ``out``);
* a mapping (``dict``, Hugging Face ``ModelOutput``) contributes its first tensor value in insertion order;
* the tensor is detached and copied; float16 and bfloat16 are upcast to float32, float64 is kept,
  and any other dtype raises ``TypeError``.

This module needs only torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import Self

__all__ = [
    "ACTIVATION_TYPES",
    "WRAPPER_PREFIXES",
    "ActivationCapture",
    "activation_module_names",
    "candidate_module_names",
    "find_layers",
    "flatten_output",
    "normalize_name",
]

#: Prefixes inserted by wrappers: torch.compile, DDP/DataParallel, Fabric, FSDP1, activation checkpointing.
WRAPPER_PREFIXES: tuple[str, ...] = (
    "_orig_mod.",
    "module.",
    "_forward_module.",
    "_fsdp_wrapped_module.",
    "_checkpoint_wrapped_module.",
)
_WRAPPER_SEGMENTS = frozenset(prefix[:-1] for prefix in WRAPPER_PREFIXES)
# Children a wrapper module forwards to. "module" is only followed for the DDP/DP classes (a user's own
# attribute may be called "module").
_INNER_CHILDREN = ("_orig_mod", "_forward_module", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")

#: Element-wise activation modules that make up the default layers, in no particular order.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Tanh,
    nn.Sigmoid,
    nn.LogSigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Softshrink,
    nn.Hardshrink,
    nn.Threshold,
    nn.GLU,
)

LayerSelector = (
    Sequence[str] | type[nn.Module] | tuple[type[nn.Module], ...] | Callable[[str, nn.Module], bool]
)


def normalize_name(name: str) -> str:
    """Strip the wrapper segments of :data:`WRAPPER_PREFIXES` from a dotted module name.

    Only segments followed by another segment are dropped (they are prefixes), so a user's leaf module
    called ``module`` keeps its name.

    Args:
        name (str): a ``named_modules()`` name.

    Returns:
        str: the name without wrapper prefixes.

    >>> normalize_name("module._orig_mod.net.0")
    'net.0'
    >>> normalize_name("body._checkpoint_wrapped_module.act")
    'body.act'
    """
    parts = name.split(".")
    kept = [part for i, part in enumerate(parts) if not (part in _WRAPPER_SEGMENTS and i < len(parts) - 1)]
    return ".".join(kept)


def _unwrap(module: nn.Module) -> nn.Module:
    """Follow wrapper modules (compile, checkpoint, FSDP1, Fabric, DDP) to the module that computes."""
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    while True:
        children = module._modules
        inner = next((children[c] for c in _INNER_CHILDREN if children.get(c) is not None), None)
        if inner is None and isinstance(module, parallel):
            inner = children.get("module")
        if inner is None:
            return module
        module = inner


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        values: Any = output.values()
    elif isinstance(output, (tuple, list)):
        values = output
    else:
        return None
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


def flatten_output(output: Any, name: str = "output") -> Tensor:
    """Turn one module output into a detached [B, D] float block by the module's flattening rule.

    Args:
        output (Any): a tensor [B, *], or a tuple, list or mapping holding one.
        name (str, optional): the layer name used in error messages. Default: ``"output"``.

    Returns:
        Tensor: [B, D] float32 (float64 if the output was float64), a copy on the output's device.

    Raises:
        TypeError: no tensor in ``output``, or a non-floating tensor.
        ValueError: a 0-dim tensor (no sample dim).

    >>> flatten_output(torch.ones(4, 3, 2, 2)).shape
    torch.Size([4, 12])
    >>> flatten_output((torch.ones(4, 5, dtype=torch.bfloat16), torch.ones(1))).dtype
    torch.float32
    """
    tensor = _first_tensor(output)
    if tensor is None:
        raise TypeError(
            f"layer {name!r} returned {type(output).__name__}, which holds no tensor; "
            "capture needs a tensor, or a tuple/list/dict holding one"
        )
    if not tensor.is_floating_point():
        raise TypeError(
            f"layer {name!r} returned a {tensor.dtype} tensor; capture needs a floating-point one"
        )
    if tensor.dim() == 0:
        raise ValueError(f"layer {name!r} returned a 0-dim tensor; capture needs dim 0 to be the sample dim")
    dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    # copy=True: an in-place op later in the forward (`x += residual`) must not change what was captured.
    flat = tensor.detach().to(dtype=dtype, copy=True)
    return flat.reshape(flat.shape[0], -1)


def _named_modules_table(
    model: nn.Module,
) -> tuple[dict[str, nn.Module], dict[str, list[tuple[str, nn.Module]]]]:
    raw: dict[str, nn.Module] = {}
    normalized: dict[str, list[tuple[str, nn.Module]]] = {}
    for name, module in model.named_modules():
        if not name:
            continue
        raw[name] = module
        normalized.setdefault(normalize_name(name), []).append((name, module))
    return raw, normalized


def _unknown_name_error(name: str, known: Sequence[str], owner: str) -> ValueError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = list(known[:60])
    more = f", ... ({len(known) - len(shown)} more)" if len(known) > len(shown) else ""
    listed = ", ".join(repr(n) for n in shown) + more if shown else "none"
    return ValueError(
        f"`layers` names a module that does not exist in {owner} (got {name!r}).{hint} "
        f"Modules that exist: {listed}"
    )


def _resolve(model: nn.Module, name: str) -> tuple[str, nn.Module, int | None]:
    """Map a requested layer name to (canonical name, module to hook, call index or None)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"`layers` entries must be non-empty module names (got {name!r})")
    raw, normalized = _named_modules_table(model)
    call: int | None = None
    base = name
    if name not in raw and normalize_name(name) not in normalized:
        head, sep, tail = name.rpartition(":")
        if sep and tail.isdigit():
            base, call = head, int(tail)
    if base in raw:
        return normalize_name(base), _unwrap(raw[base]), call
    matches = normalized.get(normalize_name(base), [])
    distinct = {id(_unwrap(module)): _unwrap(module) for _, module in matches}
    if not distinct:
        raise _unknown_name_error(name, sorted(normalized), type(model).__name__)
    if len(distinct) > 1:
        raise ValueError(
            f"`layers` name {name!r} is ambiguous after removing wrapper prefixes: it matches "
            f"{', '.join(repr(raw_name) for raw_name, _ in matches)}. Pass the full name"
        )
    return normalize_name(base), next(iter(distinct.values())), call


class ActivationCapture:
    """Record the outputs of named modules during forward passes, with hooks that live only while attached.

    Use it as a context manager: hooks are registered on ``__enter__`` and removed on ``__exit__``, also
    when the forward raises. Each :meth:`forward` call runs one batch; :meth:`activations` concatenates
    the batches.

    Args:
        model (nn.Module): the model whose modules are hooked.
        layers (Sequence[str]): module names (wrapper prefixes optional, ``"name:i"`` for the i-th call
            of a module that runs several times per forward).

    Raises:
        ValueError: an empty list, a duplicate, or a name that does not exist (the message lists the
            names that do).

    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Tanh())
    >>> capture = ActivationCapture(net, ["1", "3"])
    >>> with capture:
    ...     _ = capture.forward(lambda: net(torch.randn(5, 3)))
    >>> {name: tuple(a.shape) for name, a in capture.activations().items()}
    {'1': (5, 4), '3': (5, 2)}
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        if isinstance(layers, str) or not isinstance(layers, Sequence):
            raise TypeError(f"`layers` must be a sequence of module names (got {type(layers).__name__})")
        if len(layers) == 0:
            raise ValueError("`layers` must name at least one module (got an empty sequence)")
        self.model = model
        self._specs = [_resolve(model, name) for name in layers]
        seen: set[tuple[int, int | None]] = set()
        for (canonical, module, call), requested in zip(self._specs, layers):
            if (id(module), call) in seen:
                raise ValueError(f"`layers` lists the same layer twice (got {requested!r} again)")
            seen.add((id(module), call))
        self._modules: dict[int, nn.Module] = {id(module): module for _, module, _ in self._specs}
        self._handles: list[RemovableHandle] = []
        self._current: dict[int, list[Tensor]] = {}
        self._keys: list[str] | None = None
        self._store: dict[str, list[Tensor]] = {}

    @property
    def names(self) -> list[str]:
        """The requested layers, with wrapper prefixes removed (before per-call expansion)."""
        return [name if call is None else f"{name}:{call}" for name, _, call in self._specs]

    @property
    def attached(self) -> bool:
        """Whether hooks are currently registered."""
        return bool(self._handles)

    def attach(self) -> None:
        """Register the forward hooks (no-op if already attached)."""
        if self._handles:
            return
        try:
            for key, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(key)))
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Remove every hook this capture registered. Safe to call more than once."""
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> Self:
        self.attach()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def _make_hook(self, key: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._current.setdefault(key, []).append(flatten_output(output, self._label(key)))

        return hook

    def _label(self, key: int) -> str:
        return next(name for name, module, _ in self._specs if id(module) == key)

    def clear(self) -> None:
        """Forget the activations recorded so far."""
        self._store = {}
        self._keys = None

    def forward(self, fn: Callable[[], Any], batch_size: int | None = None) -> Any:
        """Run one forward batch through ``fn`` and record the hooked outputs.

        Args:
            fn (Callable[[], Any]): runs the model on one batch.
            batch_size (int, optional): rows every captured output must have. Default: None (unchecked).

        Returns:
            Any: what ``fn`` returned.

        Raises:
            RuntimeError: the capture is not attached, or a hooked module did not run.
            ValueError: an output whose dim 0 is not ``batch_size``.
        """
        if not self._handles:
            raise RuntimeError("ActivationCapture.forward needs attached hooks: use `with capture:`")
        self._current = {}
        try:
            result = fn()
            self._collect(batch_size)
        finally:
            self._current = {}
        return result

    def _collect(self, batch_size: int | None) -> None:
        blocks: dict[str, Tensor] = {}
        for name, module, call in self._specs:
            outputs = self._current.get(id(module), [])
            if not outputs:
                raise RuntimeError(
                    f"layer {name!r} did not run during the forward pass: choose modules that the "
                    "model's forward calls"
                )
            if call is not None:
                if call >= len(outputs):
                    raise RuntimeError(
                        f"layer '{name}:{call}' asks for call {call}, but {name!r} ran {len(outputs)} time(s)"
                    )
                blocks[f"{name}:{call}"] = outputs[call]
            elif len(outputs) == 1:
                blocks[name] = outputs[0]
            else:
                blocks.update({f"{name}:{i}": out for i, out in enumerate(outputs)})
        for key, block in blocks.items():
            if batch_size is not None and block.shape[0] != batch_size:
                raise ValueError(
                    f"layer {key!r} output has {block.shape[0]} rows for a batch of {batch_size} samples: "
                    "capture needs dim 0 of every output to be the sample dim"
                )
        keys = list(blocks)
        if self._keys is None:
            self._keys = keys
            self._store = {key: [] for key in keys}
        elif keys != self._keys:
            raise RuntimeError(
                f"the hooked modules ran a different number of times in this batch (layers {keys}) "
                f"than in the first one (layers {self._keys})"
            )
        for key, block in blocks.items():
            self._store[key].append(block)

    def activations(self) -> dict[str, Tensor]:
        """The recorded layers in the requested order, each [N, D_l] over all batches so far.

        Returns:
            dict[str, Tensor]: layer name -> [N, D_l] float32 (or float64) activations.
        """
        return {
            key: torch.cat(blocks) if len(blocks) > 1 else blocks[0] for key, blocks in self._store.items()
        }

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)


def activation_module_names(
    model: nn.Module, types: type[nn.Module] | tuple[type[nn.Module], ...] = ACTIVATION_TYPES
) -> list[str]:
    """Names (wrapper prefixes removed) of the modules of the given types, in registration order.

    Args:
        model (nn.Module): the model.
        types (type | tuple[type, ...], optional): module classes. Default: :data:`ACTIVATION_TYPES`.

    Returns:
        list[str]: names, without duplicates (a shared module is listed once).

    >>> activation_module_names(nn.Sequential(nn.Linear(2, 2), nn.GELU(), nn.Linear(2, 1)))
    ['1']
    """
    return _select(model, lambda name, module: isinstance(module, types))


def _select(model: nn.Module, predicate: Callable[[str, nn.Module], bool]) -> list[str]:
    names: list[str] = []
    seen: set[int] = set()
    for raw_name, module in model.named_modules():
        if not raw_name or id(module) in seen:
            continue
        name = normalize_name(raw_name)
        if predicate(name, module):
            seen.add(id(module))
            names.append(name)
    return names


def candidate_module_names(model: nn.Module) -> list[str]:
    """Leaf module names (wrapper prefixes removed), the natural candidates for ``layers``."""
    return _select(model, lambda name, module: not any(True for _ in module.children()))


def find_layers(
    model: nn.Module,
    forward: Callable[[], Any],
    select: type[nn.Module]
    | tuple[type[nn.Module], ...]
    | Callable[[str, nn.Module], bool] = ACTIVATION_TYPES,
) -> list[str]:
    """The layers chosen by ``select``, in the order the forward pass calls them.

    Runs ``forward`` once with temporary hooks on every selected module. A module called several times
    gives one entry per call (``"name:i"``); selected modules that never run are left out.

    Args:
        model (nn.Module): the model.
        forward (Callable[[], Any]): runs the model on a (small) batch.
        select (type | tuple[type, ...] | Callable[[str, nn.Module], bool], optional): module classes, or
            a predicate on (name, module). Default: :data:`ACTIVATION_TYPES`.

    Returns:
        list[str]: layer names for :class:`ActivationCapture`, in forward order.

    Raises:
        ValueError: nothing selected, or no selected module ran (functional activations); the message
            lists the candidate module names.

    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU())
    >>> find_layers(net, lambda: net(torch.zeros(4, 2)))
    ['1', '3']
    """
    if isinstance(select, (type, tuple)):
        types = select
        names = _select(model, lambda name, module: isinstance(module, types))
    elif callable(select):
        names = _select(model, select)
    else:
        raise TypeError(f"`select` must be module classes or a predicate (got {type(select).__name__})")
    if not names:
        candidates = candidate_module_names(model)
        raise ValueError(
            f"no layer of {type(model).__name__} matches the layer selection; activations applied as "
            "functions (F.relu, torch.tanh) cannot be hooked. Pass `layers=[...]` with module names, "
            f"for example from: {', '.join(repr(n) for n in candidates[:60]) or 'none'}"
        )
    order: list[tuple[int, str]] = []
    modules = {name: _resolve(model, name)[1] for name in names}
    counts: dict[str, int] = {}
    handles: list[RemovableHandle] = []

    def make_hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            counts[name] = counts.get(name, 0) + 1
            order.append((counts[name] - 1, name))

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            forward()
    finally:
        for handle in handles:
            handle.remove()
    if not order:
        raise ValueError(
            f"none of the selected modules of {type(model).__name__} ran in the forward pass "
            f"({', '.join(repr(n) for n in names)}); pass `layers=[...]` with modules that the forward calls"
        )
    return [name if counts[name] == 1 else f"{name}:{call}" for call, name in order]


def check_layer_spec(layers: Any) -> Any:
    """Validate a layer selection: ``None``, module names, an ``nn.Module`` class or tuple of classes, or
    a predicate ``(name, module) -> bool``. Names come back as a list.

    Raises:
        TypeError: a str instead of a list, a class that is no ``nn.Module``, an empty or non-str name.
        ValueError: an empty list, or a name listed twice.
    """
    if layers is None or (callable(layers) and not isinstance(layers, type)):
        return layers
    if isinstance(layers, type):
        if not issubclass(layers, nn.Module):
            raise TypeError(f"`layers` classes must be nn.Module subclasses (got {layers.__name__})")
        return layers
    if isinstance(layers, str):
        raise TypeError(f"`layers` must be a list of module names, not a str (got {layers!r}; use [{layers!r}])")
    if isinstance(layers, tuple) and layers and all(isinstance(t, type) for t in layers):
        bad = [t.__name__ for t in layers if not issubclass(t, nn.Module)]
        if bad:
            raise TypeError(f"`layers` classes must be nn.Module subclasses (got {bad})")
        return layers
    if not isinstance(layers, Sequence):
        raise TypeError(
            f"`layers` must be module names, module classes or a predicate (got {type(layers).__name__})"
        )
    names = list(layers)
    if not names:
        raise ValueError("`layers` must name at least one module (got an empty list)")
    bad_entries = [n for n in names if not isinstance(n, str) or not n]
    if bad_entries:
        raise TypeError(f"`layers` entries must be non-empty module names (got {bad_entries!r})")
    if len(set(names)) != len(names):
        raise ValueError(f"`layers` lists a module twice (got {names})")
    return names

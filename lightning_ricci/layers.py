"""Which layers a model is measured at by default, and the layer selections a user can give.

**Default layers** (:func:`default_layers`), decided from one forward pass over a few probe points:

1. *Blocks.* The outputs of the model's blocks (the residual stream), when it has at least two:
   every ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``, and the children of an
   ``nn.Sequential`` / ``nn.ModuleList`` that are repeated modules of one class (at least two children of
   that class, each with submodules, not itself a plain container) run as a chain (each one's input has
   the shape of the previous one's output): ResNet basic/bottleneck blocks, ViT blocks, MobileNet and
   EfficientNet blocks, the ``convs`` of a PyG ``BasicGNN``. Nested candidates keep the innermost. After the
   blocks comes the head: the last module that runs after the last block (``fc``, ``head``), if any.
2. *Activations.* Otherwise the activation modules (:data:`ACTIVATION_TYPES`) in the order the forward
   pass calls them, one layer per call: the papers' MLP setting, unchanged.
3. *Children.* Otherwise (activations applied as functions, ``F.relu``) the children that run of the
   first module with more than one (descending through single-child wrappers such as a LightningModule
   holding ``self.net``; plain containers are opened), in forward order: convs and linears, before their
   functional activation.

In every rule, outputs shaped like gates or side branches (more than two dims, all but the first two of
size 1: squeeze-excitation ``[B, C, 1, 1]``, global pools), normalisation, dropout, identity and flatten
modules are never layers, and attention weights are never captured (the first tensor of
``MultiheadAttention``'s output is its result). At most ``max_layers`` layers are kept
(:data:`DEFAULT_MAX_LAYERS`): evenly spaced over the list, always keeping the first and the last.

Layers are named as in :mod:`lightning_ricci.capture` (wrapper prefixes removed, ``"name:i"`` for the
i-th call of a module that runs several times per forward pass).

This module needs only torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lightning_ricci.capture import inner_module, normalize_name, resolve_layer
from lightning_ricci.reduce import first_tensor

__all__ = [
    "ACTIVATION_TYPES",
    "BLOCK_TYPES",
    "DEFAULT_MAX_LAYERS",
    "activation_module_names",
    "candidate_module_names",
    "check_layer_spec",
    "default_layers",
    "find_layers",
    "largest_output",
    "spread_layers",
]

#: Element-wise activation modules that make up the default layers of MLPs, in no particular order.
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

#: Block classes that are layers wherever they appear.
BLOCK_TYPES: tuple[type[nn.Module], ...] = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)

# Modules that are never layers by default: they rescale, drop or reshape, but add no representation.
_NOT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
#: The default cap on the number of layers (the probe input not counted).
DEFAULT_MAX_LAYERS = 12


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


def candidate_module_names(model: nn.Module) -> list[str]:
    """Leaf module names (wrapper prefixes removed), the natural candidates for ``layers``.

    >>> candidate_module_names(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU())))
    ['0', '1.0']
    """
    return _select(model, lambda name, module: not any(True for _ in module.children()))


def _is_wrapper(module: nn.Module) -> bool:
    return inner_module(module) is not module


class _Call:
    __slots__ = ("call", "in_shape", "module", "order", "out_shape")

    def __init__(self, module: nn.Module, order: int, call: int, in_shape: Any, out_shape: Any) -> None:
        self.module, self.order, self.call, self.in_shape, self.out_shape = (
            module,
            order,
            call,
            in_shape,
            out_shape,
        )


def _trace(model: nn.Module, forward: Callable[[], Any]) -> tuple[list[_Call], dict[int, str]]:
    """Run ``forward`` once with a hook on every module; the calls in completion order and the names."""
    names: dict[int, str] = {}
    for raw_name, module in model.named_modules():
        if raw_name and not _is_wrapper(module) and id(module) not in names:
            names[id(module)] = normalize_name(raw_name)
    calls: list[_Call] = []
    counts: dict[int, int] = {}
    handles: list[RemovableHandle] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        key = id(module)
        counts[key] = counts.get(key, 0) + 1
        first_in, first_out = first_tensor(args), first_tensor(output)
        calls.append(
            _Call(
                module,
                len(calls),
                counts[key] - 1,
                None if first_in is None else tuple(first_in.shape),
                None if first_out is None or not first_out.is_floating_point() else tuple(first_out.shape),
            )
        )

    try:
        for raw_name, module in model.named_modules():
            if raw_name and id(module) in names and names[id(module)] == normalize_name(raw_name):
                handles.append(module.register_forward_hook(hook))
        with torch.no_grad():
            forward()
    finally:
        for handle in handles:
            handle.remove()
    return calls, names


def _usable(call: _Call, rows: int | None) -> bool:
    """A float tensor output with the sample dim first, not a gate ([B, C, 1, 1]) or a pooled side branch."""
    shape = call.out_shape
    if shape is None or len(shape) == 0 or isinstance(call.module, _NOT_LAYERS):
        return False
    if rows is not None and shape[0] != rows:
        return False
    return not (len(shape) > 2 and all(s == 1 for s in shape[2:]))


def _blocks(model: nn.Module, calls: list[_Call]) -> list[nn.Module]:
    ran: dict[int, list[_Call]] = {}
    for call in calls:
        ran.setdefault(id(call.module), []).append(call)
    found: dict[int, nn.Module] = {}
    for module in model.modules():
        if isinstance(module, BLOCK_TYPES) and id(module) in ran:
            found[id(module)] = module
        if not isinstance(module, (nn.Sequential, nn.ModuleList)):
            continue
        groups: dict[type, list[nn.Module]] = {}
        for child in module.children():
            child = inner_module(child)
            if isinstance(child, _CONTAINERS + _NOT_LAYERS) or not any(True for _ in child.children()):
                continue
            groups.setdefault(type(child), []).append(child)
        for members in groups.values():
            running = sorted((m for m in members if id(m) in ran), key=lambda m: ran[id(m)][0].order)
            if len(running) < 2:
                continue
            chained = all(
                ran[id(b)][0].in_shape is not None and ran[id(b)][0].in_shape == ran[id(a)][0].out_shape
                for a, b in itertools.pairwise(running)
            )
            if chained:
                found.update({id(m): m for m in running})
    # Nested candidates: keep the innermost (a stage holding blocks gives way to its blocks).
    inner = {
        key: module
        for key, module in found.items()
        if not any(id(sub) in found for sub in module.modules() if sub is not module)
    }
    return list(inner.values())


def _per_call(chosen: list[_Call], names: dict[int, str]) -> list[str]:
    totals: dict[int, int] = {}
    for call in chosen:
        totals[id(call.module)] = totals.get(id(call.module), 0) + 1
    out = []
    for call in sorted(chosen, key=lambda c: c.order):
        name = names[id(call.module)]
        out.append(name if totals[id(call.module)] == 1 else f"{name}:{call.call}")
    return out


def spread_layers(names: Sequence[str], max_layers: int) -> list[str]:
    """At most ``max_layers`` of ``names``, evenly spaced, always keeping the first and the last.

    >>> spread_layers([f"b{i}" for i in range(8)], 4)
    ['b0', 'b2', 'b5', 'b7']
    """
    names = list(names)
    if len(names) <= max_layers:
        return names
    if max_layers == 1:
        return names[-1:]
    picks = sorted({round(i * (len(names) - 1) / (max_layers - 1)) for i in range(max_layers)})
    return [names[i] for i in picks]


def default_layers(
    model: nn.Module,
    forward: Callable[[], Any],
    *,
    rows: int | None = None,
    max_layers: int = DEFAULT_MAX_LAYERS,
) -> tuple[list[str], str]:
    """The default layers of ``model`` by the rules of the module docstring, from one forward pass.

    Args:
        model (nn.Module): the model.
        forward (Callable[[], Any]): runs the model on a (small) batch.
        rows (int, optional): the rows of that batch (outputs with another dim 0 are no layers).
            Default: None (unchecked).
        max_layers (int, optional): the cap. Default: :data:`DEFAULT_MAX_LAYERS`.

    Returns:
        tuple[list[str], str]: the layer names for :class:`ActivationCapture` in forward order, and the
        rule that chose them: ``"blocks"``, ``"activations"`` or ``"children"``.

    Raises:
        ValueError: nothing that runs qualifies (a model without submodules).

    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU())
    >>> default_layers(net, lambda: net(torch.zeros(4, 2)))
    (['1', '3'], 'activations')
    """
    calls, names = _trace(model, forward)
    calls = [c for c in calls if id(c.module) in names]
    blocks = _blocks(model, calls)
    if len(blocks) >= 1:
        block_ids = {id(b) for b in blocks}
        chosen = [c for c in calls if id(c.module) in block_ids and _usable(c, rows)]
        if len(chosen) >= 2:
            inside = {id(sub) for b in blocks for sub in b.modules()}
            last = max(c.order for c in chosen)
            head = [
                c
                for c in calls
                if c.order > last
                and id(c.module) not in inside
                and not any(True for _ in c.module.children())
                and _usable(c, rows)
            ]
            return spread_layers(_per_call(chosen + head[-1:], names), max_layers), "blocks"
    acts = [c for c in calls if isinstance(c.module, ACTIVATION_TYPES) and _usable(c, rows)]
    if acts:
        return spread_layers(_per_call(acts, names), max_layers), "activations"
    ran = {id(c.module) for c in calls}
    node = inner_module(model)

    def running_children(module: nn.Module) -> list[nn.Module]:
        kids = []
        for child in module.children():
            child = inner_module(child)
            if id(child) in ran or any(id(sub) in ran for sub in child.modules()):
                kids.extend(running_children(child) if isinstance(child, _CONTAINERS) else [child])
        return kids

    kids = running_children(node)
    while len(kids) == 1 and any(True for _ in kids[0].children()):
        node = kids[0]
        kids = running_children(node)
    kid_ids = {id(k) for k in kids}
    chosen = [c for c in calls if id(c.module) in kid_ids and _usable(c, rows)]
    if not chosen:
        raise ValueError(
            f"{type(model).__name__} has no submodule whose output can be a layer; pass `layers=[...]` with "
            f"module names, for example from: {', '.join(repr(n) for n in candidate_module_names(model)[:60]) or 'none'}"
        )
    return spread_layers(_per_call(chosen, names), max_layers), "children"


def largest_output(model: nn.Module, forward: Callable[[], Any], rows: int | None = None) -> int:
    """The largest per-sample size (values) of any module output in one forward pass: a bound on what
    one sample of a forward batch holds at once, for choosing the batch size.

    >>> net = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 3))
    >>> largest_output(net, lambda: net(torch.zeros(4, 2)), rows=4)
    64
    """
    calls, _ = _trace(model, forward)
    sizes = [
        math.prod(c.out_shape[1:]) for c in calls if c.out_shape and (rows is None or c.out_shape[0] == rows)
    ]
    return max(sizes, default=1)


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
        ValueError: nothing selected, or no selected module ran; the message lists the candidate names.

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
            f"no layer of {type(model).__name__} matches the layer selection; pass `layers=[...]` with module "
            f"names, for example from: {', '.join(repr(n) for n in candidates[:60]) or 'none'}"
        )
    wanted = {id(resolve_layer(model, name)[1]) for name in names}
    calls, table = _trace(model, forward)
    chosen = [c for c in calls if id(c.module) in wanted]
    if not chosen:
        raise ValueError(
            f"none of the selected modules of {type(model).__name__} ran in the forward pass "
            f"({', '.join(repr(n) for n in names)}); pass `layers=[...]` with modules that the forward calls"
        )
    return _per_call(chosen, table)


def check_layer_spec(layers: Any) -> Any:
    """Validate a layer selection: ``None``, module names, an ``nn.Module`` class or tuple of classes, or
    a predicate ``(name, module) -> bool``. Names come back as a list.

    Raises:
        TypeError: a str instead of a list, a class that is no ``nn.Module``, an empty or non-str name.
        ValueError: an empty list, or a name listed twice.

    >>> check_layer_spec(("net.1", "net.3"))
    ['net.1', 'net.3']
    """
    if layers is None or (callable(layers) and not isinstance(layers, type)):
        return layers
    if isinstance(layers, type):
        if not issubclass(layers, nn.Module):
            raise TypeError(f"`layers` classes must be nn.Module subclasses (got {layers.__name__})")
        return layers
    if isinstance(layers, str):
        raise TypeError(
            f"`layers` must be a list of module names, not a str (got {layers!r}; use [{layers!r}])"
        )
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

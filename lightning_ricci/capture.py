"""Capture layer activations with temporary forward hooks: layer names, default layers, output selection, reductions.

Shape symbols: N probe points, B rows of one forward batch, D_l features of layer l after its reduction.

**Names.** Layers are addressed by their ``named_modules()`` names. Wrapper prefixes that distributed,
compiled or checkpointed models insert (:data:`WRAPPER_PREFIXES`) are normalised away, so ``"net.0"``
finds ``"module._orig_mod.net.0"``. A module that runs more than once per forward pass gives one layer per
call, ``"name:0"``, ``"name:1"``, ...; ``"name:i"`` selects the i-th call alone. A module whose output is
a tuple, list, dict or Hugging Face ``ModelOutput`` can be narrowed with selectors: ``"encoder.layers.3[0]"``
(index 0 of a tuple), ``"block[hidden_states]"`` (a key), chained as ``"name[0][1]"`` and combined with a
call index (``"act:1[0]"``). Without a selector the first tensor, searched depth-first, is used
(``nn.LSTM``'s ``(output, (h, c))`` gives ``output``, ``nn.MultiheadAttention``'s ``(out, weights)`` gives
``out``).

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

**Reductions.** Every captured output becomes one [B, D_l] block, dim 0 being the sample, by ``reduce``:

* ``"flatten"``: [B, *] -> [B, prod(*)] (a conv map [B, C, H, W] gives C*H*W features);
* ``"mean"``: global average pooling: [B, C, *spatial] (4-D and more) over the spatial dims -> [B, C];
  a 3-D output is a batch-first token sequence [B, T, E], averaged over T -> [B, E]; 2-D is kept;
* ``"cls"``: the first token of a [B, T, E] sequence -> [B, E]; other shapes as ``"auto"``;
* ``"auto"`` (default): ``"flatten"`` when a sample has at most :data:`AUTO_FLATTEN_MAX` (4096) values
  or the output is 2-D (the papers' vectors and small maps); else a conv map [B, C, H, W] (or 3-D
  volume) is average-pooled to the largest s x s grid with C * s^2 <= :data:`AUTO_POOL_MAX` (1024)
  values (``"pool4x4"``; ``"mean"`` when s = 1), and a token sequence is averaged over its tokens;
* a callable ``f(tensor) -> [B, ...]``, flattened after it.

Float16 and bfloat16 are upcast to float32, float64 is kept; any other dtype is refused. The reduction is
done in the hook, batch by batch, into one preallocated [N, D_l] buffer per layer, so the probe pass holds
the reduced activations plus one batch, never a float64 copy or a concatenation of the batches.

This module needs only torch.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import Self

__all__ = [
    "ACTIVATION_TYPES",
    "AUTO_FLATTEN_MAX",
    "AUTO_POOL_MAX",
    "DEFAULT_MAX_LAYERS",
    "REDUCTIONS",
    "WRAPPER_PREFIXES",
    "ActivationCapture",
    "CaptureError",
    "CaptureTypeError",
    "CaptureValueError",
    "activation_module_names",
    "candidate_module_names",
    "check_layer_spec",
    "check_reduce",
    "default_layers",
    "find_layers",
    "largest_output",
    "flatten_output",
    "normalize_name",
    "reduce_output",
    "spread_layers",
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

#: Samples with more values than this are pooled under ``reduce="auto"`` (see the module docstring).
AUTO_FLATTEN_MAX = 4096
#: Under ``reduce="auto"``, a conv map too large to flatten is average-pooled to a grid of at most this
#: many values per sample (global average pooling when the channels alone reach it).
AUTO_POOL_MAX = 1024
#: The default cap on the number of layers (the probe input not counted).
DEFAULT_MAX_LAYERS = 12
#: The named reductions.
REDUCTIONS = ("auto", "flatten", "mean", "cls")

Reduce = Literal["auto", "flatten", "mean", "cls"] | Callable[[Tensor], Tensor]


class CaptureError(RuntimeError):
    """A captured layer that cannot be used: it did not run, returned no float tensor, or has wrong rows.

    The monitor flags these (``ricci/failed``) under ``strict=False``. Wrong types also are
    ``TypeError`` and bad shapes ``ValueError`` (:class:`CaptureTypeError`, :class:`CaptureValueError`).
    """


class CaptureTypeError(CaptureError, TypeError):
    """A layer output of the wrong type (no tensor, or not floating point)."""


class CaptureValueError(CaptureError, ValueError):
    """A layer output of the wrong shape (0-dim, or rows that are not the batch)."""


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


_SELECTOR = re.compile(r"\[([^\[\]]+)\]")


def _split_selectors(name: str) -> tuple[str, tuple[str, ...]]:
    """``"block:1[0][hidden]"`` -> (``"block:1"``, (``"0"``, ``"hidden"``))."""
    head = name
    selectors: list[str] = []
    while head.endswith("]"):
        found = re.search(r"\[([^\[\]]+)\]$", head)
        if found is None:
            break
        selectors.insert(0, found.group(1))
        head = head[: found.start()]
    return head, tuple(selectors)


def _select_output(output: Any, selectors: tuple[str, ...], name: str) -> Any:
    for selector in selectors:
        try:
            if isinstance(output, Mapping) or (hasattr(output, "keys") and not isinstance(output, Tensor)):
                output = output[selector]
            elif isinstance(output, (tuple, list)):
                output = output[int(selector)]
            else:
                raise TypeError(type(output).__name__)
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise CaptureError(
                f"layer {name!r}: cannot select [{selector}] from a {type(output).__name__} output ({err})"
            ) from None
    return output


def reduce_output(output: Any, reduce: Reduce = "auto", name: str = "output") -> tuple[Tensor, str]:
    """Turn one module output into a detached [B, D] float block by ``reduce`` (see the module docstring).

    Args:
        output (Any): a tensor [B, *], or a tuple, list or mapping holding one (its first tensor is used).
        reduce (str | Callable): ``"auto"``, ``"flatten"``, ``"mean"``, ``"cls"`` or ``f(tensor) -> [B, ...]``.
            Default: ``"auto"``.
        name (str, optional): the layer name used in error messages. Default: ``"output"``.

    Returns:
        tuple[Tensor, str]: [B, D] float32 (float64 if the output was float64), a new tensor on the
        output's device, and the reduction applied (``"flatten"``, ``"mean"``, ``"cls"`` or the callable's name).

    Raises:
        CaptureError: no tensor in ``output``, a non-floating tensor, or a 0-dim one.

    >>> block, how = reduce_output(torch.ones(4, 64, 16, 16))
    >>> tuple(block.shape), how
    ((4, 1024), 'pool4x4')
    >>> reduce_output(torch.ones(4, 3, 8, 8))[1], reduce_output(torch.ones(4, 10, 6), "cls")[0].shape
    ('flatten', torch.Size([4, 6]))
    """
    tensor = _first_tensor(output)
    if tensor is None:
        raise CaptureTypeError(
            f"layer {name!r} returned {type(output).__name__}, which holds no tensor; "
            "capture needs a tensor, or a tuple/list/dict holding one"
        )
    if not tensor.is_floating_point():
        raise CaptureTypeError(
            f"layer {name!r} returned a {tensor.dtype} tensor; capture needs a floating-point one"
        )
    if tensor.dim() == 0:
        raise CaptureValueError(
            f"layer {name!r} returned a 0-dim tensor; capture needs dim 0 to be the sample dim"
        )
    dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    tensor = tensor.detach()
    how = reduce if isinstance(reduce, str) else getattr(reduce, "__name__", "callable")
    if callable(reduce) and not isinstance(reduce, str):
        out = reduce(tensor)
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != tensor.shape[0]:
            raise CaptureValueError(
                f"layer {name!r}: the `reduce` callable must return a tensor [B, ...] with B = {tensor.shape[0]} "
                f"(got {type(out).__name__} {tuple(out.shape) if isinstance(out, Tensor) else ''})"
            )
        return out.detach().to(dtype=dtype, copy=True).reshape(out.shape[0], -1), how
    if how == "cls" and tensor.dim() != 3:
        how = "auto"
    if how == "auto":
        if tensor.dim() <= 2 or tensor[0].numel() <= AUTO_FLATTEN_MAX:
            how = "flatten"
        elif tensor.dim() in (4, 5):
            return _grid_pool(tensor.to(dtype))
        else:
            how = "mean"
    if how == "mean" and tensor.dim() > 2:
        dims = (1,) if tensor.dim() == 3 else tuple(range(2, tensor.dim()))
        return tensor.to(dtype).mean(dim=dims), "mean"
    if how == "cls":
        return tensor[:, 0].to(dtype=dtype, copy=True), "cls"
    # copy=True: an in-place op later in the forward (`x += residual`) must not change what was captured.
    return tensor.to(dtype=dtype, copy=True).reshape(tensor.shape[0], -1), "flatten"


def _grid_pool(tensor: Tensor) -> tuple[Tensor, str]:
    """Average-pool a [B, C, *spatial] map to the largest s x s (x s) grid with C * s^d <= AUTO_POOL_MAX."""
    channels, spatial = tensor.shape[1], tensor.shape[2:]
    side = max(1, int((AUTO_POOL_MAX / max(channels, 1)) ** (1 / len(spatial)) + 1e-9))
    size = tuple(min(side, s) for s in spatial)
    if all(s == 1 for s in size):
        return tensor.mean(dim=tuple(range(2, tensor.dim()))), "mean"
    pool = (
        torch.nn.functional.adaptive_avg_pool2d
        if len(spatial) == 2
        else torch.nn.functional.adaptive_avg_pool3d
    )
    pooled = pool(tensor, size)  # type: ignore[arg-type]
    return pooled.reshape(tensor.shape[0], -1), "pool" + "x".join(map(str, size))


def flatten_output(output: Any, name: str = "output") -> Tensor:
    """``reduce_output(output, "flatten", name)``: a detached [B, D] float copy, D the per-sample values.

    >>> flatten_output(torch.ones(4, 3, 2, 2)).shape
    torch.Size([4, 12])
    """
    return reduce_output(output, "flatten", name)[0]


def check_reduce(reduce: Any) -> None:
    """Validate ``reduce``: a name of :data:`REDUCTIONS`, a callable, or a dict layer name -> either.

    Raises:
        TypeError: another type.
        ValueError: an unknown name.

    >>> check_reduce({"layer1.0": "mean", "fc": "flatten"})
    """
    if isinstance(reduce, Mapping):
        for value in reduce.values():
            check_reduce(value)
        return
    if isinstance(reduce, str):
        if reduce not in REDUCTIONS:
            raise ValueError(
                f"`reduce` must be one of {', '.join(map(repr, REDUCTIONS))} or a callable (got {reduce!r})"
            )
        return
    if not callable(reduce):
        raise TypeError(f"`reduce` must be a str, a callable or a dict of them (got {type(reduce).__name__})")


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


def _resolve(model: nn.Module, name: str) -> tuple[str, nn.Module, int | None, tuple[str, ...]]:
    """Map a requested layer name to (canonical name, module to hook, call index or None, selectors)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"`layers` entries must be non-empty module names (got {name!r})")
    raw, normalized = _named_modules_table(model)
    base, selectors = _split_selectors(name)
    call: int | None = None
    if base not in raw and normalize_name(base) not in normalized:
        head, sep, tail = base.rpartition(":")
        if sep and tail.isdigit():
            base, call = head, int(tail)
    if base in raw:
        return normalize_name(base), _unwrap(raw[base]), call, selectors
    matches = normalized.get(normalize_name(base), [])
    distinct = {id(_unwrap(module)): _unwrap(module) for _, module in matches}
    if not distinct:
        raise _unknown_name_error(name, sorted(normalized), type(model).__name__)
    if len(distinct) > 1:
        raise ValueError(
            f"`layers` name {name!r} is ambiguous after removing wrapper prefixes: it matches "
            f"{', '.join(repr(raw_name) for raw_name, _ in matches)}. Pass the full name"
        )
    return normalize_name(base), next(iter(distinct.values())), call, selectors


def _label(name: str, call: int | None, selectors: tuple[str, ...]) -> str:
    return (name if call is None else f"{name}:{call}") + "".join(f"[{s}]" for s in selectors)


class ActivationCapture:
    """Record the outputs of named modules during forward passes, with hooks that live only while attached.

    Use it as a context manager: hooks are registered on ``__enter__`` and removed on ``__exit__``, also
    when the forward raises. Each :meth:`forward` call runs one batch; every hooked output is reduced at
    once (``reduce``, see the module docstring) and written into its layer's [N, D_l] buffer when
    ``num_rows`` is given (else the batches are concatenated at the end); :meth:`activations` returns them.

    Args:
        model (nn.Module): the model whose modules are hooked.
        layers (Sequence[str]): module names (wrapper prefixes optional, ``"name:i"`` for the i-th call
            of a module that runs several times per forward, ``"name[key]"`` to select from a tuple or
            dict output).
        reduce (str | Callable | Mapping, optional): the reduction of every layer, or a dict layer name ->
            reduction (layers not in it get ``"auto"``). Default: ``"auto"``.
        num_rows (int, optional): N, the rows all forward batches add up to; buffers are allocated once.
            Default: None.
        rows (Tensor, optional): [N] long row indices kept from every output (the probe nodes of a graph
            whose forward returns all nodes); the forward then runs once. Default: None (all rows).

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

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        reduce: Reduce | Mapping[str, Reduce] = "auto",
        num_rows: int | None = None,
        rows: Tensor | None = None,
    ) -> None:
        if isinstance(layers, str) or not isinstance(layers, Sequence):
            raise TypeError(f"`layers` must be a sequence of module names (got {type(layers).__name__})")
        if len(layers) == 0:
            raise ValueError("`layers` must name at least one module (got an empty sequence)")
        check_reduce(reduce)
        self.model = model
        self._specs = [_resolve(model, name) for name in layers]
        seen: set[tuple[int, int | None, tuple[str, ...]]] = set()
        for (_, module, call, selectors), requested in zip(self._specs, layers):
            if (id(module), call, selectors) in seen:
                raise ValueError(f"`layers` lists the same layer twice (got {requested!r} again)")
            seen.add((id(module), call, selectors))
        self._modules: dict[int, nn.Module] = {id(module): module for _, module, _, _ in self._specs}
        self._reduce = reduce
        self._num_rows = num_rows
        self._rows = rows
        self._handles: list[RemovableHandle] = []
        self._current: dict[int, list[Any]] = {}
        self._keys: list[str] | None = None
        self._store: dict[str, list[Tensor]] = {}
        self._buffers: dict[str, Tensor] = {}
        self._filled = 0
        self.reductions: dict[str, str] = {}

    @property
    def names(self) -> list[str]:
        """The requested layers, with wrapper prefixes removed (before per-call expansion)."""
        return [_label(name, call, sel) for name, _, call, sel in self._specs]

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
            # Reduce at once, so that the full output of a conv map or token sequence is not kept alive
            # until the forward ends: the probe pass holds one reduced block per layer and batch.
            calls = self._current.setdefault(key, [])
            calls.append(self._reduce_call(key, len(calls), output))

        return hook

    def _reduce_call(self, key: int, call: int, output: Any) -> dict[int, tuple[Tensor, str]]:
        """Reduced blocks of one call of one module, for every spec (by index) that wants this call."""
        done: dict[int, tuple[Tensor, str]] = {}
        for index, (name, module, want, selectors) in enumerate(self._specs):
            if id(module) != key or (want is not None and want != call):
                continue
            label = _label(name, want, selectors)
            selected = _select_output(output, selectors, label)
            if self._rows is not None:
                tensor = _first_tensor(selected)
                if tensor is not None and tensor.dim() > 0:
                    if tensor.shape[0] <= int(self._rows.max()):
                        raise CaptureError(
                            f"layer {label!r} output has {tensor.shape[0]} rows, fewer than the probe's node "
                            f"indices need ({int(self._rows.max()) + 1})"
                        )
                    selected = tensor.index_select(0, self._rows.to(tensor.device))
            reduce = self._reduce.get(label, "auto") if isinstance(self._reduce, Mapping) else self._reduce
            done[index] = reduce_output(selected, reduce, label)
        return done

    def forward(self, fn: Callable[[], Any], batch_size: int | None = None) -> Any:
        """Run one forward batch through ``fn`` and record the hooked outputs.

        Args:
            fn (Callable[[], Any]): runs the model on one batch.
            batch_size (int, optional): rows every captured output must have. Default: None (unchecked).

        Returns:
            Any: what ``fn`` returned.

        Raises:
            RuntimeError: the capture is not attached.
            CaptureError: a hooked module did not run, returned no float tensor, or rows that do not
                match ``batch_size``.
        """
        if not self._handles:
            raise RuntimeError("ActivationCapture.forward needs attached hooks: use `with capture:`")
        self._current = {}
        try:
            result = fn()
            self._collect(batch_size if self._rows is None else len(self._rows))
        finally:
            self._current = {}
        return result

    def _collect(self, batch_size: int | None) -> None:
        blocks: dict[str, Tensor] = {}
        for index, (name, module, call, selectors) in enumerate(self._specs):
            calls = self._current.get(id(module), [])
            if not calls:
                raise CaptureError(
                    f"layer {_label(name, call, selectors)!r} did not run during the forward pass: choose "
                    "modules that the model's forward calls"
                )
            if call is not None:
                if call >= len(calls):
                    raise CaptureError(
                        f"layer '{name}:{call}' asks for call {call}, but {name!r} ran {len(calls)} time(s)"
                    )
                chosen: list[tuple[int | None, tuple[Tensor, str]]] = [(call, calls[call][index])]
            else:
                chosen = [(None if len(calls) == 1 else i, found[index]) for i, found in enumerate(calls)]
            for i, (block, how) in chosen:
                label = _label(name, i, selectors)
                blocks[label] = block
                self.reductions[label] = how
        for label, block in blocks.items():
            if batch_size is not None and block.shape[0] != batch_size:
                raise CaptureValueError(
                    f"layer {label!r} output has {block.shape[0]} rows for a batch of {batch_size} samples: "
                    "capture needs dim 0 of every output to be the sample dim"
                )
        keys = list(blocks)
        if self._keys is None:
            self._keys = keys
            self._store = {key: [] for key in keys}
        elif keys != self._keys:
            raise CaptureError(
                f"the hooked modules ran a different number of times in this batch (layers {keys}) "
                f"than in the first one (layers {self._keys})"
            )
        rows = next(iter(blocks.values())).shape[0]
        for label, block in blocks.items():
            if self._num_rows is None:
                self._store[label].append(block)
                continue
            buffer = self._buffers.get(label)
            if buffer is None:
                buffer = self._buffers[label] = block.new_empty((self._num_rows, block.shape[1]))
            if buffer.shape[1] != block.shape[1] or self._filled + rows > self._num_rows:
                raise CaptureError(
                    f"layer {label!r}: a batch of shape {tuple(block.shape)} does not fit the [N, D] = "
                    f"{tuple(buffer.shape)} buffer at row {self._filled}"
                )
            buffer[self._filled : self._filled + rows] = block
        self._filled += rows

    def activations(self) -> dict[str, Tensor]:
        """The recorded layers in the requested order, each [N, D_l] over all batches so far.

        Returns:
            dict[str, Tensor]: layer name -> [N, D_l] float32 (or float64) activations.

        Raises:
            CaptureError: with ``num_rows``, the batches did not add up to N rows.
        """
        if self._num_rows is not None and self._keys is not None:
            if self._filled != self._num_rows:
                raise CaptureError(
                    f"the forward batches gave {self._filled} rows, not the {self._num_rows} expected"
                )
            return {key: self._buffers[key] for key in self._keys}
        return {
            key: torch.cat(blocks) if len(blocks) > 1 else blocks[0] for key, blocks in self._store.items()
        }


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
    return _unwrap(module) is not module


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
        first_in, first_out = _first_tensor(args), _first_tensor(output)
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
            child = _unwrap(child)
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
    node = _unwrap(model)

    def running_children(module: nn.Module) -> list[nn.Module]:
        kids = []
        for child in module.children():
            child = _unwrap(child)
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
    wanted = {id(_resolve(model, name)[1]) for name in names}
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

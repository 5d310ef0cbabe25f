"""Capture layer activations with temporary forward hooks: layer names, output selection, buffers.

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

Which layers are captured by default is :mod:`lightning_ricci.layers`; how each output becomes a
[B, D_l] block is :mod:`lightning_ricci.reduce`. :class:`ActivationCapture` runs probe batches itself
(:meth:`ActivationCapture.forward`) or records batches that someone else runs (``open_batch`` /
``close_batch``: the validation loop, see :mod:`lightning_ricci.stream`).

This module needs only torch.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import Self

from lightning_ricci.reduce import (
    CaptureError,
    CaptureTypeError,
    CaptureValueError,
    Reduce,
    check_reduce,
    first_tensor,
    reduce_output,
)

__all__ = [
    "WRAPPER_PREFIXES",
    "ActivationCapture",
    "CaptureError",
    "CaptureTypeError",
    "CaptureValueError",
    "inner_module",
    "normalize_name",
    "resolve_layer",
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


def inner_module(module: nn.Module) -> nn.Module:
    """Follow wrapper modules (compile, checkpoint, FSDP1, Fabric, DDP) to the module that computes.

    >>> net = nn.Linear(2, 2)
    >>> inner_module(nn.DataParallel(net)) is net
    True
    """
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    while True:
        children = module._modules
        inner = next((children[c] for c in _INNER_CHILDREN if children.get(c) is not None), None)
        if inner is None and isinstance(module, parallel):
            inner = children.get("module")
        if inner is None:
            return module
        module = inner


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


def resolve_layer(model: nn.Module, name: str) -> tuple[str, nn.Module, int | None, tuple[str, ...]]:
    """Map a requested layer name to (canonical name, module to hook, call index or None, selectors).

    Raises:
        ValueError: an empty, unknown (the message lists the modules that exist) or ambiguous name.

    >>> name, module, call, selectors = resolve_layer(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), "1:0[0]")
    >>> name, type(module).__name__, call, selectors
    ('1', 'ReLU', 0, ('0',))
    """
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
        return normalize_name(base), inner_module(raw[base]), call, selectors
    matches = normalized.get(normalize_name(base), [])
    distinct = {id(inner_module(module)): inner_module(module) for _, module in matches}
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
        self._specs = [resolve_layer(model, name) for name in layers]
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
        # Batches run by someone else (open_batch / close_batch): the hooks record only while a batch is
        # open, keep only its `_keep` rows, and store errors instead of raising inside that forward.
        self._open = True
        self._keep: Tensor | None = None
        self._expect_rows: int | None = None
        self._hook_error: CaptureError | None = None
        self._written: Tensor | None = None
        self.reductions: dict[str, str] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        #: Seconds spent in the hooks of batches recorded with open_batch / close_batch.
        self.hook_seconds = 0.0

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
            if not self._open:
                return
            calls = self._current.setdefault(key, [])
            if self._keep is None:
                calls.append(self._reduce_call(key, len(calls), output))
                return
            start = time.perf_counter()
            try:  # a forward we do not own: never raise into it
                calls.append(self._reduce_call(key, len(calls), output))
            except Exception as err:  # noqa: BLE001 - reported by close_batch
                if self._hook_error is None:
                    self._hook_error = err if isinstance(err, CaptureError) else CaptureError(str(err))
            self.hook_seconds += time.perf_counter() - start

        return hook

    def _reduce_call(self, key: int, call: int, output: Any) -> dict[int, tuple[Tensor, str]]:
        """Reduced blocks of one call of one module, for every spec (by index) that wants this call."""
        done: dict[int, tuple[Tensor, str]] = {}
        for index, (name, module, want, selectors) in enumerate(self._specs):
            if id(module) != key or (want is not None and want != call):
                continue
            label = _label(name, want, selectors)
            selected = _select_output(output, selectors, label)
            tensor = first_tensor(selected)
            if tensor is not None:
                self.dtypes[label] = tensor.dtype
            if self._keep is not None:
                if tensor is None or tensor.dim() == 0 or tensor.shape[0] != self._expect_rows:
                    shape = None if tensor is None else tuple(tensor.shape)
                    raise CaptureValueError(
                        f"layer {label!r} output has shape {shape} for a batch of {self._expect_rows} samples: "
                        "capture needs dim 0 of every output to be the sample dim"
                    )
                if self._keep.numel() != self._expect_rows:  # (all rows, in order: no copy)
                    selected = tensor.index_select(0, self._keep.to(tensor.device))
                else:
                    selected = tensor
            elif self._rows is not None and tensor is not None and tensor.dim() > 0:
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

    def open_batch(self, keep: Tensor, batch_rows: int) -> None:
        """Record the next forward, run by someone else (a validation step), until :meth:`close_batch`.

        Between batches the attached hooks record nothing. Inside, they keep the ``keep`` rows of every
        output and never raise into that forward: a problem is reported by :meth:`close_batch`.

        Args:
            keep (Tensor): [M] long rows of the batch to keep.
            batch_rows (int): the batch's samples, the dim 0 every hooked output must have.
        """
        self._open, self._keep, self._expect_rows = True, keep, batch_rows
        self._current, self._hook_error = {}, None

    def close_batch(self, positions: Tensor) -> None:
        """Store the batch opened by :meth:`open_batch` at rows ``positions`` ([M] long) of the buffers.

        Raises:
            CaptureError: a hooked module did not run (or ran another number of times than in the
                first batch), or its output was unusable. Nothing of this batch is stored then.
        """
        try:
            if self._hook_error is not None:
                raise self._hook_error
            assert self._keep is not None
            self._collect(int(self._keep.numel()), positions)
        finally:
            self._open, self._keep, self._current, self._hook_error = False, None, {}, None

    def pause(self) -> None:
        """Let the attached hooks record nothing until :meth:`open_batch`."""
        self._open, self._keep, self._current = False, None, {}

    @property
    def written(self) -> Tensor:
        """[N] bool: the buffer rows written so far (needs ``num_rows``)."""
        if self._num_rows is None:
            raise RuntimeError("ActivationCapture.written needs `num_rows`")
        return self._written if self._written is not None else torch.zeros(self._num_rows, dtype=torch.bool)

    def _collect(self, batch_size: int | None, positions: Tensor | None = None) -> None:
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
        if self._num_rows is None:
            for label, block in blocks.items():
                self._store[label].append(block)
            self._filled += rows
            return
        if positions is None:
            positions = torch.arange(self._filled, self._filled + rows)
        if positions.numel() != rows or (rows and int(positions.max()) >= self._num_rows):
            raise CaptureError(
                f"a batch of {rows} rows does not fit rows {positions.tolist()[:8]} of the N = {self._num_rows} buffers"
            )
        for label, block in blocks.items():
            buffer = self._buffers.get(label)
            if buffer is not None and buffer.shape[1] != block.shape[1]:
                raise CaptureError(
                    f"layer {label!r}: a batch of shape {tuple(block.shape)} does not fit the [N, D] = "
                    f"{tuple(buffer.shape)} buffer"
                )
        for label, block in blocks.items():
            buffer = self._buffers.get(label)
            if buffer is None:
                buffer = self._buffers[label] = block.new_empty((self._num_rows, block.shape[1]))
            buffer.index_copy_(0, positions.to(buffer.device), block.to(buffer.dtype))
        written = self.written.clone()
        written[positions] = True
        self._written = written
        self._filled = int(written.sum())

    def activations(self, partial: bool = False) -> dict[str, Tensor]:
        """The recorded layers in the requested order, each [N, D_l] over all batches so far.

        Args:
            partial (bool, optional): with ``num_rows``, return the buffers also when some rows are not
                written yet (:attr:`written` says which are; the others hold garbage). Default: False.

        Returns:
            dict[str, Tensor]: layer name -> [N, D_l] float32 (or float64) activations.

        Raises:
            CaptureError: with ``num_rows``, the batches did not add up to N rows (unless ``partial``).
        """
        if self._num_rows is not None and self._keys is not None:
            if self._filled != self._num_rows and not partial:
                raise CaptureError(
                    f"the forward batches gave {self._filled} rows, not the {self._num_rows} expected"
                )
            return {key: self._buffers[key] for key in self._keys}
        return {
            key: torch.cat(blocks) if len(blocks) > 1 else blocks[0] for key, blocks in self._store.items()
        }

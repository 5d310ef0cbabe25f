"""Probes: the fixed set of points a measurement feeds the model, built from a batch of any kind.

Shape symbols: N probe points.

:func:`make_probe` takes a tensor [N, ...]; a tuple ``(inputs, labels, ...)``; a dict batch (the input
under ``input_key``, by default the first of :data:`INPUT_KEYS` present, the labels under ``label_key``,
by default the first of :data:`LABEL_KEYS`); anything with ``batch_to_input(batch)``; or a graph (a
``torch_geometric.data.Data``, or any object with ``x``, ``edge_index`` and ``num_nodes``): its forward
runs once on the whole graph and the probe points are the nodes of the ``node_mask`` attribute
(``"val_mask"`` by default, all nodes where the graph has none). Integer labels [N] found this way go to
``ricci_flow(labels=...)``. :func:`probe_from_dataset` is the default probe of the monitor: a seeded
sample of a dataset. :func:`default_forward` is how a probe batch is fed to the model.

This module needs only torch.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from lightning_ricci.reduce import first_tensor

__all__ = [
    "INPUT_KEYS",
    "LABEL_KEYS",
    "ForwardFn",
    "Probe",
    "default_forward",
    "is_graph",
    "make_probe",
    "probe_from_dataset",
]

#: Dict-batch keys tried, in order, for the model input when ``input_key`` is not given.
INPUT_KEYS = ("x", "input", "inputs", "input_ids", "pixel_values", "image", "images", "features", "data")
#: Dict-batch keys tried, in order, for the labels when ``label_key`` is not given.
LABEL_KEYS = ("y", "label", "labels", "target", "targets", "class", "classes")

ForwardFn = Callable[[nn.Module, Any], Any]


def is_graph(obj: Any) -> bool:
    """Whether ``obj`` is a graph probe: an object (a PyG ``Data``) with tensors ``x`` and ``edge_index``.

    >>> is_graph(torch.zeros(3, 2)), is_graph(type("G", (), {"x": torch.zeros(3, 2), "edge_index": torch.zeros(2, 0)})())
    (False, True)
    """
    return (
        not isinstance(obj, (Tensor, Mapping, tuple, list))
        and isinstance(getattr(obj, "edge_index", None), Tensor)
        and isinstance(getattr(obj, "x", None), Tensor)
    )


def _as_labels(value: Any, num_points: int) -> Tensor | None:
    """Integer class ids [N] (a float tensor of whole numbers counts); anything else: no labels."""
    if not isinstance(value, Tensor) or value.dim() != 1 or value.shape[0] != num_points:
        return None
    if value.is_floating_point():
        if not bool((value == value.round()).all()) or bool((value < 0).any()):
            return None
        return value.long()
    if value.dtype == torch.bool or value.is_complex():
        return value.long() if value.dtype == torch.bool else None
    return value.long() if bool((value >= 0).all()) else None


@dataclasses.dataclass
class Probe:
    """A probe set: what the model is fed, how many points it has, their labels, and how to chunk it.

    Build it with :func:`make_probe`.

    Attributes:
        batch (Any): the whole probe as a batch: a tensor, tuple, dict or graph.
        num_points (int): N.
        labels (Tensor | None): [N] long class ids, or None.
        nodes (Tensor | None): [N] long node indices of a graph probe, else None.
        input_key (str | None): the dict key of the model input.
        batch_to_input (Callable | None): the callable that turns a batch into the model input.
    """

    batch: Any
    num_points: int
    labels: Tensor | None = None
    nodes: Tensor | None = None
    input_key: str | None = None
    batch_to_input: Callable[[Any], Any] | None = None

    @property
    def is_graph(self) -> bool:
        """Whether the probe is one graph whose forward runs once."""
        return self.nodes is not None

    def chunks(self, batch_size: int) -> Iterator[Any]:
        """The probe as batches of at most ``batch_size`` points (a graph: once, whole)."""
        if self.is_graph:
            yield self.batch
            return
        for start in range(0, self.num_points, batch_size):
            yield _per_point(
                self.batch, self.num_points, _rows_slice(start, min(start + batch_size, self.num_points))
            )

    def head(self, count: int) -> Any:
        """The first ``count`` points as one batch (a graph: whole)."""
        return next(self.chunks(count))

    def model_input(self, batch: Any) -> Any:
        """What the model is called with for one batch."""
        if self.batch_to_input is not None:
            return self.batch_to_input(batch)
        if self.is_graph:
            return batch
        if isinstance(batch, Mapping):
            return batch[self.input_key]
        if isinstance(batch, (tuple, list)):
            return batch[0]
        return batch

    def input_features(self, batch: Any, model_input: Any) -> Tensor:
        """The probe input of one batch (layer 0): the graph's node features at the probe nodes, or the
        model input's first tensor."""
        if self.is_graph:
            assert self.nodes is not None
            x = model_input.x if is_graph(model_input) else batch.x
            return cast(Tensor, x).index_select(0, self.nodes.to(x.device))
        tensor = first_tensor(model_input)
        if tensor is None:
            raise TypeError(
                f"the model input holds no tensor (got {type(model_input).__name__}); the probe input is "
                "layer 0: pass `input_key=` or a `batch_to_input` that returns one"
            )
        return tensor

    def rows(self, batch: Any) -> int:
        """The number of points in ``batch`` (a chunk of this probe, or a batch like it)."""
        tensor = first_tensor(self.model_input(batch)) if self.batch_to_input is None else None
        if tensor is None:
            tensor = first_tensor(batch)
        assert tensor is not None
        return int(tensor.shape[0])

    def graph_rows(self) -> int:
        """The nodes of a graph probe's graph: the rows of every per-node output of its forward."""
        return int(getattr(self.batch, "num_nodes", None) or self.batch.x.shape[0])

    def take(self, positions: Tensor) -> Probe:
        """The probe of the points at ``positions`` ([M] long, into 0..N-1), in that order (not for graphs).

        >>> sub = make_probe((torch.arange(12.0).view(6, 2), torch.arange(6))).take(torch.tensor([4, 1, 2]))
        >>> sub.num_points, sub.batch[0][:, 0].tolist(), sub.labels.tolist()
        (3, [8.0, 2.0, 4.0], [4, 1, 2])
        """
        if self.is_graph:
            raise ValueError("`positions`: a graph probe runs whole; it has no sub-probe")
        batch = _per_point(self.batch, self.num_points, lambda t: t.index_select(0, positions.to(t.device)))
        labels = (
            None if self.labels is None else self.labels.index_select(0, positions.to(self.labels.device))
        )
        return Probe(batch, int(positions.numel()), labels, None, self.input_key, self.batch_to_input)


def _rows_slice(start: int, stop: int) -> Callable[[Tensor], Tensor]:
    return lambda tensor: tensor[start:stop]


def _per_point(obj: Any, num_points: int, pick: Callable[[Tensor], Tensor]) -> Any:
    """``obj`` with ``pick`` applied to every tensor whose dim 0 is the N points (nested containers kept)."""
    if isinstance(obj, Tensor):
        return pick(obj) if obj.dim() > 0 and obj.shape[0] == num_points else obj
    if isinstance(obj, Mapping):
        return type(obj)({key: _per_point(value, num_points, pick) for key, value in obj.items()})  # type: ignore[call-arg]
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_per_point(value, num_points, pick) for value in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_per_point(value, num_points, pick) for value in obj)
    return obj


def make_probe(
    batch: Any,
    *,
    input_key: str | None = None,
    label_key: str | None = None,
    batch_to_input: Callable[[Any], Any] | None = None,
    node_mask: str | None = "val_mask",
    max_points: int | None = None,
    seed: int = 0,
    argument: str = "probe",
) -> Probe:
    """Build a :class:`Probe` from a batch of any supported kind (see the module docstring).

    Args:
        batch (Any): a tensor [N, ...], a tuple ``(inputs, labels, ...)``, a dict batch, a graph, or
            anything ``batch_to_input`` understands.
        input_key (str, optional): the dict key of the model input. Default: None (:data:`INPUT_KEYS`).
        label_key (str, optional): the dict key of the labels. Default: None (:data:`LABEL_KEYS`).
        batch_to_input (Callable, optional): batch -> model input. Default: None.
        node_mask (str, optional): for a graph, the boolean node attribute whose nodes are the probe
            points; ``None`` or a missing attribute: all nodes. Default: ``"val_mask"``.
        max_points (int, optional): for a graph, keep at most this many nodes (a seeded sample).
            Default: None.
        seed (int, optional): the seed of that sample. Default: 0.
        argument (str, optional): the argument name in error messages. Default: ``"probe"``.

    Returns:
        Probe: the probe.

    Raises:
        TypeError: an unsupported batch, or a dict without a known input key.
        ValueError: fewer than 3 points, or ``input_key`` / ``label_key`` not in the dict.

    >>> probe = make_probe({"x": torch.zeros(10, 3), "y": torch.arange(10) % 2})
    >>> probe.num_points, probe.input_key, probe.labels.tolist()[:4]
    (10, 'x', [0, 1, 0, 1])
    """
    labels: Tensor | None = None
    nodes: Tensor | None = None
    key: str | None = None
    if is_graph(batch):
        num_nodes = int(getattr(batch, "num_nodes", None) or batch.x.shape[0])
        mask = getattr(batch, node_mask, None) if node_mask else None
        if (
            isinstance(mask, Tensor)
            and mask.dtype == torch.bool
            and mask.numel() == num_nodes
            and bool(mask.any())
        ):
            nodes = mask.nonzero().flatten().cpu()
        else:
            nodes = torch.arange(num_nodes)
        if max_points is not None and nodes.numel() > max_points:
            generator = torch.Generator().manual_seed(seed)
            nodes = nodes[torch.randperm(nodes.numel(), generator=generator)[:max_points]].sort().values
        y = getattr(batch, "y", None)
        if isinstance(y, Tensor) and y.dim() == 1 and y.shape[0] == num_nodes:
            labels = _as_labels(y.index_select(0, nodes.to(y.device)).cpu(), nodes.numel())
        num_points = int(nodes.numel())
    elif isinstance(batch, Mapping):
        if input_key is not None and input_key not in batch:
            raise ValueError(
                f"`input_key` must be a key of the batch (got {input_key!r}; keys {list(batch)[:12]})"
            )
        if label_key is not None and label_key not in batch:
            raise ValueError(
                f"`label_key` must be a key of the batch (got {label_key!r}; keys {list(batch)[:12]})"
            )
        key = input_key or next((k for k in INPUT_KEYS if k in batch), None)
        if key is None and batch_to_input is None:
            raise TypeError(
                f"`{argument}` is a dict batch without a known input key (got keys {list(batch)[:12]}): pass "
                f"`input_key=` (and `label_key=`), or `batch_to_input=`"
            )
        first = first_tensor(batch[key]) if key is not None else first_tensor(batch)
        num_points = _num_points(first, argument)
        found_label = label_key or next((k for k in LABEL_KEYS if k in batch), None)
        if found_label is not None:
            labels = _as_labels(batch[found_label], num_points)
    elif isinstance(batch, (tuple, list)) and not isinstance(batch, Tensor):
        if len(batch) == 0:
            raise TypeError(
                f"`{argument}` must be a tensor [N, ...] or a tuple (inputs, labels) (got an empty {type(batch).__name__})"
            )
        first = batch[0] if batch_to_input is None else first_tensor(batch)
        if not isinstance(first, Tensor) and batch_to_input is None:
            raise TypeError(
                f"`{argument}` must be a tensor [N, ...] or a tuple (inputs, labels) whose first element is one "
                f"(got {type(first).__name__})"
            )
        num_points = _num_points(first, argument)
        if len(batch) > 1:
            labels = _as_labels(batch[1], num_points)
    elif isinstance(batch, Tensor):
        num_points = _num_points(batch, argument)
    elif batch_to_input is not None:
        num_points = _num_points(first_tensor(batch_to_input(batch)), argument)
    else:
        raise TypeError(
            f"`{argument}` must be a tensor [N, ...], a tuple (inputs, labels), a dict batch or a graph "
            f"(got {type(batch).__name__}); for other batches pass `batch_to_input=`"
        )
    return Probe(batch, num_points, labels, nodes, key, batch_to_input)


def _num_points(tensor: Any, argument: str) -> int:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"`{argument}` must hold a tensor [N, ...] of inputs (got {type(tensor).__name__})")
    if tensor.dim() == 0 or tensor.shape[0] < 3:
        raise ValueError(
            f"`{argument}` must hold at least 3 samples along dim 0 (got shape {tuple(tensor.shape)})"
        )
    return int(tensor.shape[0])


def probe_from_dataset(
    dataset: Any,
    collate: Callable[[list[Any]], Any],
    num_samples: int,
    seed: int,
    indices: Sequence[int] | None = None,
    among: int | None = None,
    **options: Any,
) -> tuple[Probe, list[int]]:
    """The default probe: a seeded sample of ``num_samples`` items of ``dataset`` (sorted indices),
    collated as one batch; or, when the dataset holds a graph, that graph with at most ``num_samples``
    nodes of its ``node_mask``. ``indices`` (restored from a checkpoint) win over the seed.

    Args:
        dataset (Any): a map-style dataset.
        collate (Callable): the dataloader's ``collate_fn``.
        num_samples (int): the probe size (capped by the dataset size).
        seed (int): the sample's seed.
        indices (Sequence[int], optional): the indices (graph: node indices) to use. Default: None.
        among (int, optional): draw the sample from the first ``among`` items first (the items a limited
            validation loop visits), and only the rest, if any, from the others. Default: None (the
            whole dataset).
        **options: passed to :func:`make_probe` (``input_key``, ``label_key``, ``batch_to_input``,
            ``node_mask``, ``argument``).

    Returns:
        tuple[Probe, list[int]]: the probe and its indices.

    Raises:
        ValueError: a dataset without ``len()``, or restored indices out of its range.

    >>> probe, indices = probe_from_dataset([(torch.tensor([float(i)]), i % 2) for i in range(10)],
    ...                                     torch.utils.data.default_collate, 4, seed=0)
    >>> probe.num_points, indices == sorted(indices)
    (4, True)
    """
    argument = options.pop("argument", "the validation batch")
    try:
        size = len(dataset)
    except TypeError:
        raise ValueError(
            f"the default probe cannot sample a {type(dataset).__name__} without `len()` (an IterableDataset); "
            "pass `probe=` explicitly"
        ) from None
    first = dataset[0]
    if is_graph(first):
        probe = make_probe(first, **options, max_points=num_samples, seed=seed, argument=argument)
        assert probe.nodes is not None
        if indices is not None:
            probe.nodes = torch.tensor(list(indices), dtype=torch.long)
            probe.num_points = len(indices)
        return probe, probe.nodes.tolist()
    if indices is None:
        generator = torch.Generator().manual_seed(seed)
        count = min(num_samples, size)
        if among is None or among >= size:
            chosen = torch.randperm(size, generator=generator)[:count]
        else:
            first = torch.randperm(among, generator=generator)[:count]
            rest = among + torch.randperm(size - among, generator=generator)[: count - first.numel()]
            chosen = torch.cat([first, rest])
        indices = chosen.sort().values.tolist()
    elif indices and max(indices) >= size:
        raise ValueError(
            f"the restored probe indices go up to {max(indices)}, but the dataset has {size} samples: resume "
            "with the same data, or pass `probe=`"
        )
    batch = collate([dataset[i] for i in indices])
    return make_probe(batch, **options, argument=argument), list(indices)


def default_forward(model: nn.Module, inputs: Any) -> Any:
    """``model(inputs)``; ``model(**inputs)`` for a dict; ``model(x, edge_index)`` for a graph when the
    model's ``forward`` takes two or more arguments, else ``model(graph)``.

    >>> default_forward(nn.Linear(2, 1), torch.zeros(3, 2)).shape
    torch.Size([3, 1])
    """
    if is_graph(inputs):
        try:
            params = inspect.signature(model.forward).parameters.values()
        except (TypeError, ValueError):
            params = []  # type: ignore[assignment]
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params):
            return model(inputs.x, inputs.edge_index)
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)

"""Per-layer activations saved to a ``.pt``/``.pth`` or ``.npz`` file, for the command line.

Shape symbols: N probe points, L layers (the input included), D_l features of layer l.

:func:`load_activations` reads the files ``python -m lightning_ricci`` (and ``lightning-ricci``) takes.
Every problem with a file's content is a ``ValueError`` whose message starts with the path.

This module needs only torch (and numpy, for ``.npz`` files).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["load_activations"]

_PT_SUFFIXES = (".pt", ".pth")


def _first_line(err: BaseException) -> str:
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    line = (found.group(1) if found else text).strip().splitlines()
    first = line[0].strip() if line else ""
    first = first.split(". ")[0]  # the first sentence
    first = first[:200] + ("..." if len(first) > 200 else "")
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _entries_pt(path: Path) -> list[tuple[str, Any]]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means "unreadable"
        raise ValueError(
            f"{path}: cannot be read by torch.load(weights_only=True) ({_first_line(err)}); save a list of "
            "tensors or a dict name -> tensor with torch.save (numpy arrays: use .npz)"
        ) from None
    if isinstance(obj, dict):
        return [(str(key), value) for key, value in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(str(i), value) for i, value in enumerate(obj)]
    raise ValueError(
        f"{path}: must hold a list/tuple of tensors or a dict name -> tensor (got {type(obj).__name__})"
    )


def _entries_npz(path: Path) -> list[tuple[str, Any]]:
    import numpy as np

    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: is not a .npz archive (got a file without a zip header)")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path}: cannot be read as a .npz archive ({_first_line(err)})") from None
    entries = []
    with archive:
        for key in archive.files:
            try:
                entries.append((key, archive[key]))
            except ValueError as err:
                if "allow_pickle" in str(err):
                    raise ValueError(f"{path}: layer {key!r} is not numeric (got dtype object)") from None
                raise ValueError(f"{path}: layer {key!r} cannot be read ({_first_line(err)})") from None
            except Exception as err:  # noqa: BLE001 - a corrupt member
                raise ValueError(f"{path}: layer {key!r} cannot be read ({_first_line(err)})") from None
    return entries


#: float64 holds every integer up to this magnitude exactly, and not every one beyond it.
_EXACT_INT = 2**53


def _exact_floats(where: str, array: Any) -> Tensor:
    """A numpy array of booleans or integers as float64, refusing integers that float64 would round."""
    import numpy as np

    if array.dtype.kind in "iu" and array.dtype.itemsize >= 8 and array.size:
        low, high = int(array.min()), int(array.max())
        if low < -_EXACT_INT or high > _EXACT_INT:
            raise ValueError(
                f"{where} holds integers beyond 2**53 in magnitude, which float64 would round, merging "
                f"distinct points (got values in [{low}, {high}]); rescale them or save floats"
            )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))


def _as_layer(path: Path, name: str, value: Any) -> Tensor:
    """One entry of the file as an [N, D] float32/float64 CPU tensor, or a ``ValueError`` naming it."""
    import numpy as np

    where = f"{path}: layer {name!r}"
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{where} is not numeric (got dtype {value.dtype})")
        if value.ndim == 0:
            raise ValueError(f"{where} must be an array [N, ...] (got a scalar)")
        if value.dtype.kind == "f" and value.dtype.itemsize > 8:  # long double: torch has no such dtype
            wide = value
            value = value.astype(np.float64)
            if bool(np.isfinite(wide).all()) and not bool(np.isfinite(value).all()):
                raise ValueError(f"{where} holds values beyond the range of float64 (got dtype {wide.dtype})")
        value = (
            _exact_floats(where, value)
            if value.dtype.kind in "biu"
            else torch.from_numpy(np.ascontiguousarray(value))
        )
    if not isinstance(value, Tensor):
        # ValueError, not TypeError: every problem with the file's content is a ValueError.
        raise ValueError(f"{where} is not a tensor or array (got {type(value).__name__})")  # noqa: TRY004
    if value.layout != torch.strided or value.is_nested:
        kind = "nested" if value.is_nested else "sparse"
        raise ValueError(
            f"{where} is a {kind} tensor (got layout {value.layout}); save a dense one (`tensor.to_dense()`)"
        )
    if value.is_quantized:
        raise ValueError(
            f"{where} is a quantized tensor (got dtype {value.dtype}); save `tensor.dequantize()`"
        )
    if value.device.type == "meta":
        raise ValueError(f"{where} holds no data (got a tensor on the meta device)")
    if value.is_complex():
        raise ValueError(f"{where} is not real-valued (got dtype {value.dtype})")
    if value.dim() == 0:
        raise ValueError(f"{where} must be an array [N, ...] (got a scalar)")
    if value.numel() == 0:
        raise ValueError(f"{where} is empty (got shape {tuple(value.shape)})")
    unreadable = ValueError(
        f"{where} has a dtype that cannot be read as real numbers (got {value.dtype}); save float32 or float64"
    )
    if value.is_floating_point():
        if value.dtype not in (torch.float32, torch.float64):
            try:
                value = value.float()  # float16, bfloat16 and the float8 formats: exact in float32
            except (RuntimeError, NotImplementedError, TypeError):
                raise unreadable from None
    else:
        try:
            array = value.detach().numpy()  # booleans and (unsigned) integers
        except (RuntimeError, TypeError):
            raise unreadable from None
        value = _exact_floats(where, array)
    flat: Tensor = value.detach().reshape(value.shape[0], -1)
    bad = int((~torch.isfinite(flat)).any(dim=1).sum())
    if bad:
        raise ValueError(f"{where} holds NaN or Inf (got them in {bad} of {flat.shape[0]} rows)")
    return flat


def load_activations(path: str | os.PathLike[str], layers: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Read per-layer activations of N probe points from a ``.pt``/``.pth`` or ``.npz`` file.

    * ``.pt``/``.pth`` (``torch.save``, read with ``weights_only=True``): a list or tuple of tensors
      (named ``"0"``, ``"1"``, ...) or a dict name -> tensor, in order.
    * ``.npz`` (``numpy.savez``): the arrays in file order, named by their keys (``arr_0``, ... for
      positional arrays).

    The first layer should be the network input, the output layer (if any) the last. Every array is
    [N, ...] with the same N and is flattened to [N, D_l]: a dense, real, finite CPU array. Integers and
    booleans become float64 (integers beyond 2**53 in magnitude, which float64 would round, are refused),
    half precision and the float8 formats float32 (both exactly).

    Args:
        path (str | PathLike): the file.
        layers (Sequence[str], optional): names of the layers to keep, in this order. Default: None (all).

    Returns:
        dict[str, Tensor]: layer name -> [N, D_l] float32/float64 tensor on the CPU.

    Raises:
        ValueError: the file is missing, of an unknown type, unreadable, empty or inconsistent (different
            N), holds too few (< 3) layers, or a layer that is non-numeric, complex, sparse, quantized,
            non-finite or holds integers beyond 2**53, or ``layers`` names a layer that is not in it.
            Every message starts with the path.

    >>> import tempfile, numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "acts.npz"
    >>> np.savez(path, x=np.zeros((10, 2)), h1=np.ones((10, 4)), out=np.ones(10))
    >>> {name: tuple(t.shape) for name, t in load_activations(path).items()}
    {'x': (10, 2), 'h1': (10, 4), 'out': (10, 1)}
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a .pt or .npz file")
    suffix = path.suffix.lower()
    if suffix in (*_PT_SUFFIXES, ".npz") and path.stat().st_size == 0:
        raise ValueError(f"{path}: is empty (got 0 bytes)")
    if suffix in _PT_SUFFIXES:
        entries = _entries_pt(path)
    elif suffix == ".npz":
        entries = _entries_npz(path)
    else:
        raise ValueError(f"{path}: unsupported file type (got suffix {suffix!r}; expected .pt, .pth or .npz)")
    if not entries:
        raise ValueError(
            f"{path}: holds no arrays (got an empty {'archive' if suffix == '.npz' else 'container'})"
        )
    names = [name for name, _ in entries]
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        missing = [name for name in layers if name not in names]
        if missing:
            raise ValueError(
                f"{path}: `layers` names layers that are not in the file (got {missing}); "
                f"the file holds {names}"
            )
        if len(set(layers)) != len(layers):
            raise ValueError(f"{path}: `layers` lists a layer twice (got {list(layers)})")
        table = dict(entries)
        entries = [(name, table[name]) for name in layers]
    out = {name: _as_layer(path, name, value) for name, value in entries}
    sizes = {name: t.shape[0] for name, t in out.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in sizes.items())
        raise ValueError(f"{path}: every layer must hold the same N points (got {listed})")
    if len(out) < 3:
        raise ValueError(
            f"{path}: needs at least 3 layers, the input and two more (got {len(out)}: {list(out)})"
        )
    return out

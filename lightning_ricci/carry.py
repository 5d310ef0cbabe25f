"""Failures and undefined values never win: the carry-forward bookkeeping of the monitor.

A logged key whose value at a measurement is undefined (NaN) or missing (the measurement failed) gets
the last valid value of the same key; before the key had one, a *placeholder* that is the worst value
for the direction the key is judged in:

* the direction is the ``mode`` of the ``EarlyStopping`` / ``ModelCheckpoint`` that monitors the key
  (:func:`monitored_modes`; the first one found if several do), else the key's natural direction
  (:func:`natural_mode`): lower is better for the coefficients (global, per k, local mean), the class
  mixing and normalized cut, the spread across k, and the unbounded per-layer totals; higher is better
  for the class modularity, the curvature gap, the share of negative local coefficients and the sign
  agreement across k;
* the placeholder (:func:`worst_value`) is the top of the key's range for ``"min"`` and the bottom for
  ``"max"``: ``[-1, 1]`` for coefficients, ``[0, 1]`` for shares, ``[-1/2, 1]`` for modularity,
  ``[0, C/2]`` for the normalized cut of C classes, ``[0, 2]`` for the spread; an unbounded key gets
  +-the largest float32 (finite, so that ``EarlyStopping(check_finite=True)`` does not stop on it).

So a carried value equals an earlier one, or is no better than any valid value: never an improvement.
:class:`Carry` also holds the patience of every ``EarlyStopping`` on a carried key for that check, so a
run of failed measurements never stops training by itself.

This module needs torch and lightning only for the ``EarlyStopping`` type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

__all__ = [
    "FLAGS",
    "UNBOUNDED_WORST",
    "Carry",
    "carried_message",
    "carry_forward",
    "key_family",
    "monitored_modes",
    "natural_mode",
    "worst_value",
]

Mode = Literal["min", "max"]

#: The flags logged beside the values (never carried).
FLAGS = ("ricci/excluded", "ricci/failed", "ricci/carried")
#: The placeholder magnitude of unbounded keys: the largest float32.
UNBOUNDED_WORST = float(torch.finfo(torch.float32).max)

# key family -> (bottom, top, natural direction); None: unbounded on that side.
_RANGES: dict[str, tuple[float | None, float | None, Mode]] = {
    "ricci/coefficient": (-1.0, 1.0, "min"),
    "ricci/local_mean": (-1.0, 1.0, "min"),
    "ricci/local_negative_share": (0.0, 1.0, "max"),
    "ricci/k/coefficient": (-1.0, 1.0, "min"),
    "ricci/k/spread": (0.0, 2.0, "min"),
    "ricci/k/sign_agreement": (0.0, 1.0, "max"),
    "ricci/class/modularity": (-0.5, 1.0, "max"),
    "ricci/class/normalized_cut": (0.0, None, "min"),  # top: C / 2 for C classes
    "ricci/class/mixing": (0.0, 1.0, "min"),
    "ricci/class/curvature_gap": (None, None, "max"),
}
_PER_K = re.compile(r"^ricci/k/\d+/(.+)$")
_CLASS = re.compile(r"^(ricci/class/[a-z_]+)/.+$")


def key_family(key: str) -> str:
    """The key without its layer or k: ``ricci/class/modularity/net.3`` -> ``ricci/class/modularity``.

    >>> key_family("ricci/class/mixing/net.3"), key_family("ricci/k/30/coefficient"), key_family("ricci/coefficient")
    ('ricci/class/mixing', 'ricci/k/coefficient', 'ricci/coefficient')
    """
    match = _PER_K.match(key)
    if match:
        return f"ricci/k/{match.group(1)}"
    match = _CLASS.match(key)
    return match.group(1) if match else key


def natural_mode(key: str) -> Mode:
    """The direction in which ``key`` is better when nobody monitors it (see the module docstring).

    >>> natural_mode("ricci/coefficient"), natural_mode("ricci/class/modularity/net.1"), natural_mode("ricci/curvature/x")
    ('min', 'max', 'min')
    """
    entry = _RANGES.get(key_family(key))
    return entry[2] if entry is not None else "min"


def worst_value(key: str, mode: Mode | None = None, num_classes: int | None = None) -> float:
    """The placeholder of ``key`` before it had a valid value: the worst value for ``mode``.

    Args:
        key (str): a logged key, without the monitor's ``log_prefix``.
        mode (str, optional): ``"min"`` (lower is better: the top of the range) or ``"max"`` (the
            bottom). Default: None (:func:`natural_mode`).
        num_classes (int, optional): the probe's number of classes C (the normalized cut lies in
            [0, C/2]). Default: None (unbounded above).

    Returns:
        float: a finite value no valid value of ``key`` is worse than.

    Raises:
        ValueError: ``mode`` is neither ``"min"`` nor ``"max"``.

    >>> worst_value("ricci/coefficient"), worst_value("ricci/class/modularity"), worst_value("ricci/class/modularity", "min")
    (1.0, -0.5, 1.0)
    >>> worst_value("ricci/class/normalized_cut", num_classes=4), worst_value("ricci/curvature/x", "max") < -1e38
    (2.0, True)
    """
    mode = natural_mode(key) if mode is None else mode
    if mode not in ("min", "max"):
        raise ValueError(f'`mode` must be "min" or "max" (got {mode!r})')
    low, high, _ = _RANGES.get(key_family(key), (None, None, "min"))
    if key_family(key) == "ricci/class/normalized_cut" and num_classes is not None:
        high = max(num_classes, 2) / 2
    if mode == "min":
        return UNBOUNDED_WORST if high is None else high
    return -UNBOUNDED_WORST if low is None else low


def monitored_modes(callbacks: Iterable[Any], log_prefix: str = "") -> dict[str, Mode]:
    """Key (without ``log_prefix``) -> ``mode`` of the ``EarlyStopping`` / ``ModelCheckpoint`` callbacks
    that monitor a key of this monitor (``log_prefix`` + key); the first one wins where several do.

    >>> monitored_modes([EarlyStopping(monitor="a/ricci/class/modularity", mode="max")], "a/")
    {'ricci/class/modularity': 'max'}
    """
    modes: dict[str, Mode] = {}
    for cb in callbacks:
        if not isinstance(cb, (EarlyStopping, ModelCheckpoint)):
            continue
        monitor, mode = getattr(cb, "monitor", None), getattr(cb, "mode", None)
        if isinstance(monitor, str) and monitor.startswith(log_prefix) and mode in ("min", "max"):
            modes.setdefault(monitor[len(log_prefix) :], mode)
    return modes


def carry_forward(
    values: Mapping[str, float],
    last_valid: Mapping[str, float],
    keys: Sequence[str] = (),
    modes: Mapping[str, Mode] | None = None,
    num_classes: int | None = None,
) -> tuple[dict[str, float], set[str]]:
    """Replace undefined values: a failed or undefined measurement never wins.

    Every key of ``values`` (and of ``keys``, the ones logged before, so none disappears when a
    measurement fails) whose value is not finite gets the last finite value of that key from
    ``last_valid``, or :func:`worst_value` for its mode in ``modes`` (else its natural mode) if it never
    had one.

    Args:
        values (Mapping[str, float]): this measurement's values (empty on failure).
        last_valid (Mapping[str, float]): the last finite value of every key.
        keys (Sequence[str], optional): further keys to log. Default: ``()``.
        modes (Mapping[str, str], optional): key -> ``"min"`` / ``"max"`` of its monitoring callbacks
            (:func:`monitored_modes`). Default: None.
        num_classes (int, optional): the probe's number of classes. Default: None.

    Returns:
        tuple[dict[str, float], set[str]]: the values to log, and the keys that were carried.

    >>> carry_forward({"ricci/coefficient": float("nan"), "ricci/excluded": 1.0}, {"ricci/coefficient": -0.4})
    ({'ricci/coefficient': -0.4, 'ricci/excluded': 1.0}, {'ricci/coefficient'})
    >>> carry_forward({"ricci/class/modularity": float("nan")}, {}, modes={"ricci/class/modularity": "min"})[0]
    {'ricci/class/modularity': 1.0}
    """
    modes = modes or {}
    logged: dict[str, float] = {}
    carried: set[str] = set()
    for key in [*values, *(k for k in keys if k not in values)]:
        value = values.get(key, math.nan)
        if math.isfinite(value):
            logged[key] = value
        else:
            logged[key] = last_valid.get(key, worst_value(key, modes.get(key), num_classes))
            carried.add(key)
    return logged, carried


def carried_message(carried: set[str], flag: str) -> str:
    """The warning for values undefined at a measurement that did not fail (``flag``: the prefixed
    ``ricci/carried`` key).

    >>> carried_message({"ricci/b", "ricci/a"}, "ricci/carried")[:52]
    'some values are undefined at this measurement (ricci'
    """
    names = ", ".join(sorted(carried)[:4]) + (", ..." if len(carried) > 4 else "")
    return (
        f"some values are undefined at this measurement ({names}); the last valid value of each is logged "
        f"instead, with {flag} = 1. Reported once."
    )


class Carry:
    """The state behind :func:`carry_forward` across measurements, and the patience holds.

    Attributes:
        last_valid (dict[str, float]): the last finite value of every key.
        logged_keys (list[str]): every key logged so far (logged again when a measurement fails).

    >>> carry = Carry()
    >>> carry.step({"ricci/coefficient": -0.3}, [])
    ({'ricci/coefficient': -0.3}, set())
    >>> carry.commit({"ricci/coefficient": -0.3}, ["ricci/coefficient"])
    >>> carry.step({}, [])
    ({'ricci/coefficient': -0.3}, {'ricci/coefficient'})
    """

    def __init__(self) -> None:
        self.last_valid: dict[str, float] = {}
        self.logged_keys: list[str] = []
        self._held: list[EarlyStopping] = []

    def step(
        self,
        values: Mapping[str, float],
        keys: Sequence[str],
        modes: Mapping[str, Mode] | None = None,
        num_classes: int | None = None,
    ) -> tuple[dict[str, float], set[str]]:
        """:func:`carry_forward` of ``values`` over ``keys`` and every key logged before."""
        every = [k for k in dict.fromkeys([*keys, *self.logged_keys]) if k not in FLAGS]
        return carry_forward(values, self.last_valid, every, modes, num_classes)

    def settle(
        self,
        values: Mapping[str, float],
        keys: Sequence[str],
        modes: Mapping[str, Mode] | None = None,
        num_classes: int | None = None,
        failed: bool = False,
    ) -> tuple[dict[str, float], set[str]]:
        """:meth:`step` on the values of ``values`` plus the flags: ``ricci/excluded`` (1.0 where
        ``values`` has no such flag), ``ricci/failed`` and ``ricci/carried``; returns what to log.

        >>> logged, carried = Carry().settle({"ricci/coefficient": float("nan")}, [], failed=False)
        >>> logged
        {'ricci/coefficient': 1.0, 'ricci/excluded': 1.0, 'ricci/failed': 0.0, 'ricci/carried': 1.0}
        """
        measured = {k: v for k, v in values.items() if k not in FLAGS}
        logged, carried = self.step(measured, keys, modes, num_classes)
        logged["ricci/excluded"] = values.get("ricci/excluded", 1.0)
        logged["ricci/failed"] = float(failed)
        logged["ricci/carried"] = float(bool(carried))
        return logged, carried

    def commit(self, measured: Mapping[str, float], logged: Iterable[str]) -> None:
        """Remember the finite values of a measurement (not the sanity check's; flags ignored) and the
        keys logged."""
        self.last_valid.update({k: v for k, v in measured.items() if math.isfinite(v) and k not in FLAGS})
        self.logged_keys = list(dict.fromkeys([*self.logged_keys, *(k for k in logged if k not in FLAGS)]))

    def hold(self, callbacks: Iterable[Any], monitored: set[str]) -> None:
        """Every ``EarlyStopping`` monitoring one of ``monitored`` (prefixed keys) does not count its
        coming check: its ``wait_count`` goes down by one now, the check adds it back (a carried value is
        never an improvement), and :meth:`release` restores it if the check did not run."""
        for cb in callbacks:
            if isinstance(cb, EarlyStopping) and cb.monitor in monitored:
                cb.wait_count -= 1
                self._held.append(cb)

    def release(self) -> None:
        """Give back the patience of holds whose check did not run (at the next validation run)."""
        for cb in self._held:
            cb.wait_count = max(cb.wait_count, 0)
        self._held = []

    def state_dict(self) -> dict[str, Any]:
        """The checkpointed part."""
        return {"last_valid": dict(self.last_valid), "logged_keys": list(self.logged_keys)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (missing entries: empty)."""
        self.last_valid = {str(k): float(v) for k, v in dict(state.get("last_valid", {})).items()}
        self.logged_keys = [str(k) for k in state.get("logged_keys", [])]

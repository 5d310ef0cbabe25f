"""Carry-forward bookkeeping: placeholders by direction, monitored modes, patience holds (no Trainer)."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lightning_ricci.carry import (
    UNBOUNDED_WORST,
    Carry,
    carry_forward,
    key_family,
    monitored_modes,
    natural_mode,
    worst_value,
)

NAN = math.nan


def test_carry_forward_replaces_only_undefined_values() -> None:
    logged, carried = carry_forward(
        {"ricci/coefficient": NAN, "ricci/local_mean": -0.2, "ricci/curvature/x": NAN},
        {"ricci/coefficient": -0.5, "ricci/local_mean": -0.9},
        keys=["ricci/geodesic_sum/x"],
    )
    big = float(torch.finfo(torch.float32).max)
    assert logged == {
        "ricci/coefficient": -0.5,
        "ricci/local_mean": -0.2,
        "ricci/curvature/x": big,
        "ricci/geodesic_sum/x": big,
    }
    assert carried == {"ricci/coefficient", "ricci/curvature/x", "ricci/geodesic_sum/x"}


@pytest.mark.parametrize(
    ("key", "mode", "expected"),
    [
        # natural directions (nobody monitors the key)
        ("ricci/coefficient", None, 1.0),
        ("ricci/local_mean", None, 1.0),
        ("ricci/class/mixing", None, 1.0),
        ("ricci/class/mixing/net.3", None, 1.0),
        ("ricci/class/modularity", None, -0.5),  # Newman modularity lies in [-1/2, 1]
        ("ricci/class/modularity/net.3", None, -0.5),
        ("ricci/class/curvature_gap", None, -UNBOUNDED_WORST),
        ("ricci/k/30/coefficient", None, 1.0),
        ("ricci/k/spread", None, 2.0),
        ("ricci/k/sign_agreement", None, 0.0),
        ("ricci/curvature/input", None, UNBOUNDED_WORST),
        # the monitoring callback's mode wins
        ("ricci/class/modularity", "min", 1.0),
        ("ricci/coefficient", "max", -1.0),
        ("ricci/geodesic_sum/h", "max", -UNBOUNDED_WORST),
    ],
)
def test_placeholder_is_the_worst_value_for_the_direction(
    key: str, mode: str | None, expected: float
) -> None:
    assert worst_value(key, mode) == expected  # type: ignore[arg-type]
    assert math.isfinite(worst_value(key, mode))  # type: ignore[arg-type]


def test_normalized_cut_range_grows_with_the_classes() -> None:
    # 1/2 sum over C classes of cut/vol, each term at most 1: the top is C/2 (a C-partite graph reaches it).
    assert worst_value("ricci/class/normalized_cut", num_classes=2) == 1.0
    assert worst_value("ricci/class/normalized_cut", num_classes=5) == 2.5
    assert worst_value("ricci/class/normalized_cut") == UNBOUNDED_WORST
    assert worst_value("ricci/class/normalized_cut", "max", num_classes=5) == 0.0
    with pytest.raises(ValueError, match="`mode`"):
        worst_value("ricci/coefficient", "up")  # type: ignore[arg-type]


def test_key_family_and_natural_mode() -> None:
    assert key_family("ricci/class/curvature_gap/block.2:1") == "ricci/class/curvature_gap"
    assert key_family("ricci/k/10/coefficient") == "ricci/k/coefficient"
    assert natural_mode("ricci/class/curvature_gap/x") == "max" and natural_mode("ricci/k/spread") == "min"


def test_monitored_modes_reads_early_stopping_and_checkpoint_with_prefix() -> None:
    callbacks = [
        EarlyStopping(monitor="a/ricci/class/modularity", mode="max"),
        ModelCheckpoint(monitor="a/ricci/coefficient", mode="min"),
        ModelCheckpoint(monitor="a/ricci/class/modularity", mode="min"),  # the first one found wins
        EarlyStopping(monitor="val_loss", mode="min"),
        EarlyStopping(monitor="ricci/local_mean", mode="max"),  # another monitor's (no prefix)
    ]
    assert monitored_modes(callbacks, "a/") == {"ricci/class/modularity": "max", "ricci/coefficient": "min"}
    assert monitored_modes(callbacks)["ricci/local_mean"] == "max"


def test_carry_uses_the_monitored_mode_then_the_last_valid_value() -> None:
    carry = Carry()
    modes = monitored_modes([EarlyStopping(monitor="ricci/class/modularity", mode="max")])
    logged, carried = carry.step({"ricci/class/modularity": NAN}, ["ricci/class/modularity"], modes)
    assert logged == {"ricci/class/modularity": -0.5} and carried == {"ricci/class/modularity"}
    carry.commit({"ricci/class/modularity": NAN}, logged)
    assert carry.last_valid == {}  # a placeholder is never a valid value
    carry.commit({"ricci/class/modularity": 0.31}, ["ricci/class/modularity", "ricci/failed"])
    logged, carried = carry.step({}, [], modes)  # a failed measurement: every key logged before
    assert logged == {"ricci/class/modularity": 0.31} and carried == {"ricci/class/modularity"}
    restored = Carry()
    restored.load_state_dict(carry.state_dict())
    assert restored.step({}, []) == (logged, carried)


def test_hold_and_release_patience() -> None:
    early = EarlyStopping(monitor="p/ricci/coefficient", patience=3)
    other = EarlyStopping(monitor="val_loss", patience=3)
    early.wait_count = other.wait_count = 2
    carry = Carry()
    carry.hold([early, other, ModelCheckpoint()], {"p/ricci/coefficient"})
    assert (early.wait_count, other.wait_count) == (1, 2)  # the coming check adds the 1 back
    early.wait_count += 1  # that check ran and saw no improvement
    carry.release()
    assert early.wait_count == 2
    early.wait_count = 0
    carry.hold([early], {"p/ricci/coefficient"})
    carry.release()  # the check did not run: no negative patience is left behind
    assert early.wait_count == 0

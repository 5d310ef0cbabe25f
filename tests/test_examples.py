"""Each example runs end to end with ``--fast``; what it prints is what its TensorBoard run holds.

The logged ``ricci/coefficient`` is finite by construction (a fallback value replaces an undefined
one), so the checks are on what can go wrong: no measurement failed, every validation epoch measured,
the printed final value and "excluded" note agree with the logged scalars, and the images and
histograms of a measurement carry the step of its scalars.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _scripts import run_example

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

EPOCHS = 2  # the examples' --fast runs


def _read_run(root: Path) -> event_accumulator.EventAccumulator:
    files = list(root.rglob("events.out.tfevents.*"))
    assert len(files) == 1, files
    run = event_accumulator.EventAccumulator(
        str(files[0]), size_guidance={"scalars": 0, "images": 0, "histograms": 0}
    )
    run.Reload()
    return run


@pytest.mark.parametrize("script", ["two_circles.py", "digits.py"])
def test_example_fast(script: str, tmp_path: Path) -> None:
    if script == "digits.py":
        pytest.importorskip("sklearn")
    completed = run_example(script, "--fast", "--out", str(tmp_path / "runs"))
    match = re.search(
        r"final ricci/coefficient: ([-+0-9.]+)( \(paper's rule undefined[^)]*\))? at epoch (\d+)",
        completed.stdout,
    )
    assert match is not None, completed.stdout
    run = _read_run(tmp_path / "runs")

    def scalars(tag: str) -> list[tuple[int, float]]:
        return [(event.step, event.value) for event in run.Scalars(tag)]

    failed, excluded, coefficient = (
        scalars("ricci/failed"),
        scalars("ricci/excluded"),
        scalars("ricci/coefficient"),
    )
    assert [value for _, value in failed] == [0.0] * EPOCHS  # one measurement per epoch, none failed
    steps = [step for step, _ in coefficient]
    assert [step for step, _ in failed] == [step for step, _ in excluded] == steps
    assert steps == sorted(set(steps))
    assert [step for step, _ in scalars("val_acc")] == steps  # measured at the end of each validation
    assert float(match.group(1)) == pytest.approx(coefficient[-1][1], abs=5e-5)
    assert int(match.group(3)) == EPOCHS - 1
    assert (match.group(2) is not None) == (excluded[-1][1] == 1.0)
    if script == "two_circles.py":
        count = re.search(r"\(ricci/excluded = 1\) in (\d+) of (\d+) evaluations", completed.stdout)
        assert count is not None, completed.stdout
        assert (int(count.group(1)), int(count.group(2))) == (sum(v == 1.0 for _, v in excluded), EPOCHS)
    # Figures and histograms belong to the measurement of the same step.
    tags = run.Tags()
    assert tags["images"] and tags["histograms"]
    for tag in tags["images"]:
        assert {event.step for event in run.Images(tag)} <= set(steps), tag
    for tag in tags["histograms"]:
        assert {event.step for event in run.Histograms(tag)} <= set(steps), tag

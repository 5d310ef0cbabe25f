"""Fixtures shared by the tests, and the ``slow`` marker.

A test is marked ``slow`` when it starts Python processes: when its code, a fixture it uses, a
function nested in them or a function of the same module they call refers to ``run_example``
(tests/_scripts.py), ``subprocess`` or ``multiprocessing``, or names a spawning DDP strategy.
``python -m pytest -m "not slow"`` is the quick inner loop; ``python -m pytest`` (CI) runs everything.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch

#: Names whose use means "starts a process": the example-script helper and the process modules.
PROCESS_NAMES = frozenset({"run_example", "subprocess", "multiprocessing", "mp"})
#: String constants that do: Lightning's spawning strategies.
PROCESS_STRINGS = frozenset({"ddp_spawn", "ddp_fork", "ddp_notebook"})


def _devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture(params=_devices())
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


def _plain(function: Any) -> types.FunctionType | None:
    """The plain function behind a test, fixture, method or decorated helper (None for anything else)."""
    function = getattr(function, "__func__", function)  # a bound method
    try:
        function = inspect.unwrap(function)
    except ValueError:  # a cycle of __wrapped__
        return None
    return function if isinstance(function, types.FunctionType) else None


def starts_processes(function: Callable[..., Any], seen: set[types.CodeType] | None = None) -> bool:
    """Whether ``function``, its nested functions or the functions of its module it calls start processes.

    >>> import subprocess
    >>> def spawns() -> None:
    ...     subprocess.run(["true"], check=True)
    >>> def calls_it() -> None:
    ...     spawns()
    >>> starts_processes(spawns), starts_processes(calls_it), starts_processes(_devices)
    (True, True, False)
    """
    seen = set() if seen is None else seen
    plain = _plain(function)
    if plain is None:
        return False
    module_globals = plain.__globals__
    stack = [plain.__code__]
    while stack:
        code = stack.pop()
        if code in seen:
            continue
        seen.add(code)
        if PROCESS_NAMES.intersection(code.co_names):
            return True
        for const in code.co_consts:
            if isinstance(const, str) and const in PROCESS_STRINGS:
                return True
            if isinstance(const, types.CodeType):
                stack.append(const)
        for name in code.co_names:
            helper = _plain(module_globals.get(name))
            if helper is not None and helper.__module__ == plain.__module__:
                stack.append(helper.__code__)
    return False


def _fixture_functions(item: pytest.Item) -> list[Any]:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return [definition.func for definitions in info.name2fixturedefs.values() for definition in definitions]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = pytest.mark.slow
    for item in items:
        if not isinstance(item, pytest.Function) or item.get_closest_marker("slow"):
            continue
        if any(starts_processes(function) for function in [item.obj, *_fixture_functions(item)]):
            item.add_marker(slow)

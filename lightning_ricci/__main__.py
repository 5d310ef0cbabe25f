"""Command line: the Ricci-flow coefficients of saved activations.

Shape symbols: N probe points, L layers (the input included).

Usage::

    python -m lightning_ricci ACTIVATIONS_FILE [--k K] [--convention {baptista,hehl}]
        [--curvature {forman,augmented_forman,approx_ollivier}] [--layers NAME ...] [--out DIR] [--json]

``ACTIVATIONS_FILE`` is a ``.pt``/``.pth`` (a list/tuple of tensors, or a dict name -> tensor) or a
``.npz`` holding one [N, ...] array per layer, the network input first (see
:func:`lightning_ricci.io.load_activations`). The coefficients are printed as a table (or as
JSON with ``--json``); ``--out DIR`` also writes ``summary.json`` and, if matplotlib is installed,
``flow.png`` and ``local.png`` (the command lists the files it wrote).
A progress bar (tqdm if installed) is shown on stderr for large probe sets (N >= 2000) or with
``--progress``. Bad input exits with status 2 and a message that names the file (or the ``--out``
path). The installed console script ``lightning-ricci`` is the same command.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import torch

from lightning_ricci.geometry import ricci_flow
from lightning_ricci.geometry._checks import check_int
from lightning_ricci.geometry.conventions import CONVENTIONS
from lightning_ricci.geometry.curvature import EDGE_CURVATURES
from lightning_ricci.geometry.result import RicciFlowResult
from lightning_ricci.io import load_activations
from lightning_ricci.pipeline import default_k
from lightning_ricci.scalars import scalars

#: Probe sizes from which the progress bar is on by default.
PROGRESS_MIN_POINTS = 2000


class _Progress:
    """Stage-level progress on stderr: a tqdm bar if tqdm is installed, else one line per stage."""

    def __init__(self, stages: Sequence[str], enabled: bool, stream: TextIO) -> None:
        self.enabled, self.stream, self.total = enabled, stream, len(stages)
        self.done = 0
        self.bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                self.bar = None
            else:
                self.bar = tqdm(total=self.total, file=stream, unit="stage", leave=True, dynamic_ncols=True)

    @contextmanager
    def stage(self, description: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.enabled:
            if self.bar is not None:
                self.bar.set_description(description)
            else:
                print(f"[{self.done + 1}/{self.total}] {description} ...", file=self.stream, flush=True)
        yield
        self.done += 1
        if self.enabled:
            if self.bar is not None:
                self.bar.update(1)
            else:
                print(
                    f"[{self.done}/{self.total}] {description}: done in {time.perf_counter() - start:.1f} s",
                    file=self.stream,
                    flush=True,
                )

    def advance(self, description: str) -> None:
        """Mark a stage that already ran as done."""
        with self.stage(description):
            pass

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _float(value: float) -> float | str:
    """A finite float as it is; NaN and +-Inf as the strings "nan", "inf", "-inf" (valid JSON; float() reads them)."""
    return value if math.isfinite(value) else str(value)


def summary(result: RicciFlowResult, names: Sequence[str], path: str = "") -> dict[str, Any]:
    """The coefficients of ``result`` as a JSON-ready dict.

    Non-finite numbers are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (strict JSON has no
    such numbers; ``float()`` reads the strings back).

    Args:
        result (RicciFlowResult): the result.
        names (Sequence[str]): the L layer names.
        path (str, optional): the file the activations came from. Default: ``""``.

    Returns:
        dict: file, settings, global/connected coefficients, exclusion, local mean and negative share,
        critical layer, per layer and per transition the quantities of the table, and under ``"logged"``
        the scalars the monitor logs for the same result (:func:`lightning_ricci.scalars.scalars`).

    >>> from lightning_ricci import ricci_flow
    >>> g = torch.Generator().manual_seed(0)
    >>> result = ricci_flow([torch.randn(30, 3, generator=g) for _ in range(3)], 4)
    >>> info = summary(result, ["input", "h1", "out"], "acts.npz")
    >>> info["num_points"], info["k"], [layer["name"] for layer in info["layers"]]
    (30, 4, ['input', 'h1', 'out'])
    >>> [(row["from"], row["to"]) for row in info["transitions"]]
    [('input', 'h1'), ('h1', 'out')]
    """
    logged = scalars(result, names)
    critical = result.critical_layer
    return {
        "file": path,
        "num_points": result.num_points,
        "num_layers": result.num_layers,
        "k": result.k,
        "convention": result.convention,
        "curvature": result.curvature_kind,
        "coefficient": _float(result.coefficient),
        "coefficient_connected": _float(result.coefficient_connected),
        "excluded": bool(result.excluded),
        "local_mean": _float(logged["ricci/local_mean"]),
        "local_negative_share": _float(logged["ricci/local_negative_share"]),
        "critical_layer": critical,
        "critical_transition": f"{names[critical]} -> {names[critical + 1]}" if critical >= 0 else None,
        "layers": [
            {
                "name": name,
                "curvature": _float(logged[f"ricci/curvature/{name}"]),
                "geodesic_sum": _float(logged[f"ricci/geodesic_sum/{name}"]),
                "components": int(result.num_components[i]),
            }
            for i, name in enumerate(names)
        ],
        "transitions": [
            {
                "from": names[t],
                "to": names[t + 1],
                "eta": _float(float(result.eta[t])),
                "eta_connected": _float(float(result.eta_connected[t])),
                "layer_coefficient": _float(float(result.layer_coefficient[t])),
            }
            for t in range(result.num_layers - 1)
        ],
        # What RicciFlowMonitor logs for this measurement (lightning_ricci.scalars.scalars), NaN where undefined.
        "logged": {key: _float(value) for key, value in logged.items()},
    }


def _fmt(value: float | str, spec: str = "+.4f") -> str:
    return value if isinstance(value, str) else format(value, spec)


def _fmt_sum(value: float | str) -> str:
    """Sums of curvature and hop counts: integers in full, anything else in 6 significant digits."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.0f}"
    return _fmt(value, ".6g")


def format_table(info: dict[str, Any], dims: Sequence[int] | None = None) -> str:
    """The human-readable table printed by the command line.

    Args:
        info (dict): a :func:`summary`.
        dims (Sequence[int], optional): the L layer widths D_l, for the ``dim`` column. Default: None.

    Returns:
        str: the table.

    >>> from lightning_ricci import ricci_flow
    >>> g = torch.Generator().manual_seed(0)
    >>> result = ricci_flow([torch.randn(30, 3, generator=g) for _ in range(3)], 4)
    >>> print(format_table(summary(result, ["input", "h1", "out"], "acts.npz")).splitlines()[0])
    acts.npz: 3 layers x 30 points, k=4, convention=baptista, curvature=forman
    """
    critical = info["critical_layer"]
    lines = [
        (
            f"{info['file']}: {info['num_layers']} layers x {info['num_points']} points, k={info['k']}, "
            f"convention={info['convention']}, curvature={info['curvature']}"
        ),
        "",
        (
            f"  global coefficient          {_fmt(info['coefficient'])}"
            + (
                "  (undefined: excluded by the convention's rule)"
                if isinstance(info["coefficient"], str)
                else ""
            )
        ),
        f"  connected-pairs coefficient {_fmt(info['coefficient_connected'])}",
        f"  excluded                    {'yes' if info['excluded'] else 'no'}",
        f"  local mean                  {_fmt(info['local_mean'])}",
        f"  local negative share        {_fmt(info['local_negative_share'], '.3f')}",
        (
            "  critical layer              "
            + (f"{critical} ({info['critical_transition']})" if critical >= 0 else "undefined")
        ),
        "",
    ]
    width = max(12, *(len(layer["name"]) for layer in info["layers"]))
    header = f"  {'layer':<{width}} {'dim':>6} {'components':>10} {'curvature':>14} {'geodesic sum':>16}"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for i, layer in enumerate(info["layers"]):
        dim = str(dims[i]) if dims is not None else ""
        lines.append(
            f"  {layer['name']:<{width}} {dim:>6} {layer['components']:>10} "
            f"{_fmt_sum(layer['curvature']):>14} {_fmt_sum(layer['geodesic_sum']):>16}"
        )
    lines.append("")
    twidth = max(16, *(len(f"{t['from']} -> {t['to']}") for t in info["transitions"]))
    header = f"  {'transition':<{twidth}} {'eta':>14} {'eta connected':>14} {'layer coef.':>12}"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for t, row in enumerate(info["transitions"]):
        mark = "  <- critical" if t == critical else ""
        label = f"{row['from']} -> {row['to']}"
        lines.append(
            f"  {label:<{twidth}} {_fmt_sum(row['eta']):>14} {_fmt_sum(row['eta_connected']):>14} "
            f"{_fmt(row['layer_coefficient']):>12}{mark}"
        )
    return "\n".join(lines)


#: The program name in messages when run as ``python -m lightning_ricci``.
PROG = "python -m lightning_ricci"


class _OutError(ValueError):
    """A problem with ``--out``: its message names that path, not the activations file."""


def _k_option(text: str) -> int:
    """``--k``: a decimal integer (the range is checked against N once the file is read)."""
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer (got {text!r})") from None


def _check_k(k: int, num_points: int) -> int:
    """``--k`` within ``[1, N - 1]``, with the same type rule as the geometry's ``k`` (no bool, any integer)."""
    k = check_int("--k", k)
    if not 1 <= k < num_points:
        raise ValueError(f"`--k` must be between 1 and N - 1 = {num_points - 1} (got {k})")
    return k


def _check_out(out: Path) -> None:
    """Fail before the measurement when ``--out`` cannot be a directory."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                what = "" if path == out else f" above it ({path})"
                raise _OutError(f"`--out` must name a directory (got {out}, an existing file{what})")
            return


def _labels(acts: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Take the entry ``name`` out of the loaded layers as [N] long class ids (the loader made it float)."""
    if name not in acts:
        raise ValueError(f"`--labels` names no entry of the file (got {name!r}; entries: {', '.join(acts)})")
    values = acts.pop(name)
    if values.shape[1] != 1:
        raise ValueError(
            f"`--labels` entry {name!r} must hold one value per point (got shape [N, {values.shape[1]}])"
        )
    values = values[:, 0]
    if not bool((values == values.round()).all()) or bool((values < 0).any()):
        raise ValueError(f"`--labels` entry {name!r} must hold non-negative integer class ids")
    return values.long()


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Ricci-flow coefficients (Baptista et al. 2024, Hehl et al. 2025) of per-layer "
        "activations saved to a .pt or .npz file (the network input first).",
    )
    parser.add_argument("file", metavar="ACTIVATIONS_FILE", help=".pt/.pth (list or dict of tensors) or .npz")
    parser.add_argument(
        "--k", type=_k_option, help="neighbours per point (default: 5%% of N, within [5, 50] and below N)"
    )
    parser.add_argument("--convention", choices=CONVENTIONS, default="baptista")
    parser.add_argument("--curvature", choices=EDGE_CURVATURES, default="forman")
    parser.add_argument(
        "--layers", nargs="+", metavar="NAME", help="layers to use, in order (names or comma-separated lists)"
    )
    parser.add_argument(
        "--labels",
        metavar="NAME",
        help="an entry of the file holding the [N] integer class ids of the points (not a layer): adds "
        "the class structure of every layer graph (modularity, normalized cut, mixing, curvature gap)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="directory to write summary.json and, with matplotlib, flow.png and local.png to",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"progress bar on stderr (default: on from N >= {PROGRESS_MIN_POINTS})",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run the command line; returns the exit status (0, or 2 for bad input).

    Args:
        argv (Sequence[str], optional): the arguments. Default: None (``sys.argv[1:]``).
        prog (str, optional): the program name in messages. Default: ``"python -m lightning_ricci"``.

    Returns:
        int: 0 on success, 2 for a bad file or option (with a message on stderr).

    >>> main(["no/such/acts.npz"])  # stderr: python -m lightning_ricci: error: no/such/acts.npz: no such file
    2
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    layers = None
    if args.layers:
        layers = [name for entry in args.layers for name in entry.split(",") if name]
        if args.labels is not None and args.labels not in layers:
            layers.append(args.labels)
    stages = ["load", "ricci_flow", *(["figures"] if args.out is not None else [])]
    started = time.perf_counter()
    written: list[Path] = []
    # With --progress the bar starts before loading; in the default (auto) mode N is known only after it.
    progress = _Progress(stages, True, sys.stderr) if args.progress else None
    try:
        try:
            if args.out is not None:
                _check_out(args.out)
            if progress is not None:
                with progress.stage(f"load {args.file}"):
                    acts = load_activations(args.file, layers)
            else:
                acts = load_activations(args.file, layers)
            labels = _labels(acts, args.labels) if args.labels is not None else None
            names, tensors = list(acts), list(acts.values())
            num_points = tensors[0].shape[0]
            if progress is None:
                progress = _Progress(
                    stages, args.progress is None and num_points >= PROGRESS_MIN_POINTS, sys.stderr
                )
                progress.advance(f"loaded {len(names)} layers x {num_points} points")
            if num_points < 2:
                raise ValueError(f"holds {num_points} point per layer; a kNN graph needs at least 2")
            k = _check_k(args.k, num_points) if args.k is not None else default_k(num_points)
            if any(t.dtype == torch.float64 for t in tensors):
                tensors = [t.double() for t in tensors]
            with progress.stage(f"ricci_flow on {len(names)} layers x {num_points} points (k={k})"):
                result = ricci_flow(
                    tensors, k, convention=args.convention, curvature=args.curvature, labels=labels
                )
            info = summary(result, names, str(args.file))
            if args.out is not None:
                with progress.stage(f"figures -> {args.out}"):
                    written = _write_outputs(args.out, result, names, info)
        finally:
            if progress is not None:
                progress.close()
    except (MemoryError, torch.cuda.OutOfMemoryError) as err:  # on the CPU too (torch >= 2.1)
        print(
            f"{parser.prog}: error: {args.file}: out of memory ({type(err).__name__}); "
            "try fewer points or layers, or a smaller --k",
            file=sys.stderr,
        )
        return 2
    except (ValueError, TypeError, OSError) as err:
        message = str(err)
        if not isinstance(err, _OutError) and not message.startswith(str(args.file)):
            message = f"{args.file}: {message}"
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    wrote = f"wrote {', '.join(str(path) for path in written)}" if written else ""
    if args.json:
        print(json.dumps(info, indent=1))
        if wrote:
            print(wrote, file=sys.stderr)  # stdout stays one JSON document
    else:
        print(format_table(info, [t.shape[1] for t in tensors]))
        if wrote:
            print(f"\n{wrote}")
        print(f"({time.perf_counter() - started:.1f} s)")
    return 0


def cli() -> int:
    """The ``lightning-ricci`` console script: :func:`main` on ``sys.argv[1:]``, named so in messages.

    >>> import sys
    >>> saved, sys.argv = sys.argv, ["lightning-ricci", "no/such/acts.npz"]
    >>> cli()  # stderr: lightning-ricci: error: no/such/acts.npz: no such file
    2
    >>> sys.argv = saved
    """
    return main(prog="lightning-ricci")


def _write_outputs(out: Path, result: RicciFlowResult, names: list[str], info: dict[str, Any]) -> list[Path]:
    """Write ``summary.json`` and, if matplotlib is installed, the two figures; return the paths written."""
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(info, indent=1) + "\n")
        written.append(out / "summary.json")
        try:
            from lightning_ricci.plotting import flow_figure, local_histogram

            flow_figure(result, names).savefig(out / "flow.png", dpi=120)
            written.append(out / "flow.png")
            local_histogram(result).savefig(out / "local.png", dpi=120)
            written.append(out / "local.png")
        except ModuleNotFoundError as err:
            if not (err.name or "").startswith("matplotlib") and "matplotlib" not in str(err):
                raise
            print(f"figures skipped: {err}", file=sys.stderr)
    except OSError as err:
        raise _OutError(
            f"`--out` {out}: cannot write there ({type(err).__name__}: {err.strerror or err})"
        ) from None
    return written


if __name__ == "__main__":
    sys.exit(main())

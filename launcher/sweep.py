"""Sweep points: ``--sweep KEY=V1,V2`` axes (checked against ``ptycho-train``'s own parser), their grid (the
product) or ``--sweep-random N`` points drawn from it with a seed, and the sweep directory's record.

Pure logic: no scheduler, no files except ``sweep.json``. Each point becomes the command line of a training run
(the base flags, then the point's flags, which win), so a swept key means exactly what the flag means.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
from pathlib import Path
from typing import Any, Optional, Sequence

from launcher.errors import LaunchError
from launcher.rundir import read_json

__all__ = ["SWEEP_FILE", "Axis", "parse_axes", "grid_points", "random_points", "choose_points", "point_argv",
           "typed_values", "point_dir", "read_sweep", "NOT_SWEPT"]

SWEEP_FILE = "sweep.json"
#: ptycho-train flags that cannot vary between points: every point has its own run directory
NOT_SWEPT = ("output_dir",)

Axis = tuple[str, list[str]]  # (flag without dashes, values as given)


class _RaisingParser(argparse.ArgumentParser):
    """ptycho-train's flags, raising instead of exiting, so a bad swept value is one LaunchError."""

    def error(self, message: str) -> None:
        raise LaunchError(message)


def _train_parser() -> _RaisingParser:
    from ptycho_torch.cli import add_training_arguments

    parser = _RaisingParser(prog="ptycho-train", add_help=False)
    add_training_arguments(parser)
    return parser


def parse_axes(texts: Sequence[str]) -> list[Axis]:
    """``KEY=V1,V2`` per ``--sweep``: KEY must be a ``ptycho-train`` flag that takes a value, each value must parse
    as that flag's type, and no key may repeat."""
    parser = _train_parser()
    flags = {opt[2:]: action for action in parser._actions for opt in action.option_strings}
    axes: list[Axis] = []
    for text in texts:
        key, sep, values_text = text.partition("=")
        key = key.strip().lstrip("-")
        values = [v.strip() for v in values_text.split(",")]
        if not sep or not key or not all(values):
            raise LaunchError(f"--sweep {text!r}: expected KEY=V1,V2,... (a ptycho-train flag and its values)")
        action = flags.get(key)
        if action is None:
            raise LaunchError(f"--sweep {key}: not a ptycho-train flag (e.g. learning_rate, gridsize, nphotons)")
        if action.dest in NOT_SWEPT or action.nargs == 0:
            raise LaunchError(f"--sweep {key}: cannot be swept (each point has its own run directory)"
                              if action.dest in NOT_SWEPT else f"--sweep {key}: the flag takes no value")
        if key in (k for k, _ in axes):
            raise LaunchError(f"--sweep {key}: given twice; list all its values in one --sweep")
        if len(set(values)) != len(values):
            raise LaunchError(f"--sweep {key}: a value repeats in {values_text!r}")
        for value in values:
            try:
                parser.parse_args([f"--{key}", value])
            except LaunchError as exc:
                raise LaunchError(f"--sweep {key}={value}: {exc}") from None
        axes.append((key, values))
    return axes


def grid_points(axes: Sequence[Axis]) -> list[dict[str, str]]:
    """Every combination, the first axis varying slowest."""
    keys = [k for k, _ in axes]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values for _, values in axes))]


def _point_at(axes: Sequence[Axis], index: int) -> dict[str, str]:
    """The ``index``-th grid point (same order as ``grid_points``) without building the grid."""
    point: dict[str, str] = {}
    for key, values in reversed(axes):
        index, digit = divmod(index, len(values))
        point[key] = values[digit]
    return {k: point[k] for k, _ in axes}


def random_points(axes: Sequence[Axis], count: int, seed: int) -> list[dict[str, str]]:
    """``count`` distinct grid points drawn with ``seed`` (the same seed, the same points), in grid order."""
    total = math.prod(len(values) for _, values in axes)
    if count < 1 or count > total:
        raise LaunchError(f"--sweep-random {count}: the grid has {total} point(s); draw between 1 and {total}")
    return [_point_at(axes, i) for i in sorted(random.Random(seed).sample(range(total), count))]


def choose_points(axes: Sequence[Axis], random_count: Optional[int], seed: int) -> list[dict[str, str]]:
    if not axes:
        raise LaunchError("--sweep-random needs at least one --sweep KEY=V1,V2 axis to draw from")
    return grid_points(axes) if random_count is None else random_points(axes, random_count, seed)


def typed_values(point: dict[str, str]) -> dict[str, Any]:
    """The point's flags parsed by ptycho-train's parser: {argparse dest: typed value} (e.g. ``devices`` ->
    ``n_devices``), to lay over the sweep's own parsed flags."""
    ns = _train_parser().parse_args([item for key, value in point.items() for item in (f"--{key}", value)])
    return {k: v for k, v in vars(ns).items() if k not in NOT_SWEPT and not (k == "train_data_file" and v is None)}


def point_argv(base: Sequence[str], point: dict[str, str]) -> list[str]:
    """The training command line of one point: the base flags, then the point's (argparse: the last one wins)."""
    return [*base, *(item for key, value in point.items() for item in (f"--{key}", value))]


def point_dir(sweep_dir: Path, index: int) -> Path:
    return Path(sweep_dir) / f"point-{index:03d}"


def read_sweep(sweep_dir: Path) -> dict[str, Any]:
    """sweep.json: keys, points (index, values, run_dir), how they were chosen."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise LaunchError(f"{sweep_dir}: not a sweep directory (no {SWEEP_FILE})")
    return read_json(path)

"""Site profiles: the partition/account/GPU/setup lines of one cluster, kept in ``slurm_templates/`` as TOML or JSON.

A profile holds defaults; command-line flags override them. Unknown keys are errors so a typo in a profile never
silently drops a setting (a missing ``account`` line only shows up as a rejected job hours later).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from launcher.errors import LaunchError

__all__ = ["TEMPLATE_DIR", "PROFILE_KEYS", "known_profiles", "load_profile"]

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "slurm_templates"
PROFILE_SUFFIXES = (".toml", ".json")

#: key -> accepted Python types (TOML/JSON values)
PROFILE_KEYS: dict[str, tuple[type, ...]] = {
    "description": (str,),
    "partition": (str,),
    "account": (str,),
    "qos": (str,),
    "accelerator": (str,),
    "gpus_per_node": (int,),
    "cpus_per_task": (int,),
    "mem": (str,),
    "time": (str, int),
    "constraint": (str,),
    "exclusive": (bool,),
    "signal_delay": (int,),
    "max_requeues": (int,),
    "setup": (list,),
}


def known_profiles() -> list[str]:
    """Profile names (file stems) available in slurm_templates/."""
    if not TEMPLATE_DIR.is_dir():
        return []
    return sorted(p.stem for p in TEMPLATE_DIR.iterdir() if p.suffix in PROFILE_SUFFIXES)


def _resolve(name_or_path: str) -> Path:
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in PROFILE_SUFFIXES or "/" in name_or_path:
        if candidate.is_file():
            return candidate.resolve()
        raise LaunchError(f"--profile {name_or_path}: file not found")
    for suffix in PROFILE_SUFFIXES:
        path = TEMPLATE_DIR / f"{name_or_path}{suffix}"
        if path.is_file():
            return path
    known = ", ".join(known_profiles()) or "none"
    raise LaunchError(f"--profile {name_or_path!r} is unknown; known profiles: {known} (or give a path)")


def load_profile(name_or_path: str) -> dict[str, Any]:
    """Read and check a profile; returns only the keys it sets (plus ``source``)."""
    path = _resolve(name_or_path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise LaunchError(f"profile {path}: cannot be read: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise LaunchError(f"profile {path}: must be a table of settings")
    for key, value in data.items():
        if key not in PROFILE_KEYS:
            raise LaunchError(f"profile {path}: unknown key {key!r}; known keys: {', '.join(PROFILE_KEYS)}")
        if isinstance(value, bool) and bool not in PROFILE_KEYS[key] or not isinstance(value, PROFILE_KEYS[key]):
            raise LaunchError(f"profile {path}: {key} has the wrong type ({type(value).__name__})")
    if not all(isinstance(line, str) for line in data.get("setup", [])):
        raise LaunchError(f"profile {path}: setup must be a list of shell lines (strings)")
    return {**data, "source": str(path)}

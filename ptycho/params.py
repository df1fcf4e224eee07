"""The legacy global ``params.cfg``.

Older PtychoPINN code (and clients such as Ptychodus) read model settings from one global dict. New code passes
configs explicitly; this module keeps the global in sync (CONFIG-001: fill it before any legacy code runs) through
``update_legacy_dict``. Execution-only settings never enter it.
"""

from __future__ import annotations

from typing import Any

from ptycho.config.config import KEY_MAPPINGS, legacy_items, update_legacy_dict

__all__ = ["cfg", "get", "set", "legacy_items", "update_legacy_dict", "KEY_MAPPINGS"]

cfg: dict[str, Any] = {}

_MISSING = object()


def get(key: str, default: Any = _MISSING) -> Any:
    """Read a legacy setting; a missing key names the likely cause instead of a bare KeyError."""
    if key in cfg:
        return cfg[key]
    if default is not _MISSING:
        return default
    raise KeyError(
        f"params.cfg has no {key!r}; populate it first with update_legacy_dict(params.cfg, config) (CONFIG-001)"
    )


def set(key: str, value: Any) -> None:  # noqa: A001 - the legacy API is params.set
    cfg[key] = value

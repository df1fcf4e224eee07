"""The launcher's one user-error type (the CLI prints its message on one line and exits 2), and ``one_line``."""

from __future__ import annotations

from ptycho.errors import PtychoInputError


class LaunchError(PtychoInputError):
    """Invalid launch request (flag, file, profile, cluster resources); nothing has been queued."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): errors are shown on one line."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

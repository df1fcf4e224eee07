"""The launcher's one user-error type: the CLI prints its message on one line and exits 2."""

from __future__ import annotations

from ptycho.errors import PtychoInputError


class LaunchError(PtychoInputError):
    """Invalid launch request (flag, file, profile, cluster resources); nothing has been queued."""

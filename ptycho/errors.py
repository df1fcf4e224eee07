"""User-facing error types.

Every problem caused by user input (a bad file, a bad flag, a bad config value) raises a subclass of
``PtychoInputError``. CLIs catch exactly this family, print the message on one line and exit non-zero, so a
scientist never sees a traceback for their own mistake while genuine bugs still show one.
"""

from __future__ import annotations


class PtychoInputError(ValueError):
    """Invalid user input; the message names the file or field and says what to do."""


class DataContractError(PtychoInputError):
    """An NPZ scan file does not satisfy the data contract (docs/data-contract.md)."""


class BundleError(PtychoInputError):
    """A model bundle (wts.h5.zip) is missing, corrupt, from another backend or an unknown format."""

"""``python -m ptycho_torch.prepare`` / ``ptycho-prepare``: prepare a corpus into its store (ptycho.corpus.store)."""

from __future__ import annotations

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ptycho_torch.cli import run_prepare_cli

    return run_prepare_cli(argv)


if __name__ == "__main__":
    sys.exit(main())

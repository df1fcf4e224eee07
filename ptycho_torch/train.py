"""``python -m ptycho_torch.train`` / ``ptycho-train``: train PtychoPINN and reconstruct a held-out scan."""

from __future__ import annotations

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ptycho_torch.cli import run_training_cli

    return run_training_cli(argv)


if __name__ == "__main__":
    sys.exit(main())

"""The one exception type for bad input, and `run`, which turns it into a one-line message and exit code 2."""
from __future__ import annotations

import os
import sys


class HubError(Exception):
    """Bad input or an impossible request; the message names the problem in one line."""


def run(fn) -> None:
    """Run a command; bad input becomes one line on stderr and exit status 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        fn()
    except HubError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        sys.exit(130)

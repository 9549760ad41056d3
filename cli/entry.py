"""The ``detrtool`` console script: a tiny entry that imports the CLI inside a Ctrl-C guard.

Importing the commands (torch, torchvision, onnx, ...) takes seconds; a Ctrl-C then would otherwise end
in a traceback, since click's own handling only starts with ``cli()``. Here it ends as click ends one:
``Aborted!`` and exit status 130. ``python -m cli.main`` works as before.
"""

from __future__ import annotations

import sys

#: The exit status of a process ended by Ctrl-C (128 + SIGINT), as click's own ``Abort``.
SIGINT_EXIT = 130


def main() -> None:
    """Import :mod:`cli.main` (a Ctrl-C meanwhile: ``Aborted!``, exit 130), then run the group."""
    try:
        from cli.main import cli
    except KeyboardInterrupt:
        print("Aborted!", file=sys.stderr)
        sys.exit(SIGINT_EXIT)
    cli()


if __name__ == "__main__":
    main()

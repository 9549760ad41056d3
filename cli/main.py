"""The `detrtool` click group. Commands are thin: they parse options and call the packages.

Whatever a command raises reaches the user as ONE line, ``Error: ...`` (exit 1): the commands' own
``click.ClickException`` lines name the file, option or tensor; anything they did not foresee goes
through :class:`OneLineErrors` as ``<ExceptionType>: <first line>`` — never a traceback (``-v`` prints
it as well, for a bug report).
"""

from __future__ import annotations

import errno
import logging
import os
import traceback

import click

from detr_core.atomic import WriteRefused
from detr_core.errors import first_line, printable, typed_line

logger = logging.getLogger(__name__)

_PASS_THROUGH = (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                 SystemExit, KeyboardInterrupt, GeneratorExit)


def os_error_line(exc: OSError) -> str:
    """``cannot <op> FILE: <reason>`` for an ``OSError`` (disk full, read-only, permission, missing)."""
    reason = os.strerror(exc.errno).lower() if exc.errno else first_line(exc)
    where = exc.filename if exc.filename is not None else "(no file named)"
    verb = "write" if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT) else "access"
    return f"cannot {verb} {where}: {reason}"


def error_line(exc: Exception) -> str:
    """One line for an exception no command turned into a ``ClickException`` itself."""
    if isinstance(exc, WriteRefused):
        return str(exc)  # names the path and says why
    if isinstance(exc, OSError):
        return os_error_line(exc)
    return typed_line(exc)


class OneLineErrors(click.Group):
    """A group whose every failure is one ``Error:`` line (see the module docstring). Given options and no
    command (the reference's ``python main.py ...`` with ``detrtool`` in its place), it runs ``eval`` when
    ``--eval`` is among them, else ``train`` (:func:`cli.options.reference_command_line`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from cli.options import reference_command_line

        return super().parse_args(ctx, reference_command_line(args))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException as exc:
            exc.message = printable(exc.message)  # names from files may carry a NUL, a newline, an escape
            raise
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            if ctx.params.get("verbose"):
                traceback.print_exc()
            logger.debug("unhandled %s", type(exc).__name__, exc_info=True)
            raise click.ClickException(printable(error_line(exc))) from None


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", count=True, help="Debug logging (and the traceback of an unexpected error).")
@click.version_option(package_name="detrtool")
def cli(verbose: int) -> None:
    """detrtool: train DETR, export it with a live padding mask, prove parity and speed."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    """Each command lives in its own module; this is the CLI's table of contents."""
    from cli.bench import bench
    from cli.convert import convert
    from cli.data import data
    from cli.demo import demo
    from cli.evaluate import evaluate
    from cli.export import export
    from cli.plot import plot
    from cli.predict import predict
    from cli.train import train

    for command in (data, train, evaluate, plot, export, bench, demo, predict, convert):
        cli.add_command(command)


_register()

if __name__ == "__main__":
    cli()

"""The `detrtool` click group. Commands are thin: they parse options and call the packages."""

from __future__ import annotations

import logging

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", count=True, help="Debug logging.")
@click.version_option(package_name="detrtool")
def cli(verbose: int) -> None:
    """detrtool: train DETR, export it with a live padding mask, prove parity and speed."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    """Each command lives in its own module; this is the CLI's table of contents."""
    from cli.bench import bench
    from cli.data import data
    from cli.demo import demo
    from cli.evaluate import evaluate
    from cli.export import export
    from cli.plot import plot
    from cli.predict import predict
    from cli.train import train

    for command in (data, train, evaluate, plot, export, bench, demo, predict):
        cli.add_command(command)


_register()

if __name__ == "__main__":
    cli()

"""The `detrtool` click group. Commands are thin: they parse options and call the packages."""

from __future__ import annotations

import logging

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="detrtool")
def cli(verbose: int) -> None:
    """detrtool: train DETR, export it with a live padding mask, prove parity and speed."""
    level = logging.WARNING - 10 * min(verbose, 2) if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    # Each command lives in its own module; the list below is the CLI's table of contents.
    from cli.data import data
    from cli.predict import predict

    cli.add_command(data)
    cli.add_command(predict)
    from cli.train import train; cli.add_command(train)  # noqa: E702
    from cli.evaluate import evaluate; cli.add_command(evaluate)  # noqa: E702
    from cli.plot import plot; cli.add_command(plot)  # noqa: E702
    from cli.export import export; cli.add_command(export)  # noqa: E702
    from cli.bench import bench; cli.add_command(bench)  # noqa: E702
    from cli.demo import demo; cli.add_command(demo)  # noqa: E702


_register()

if __name__ == "__main__":
    cli()

"""``detrtool plot OUTPUT_DIR``: loss and AP curves of a training run as PNG files."""

from __future__ import annotations

import click


@click.command("plot")
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--dest", type=click.Path(file_okay=False), help="Folder for the PNGs (default: OUTPUT_DIR).")
def plot(output_dir: str, dest: str | None) -> None:
    """Draw loss.png, ap.png and ap_minutes.png from OUTPUT_DIR/log.jsonl."""
    from detr_core.plotting import plot_run

    try:
        paths = plot_run(output_dir, dest)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for path in paths:
        click.echo(f"wrote {path}")

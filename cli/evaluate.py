"""``detrtool eval``: evaluate a checkpoint (detrtool or official) on a dataset's val split."""

from __future__ import annotations

from typing import Any

import click

from cli.options import (
    ReferenceSpellings,
    RegularFile,
    dataset_options,
    panoptic_threshold_option,
    pop_dataset_options,
)


def _overrides(nheads: int | None, dilation: bool | None) -> dict[str, Any]:
    values = {"nheads": nheads, "dilation": dilation}
    return {k: v for k, v in values.items() if v is not None}


@click.command("eval", cls=ReferenceSpellings)
@click.option("--resume", "checkpoint", required=True, type=RegularFile(dir_okay=True),
              help="Checkpoint to evaluate (detrtool, official facebookresearch/detr, or a Hugging Face DETR "
                   "folder / .safetensors).")
@dataset_options
@click.option("--output-dir", type=click.Path(file_okay=False), default="eval", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1, max=4096), default=2, show_default=True,
              help="Images are padded to the largest of their batch (use --pad-to for batch-independent results).")
@click.option("--num-workers", type=click.IntRange(min=0, max=256), default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default="none", show_default=True)
@click.option("--evaluator", type=click.Choice(["faster", "pycocotools"]), default="faster", show_default=True)
@click.option("--transforms", type=click.Choice(["detr", "shapes"]), help="Default: the checkpoint's run, else by dataset.")
@click.option("--image-size", type=click.IntRange(min=16, max=4096), help="Base size of the shapes transforms (>= 16).")
@click.option("--eval-size", type=click.IntRange(min=16, max=16384), help="Shorter side for evaluation (reference: 800; >= 16).")
@click.option("--nheads", type=click.IntRange(min=1, max=1024), help="Official checkpoints cannot carry it (default 8).")
@click.option("--dilation/--no-dilation", default=None, help="Official DC5 checkpoints: --dilation.")
@click.option("--aux-loss/--no-aux-loss", default=True, show_default=True,
              help="Count the auxiliary decoder layers in the loss statistics (the reference's --no_aux_loss: off).")
@click.option("--masks/--no-masks", default=None,
              help="Segmentation checkpoints are scored on boxes, masks and PQ by default; --masks insists on one, "
                   "--no-masks scores its boxes only.")
@panoptic_threshold_option
@click.option("--progress/--no-progress", default=True)
def evaluate(checkpoint: str, nheads: int | None, dilation: bool | None, **kwargs: Any) -> None:
    """Print loss stats and the 12-line COCO summary; write metrics.json and detections.json.

    The loss statistics are the reference's (main.py --eval): per-batch values averaged over batches.
    The reference's option spellings work too (--coco_path, --batch_size, --no_aux_loss, ...), and so does
    its whole command line with detrtool in place of `python main.py`.

    The output folder is proven writable before the evaluation starts; both files are written atomically
    and together (a failure leaves the previous pair as it was)."""
    from detr_core.checkpoint import CheckpointError
    from detr_core.data.coco import DatasetError
    from detr_core.training.engine import NonFiniteLossError
    from detr_core.training.eval_run import EvalConfig, evaluate_checkpoint, format_losses

    source, pad_to = pop_dataset_options(kwargs)
    config = EvalConfig(checkpoint=checkpoint, data=source, pad_to=pad_to, model_overrides=_overrides(nheads, dilation),
                        **kwargs)
    try:
        result = evaluate_checkpoint(config)
    except (CheckpointError, DatasetError, ValueError, NonFiniteLossError) as exc:
        raise click.ClickException(f"{checkpoint}: {exc}" if isinstance(exc, NonFiniteLossError) else str(exc)) from None
    click.echo(f"loss: {format_losses(result.metrics['loss'])}")
    click.echo(f"  (averaged per batch over {result.metrics['num_batches']} batch(es) of up to "
               f"{result.metrics['batch_size']} image(s), as the reference's MetricLogger; auxiliary layers "
               f"{'included' if result.metrics['aux_loss'] else 'left out'})")
    click.echo(result.summary)
    click.echo(f"wrote {result.metrics_path} and {result.detections_path}")

"""A DETR training run: data, guardrails, model, optimizer, the epoch loop, checkpoints and the log.

``train(config)`` works alone or under torchrun (one process per device, DistributedDataParallel).
Only the main process writes ``log.jsonl``, ``config.yaml`` and checkpoints, holding the output folder's
lock (:mod:`detr_core.training.output_dir`: one run per folder, killed runs' temp files removed). A
checkpoint holds model, optimizer, lr scheduler, grad scaler, epoch, config, every process's RNG states
and the epoch's log record, so ``--resume`` continues exactly where the run stopped and the log is made
whole again (:mod:`detr_core.training.run_log`). Every file goes through :mod:`detr_core.atomic` but the
log's fsync'ed appends (see run_log) and the lock file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from detr_core.checkpoint import (
    load_state_dict_checked,
    read_checkpoint,
    save_checkpoint,
    split_panoptic_state,
    with_mask_head,
)
from detr_core.data.batching import make_collate
from detr_core.data.check import validate_num_classes
from detr_core.data.class_map import ClassMapError, data_names_of, load_class_map
from detr_core.data.sources import build_dataset
from detr_core.errors import first_line
from detr_core.evaluation.ground_truth import coco_ground_truth, make_evaluator
from detr_core.losses import build_criterion
from detr_core.models.segmentation import DETRsegm
from detr_core.presets import transforms_for
from detr_core.registry import build_model
from detr_core.training import distributed
from detr_core.training.crop_pretrain import pretrain_backbone
from detr_core.training.engine import (
    NonFiniteLossError,
    Precision,
    check_finite_parameters,
    evaluate,
    train_one_epoch,
)
from detr_core.training.optim import build_optimizer, build_scheduler
from detr_core.training.output_dir import check_inputs_kept, locked_output_dir
from detr_core.training.run_log import append_record, reconcile_log, start_fresh_log, train_seconds
from detr_core.training.time_budget import BudgetDecision, fit_epochs, measure_costs
from detr_core.training.train_config import NUM_CLASSES_FROM_DATA, TrainConfig, save_config_yaml

log = logging.getLogger(__name__)


class TrainingError(ValueError):
    """A run that cannot start (bad data, bad checkpoint, bad settings); the message says why."""


@dataclass
class RunData:
    train_set: Dataset
    val_set: Dataset
    train_loader: DataLoader
    val_loader: DataLoader
    sampler: DistributedSampler
    num_classes: int
    class_names: list[str]
    val_ground_truth: Any  # pycocotools COCO, built once at set-up (refused there when it has nothing to score)


# ----------------------------------------------------------------------------------------------- RNG
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a form ``torch.load(weights_only=True)`` reads back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------- data
def build_data(config: TrainConfig, info: distributed.DistInfo) -> RunData:
    train_t, val_t = transforms_for(config.transforms_preset, config.image_size, vertical_flip=config.vertical_flip)
    common = {"shapes_params": {"image_size": config.image_size}, "progress": info.is_main,
              "cache_images": config.cache_images, "masks": config.model.masks}
    built_train = build_dataset(config.data, "train", train_t, **common)
    built_val = build_dataset(config.data, "val", val_t, **common)
    for name, ds in (("training", built_train.dataset), ("validation", built_val.dataset)):
        if len(ds) == 0:  # type: ignore[arg-type]
            raise TrainingError(f"the {name} set is empty: nothing to train or evaluate on")
    sampler = DistributedSampler(built_train.dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    val_sampler = DistributedSampler(built_val.dataset, num_replicas=info.world_size, rank=info.rank, shuffle=False)
    collate = make_collate(config.pad_to)
    common = {"collate_fn": collate, "num_workers": config.num_workers, "persistent_workers": False}
    train_loader = DataLoader(built_train.dataset, batch_size=config.batch_size, sampler=sampler, drop_last=False,
                              **common)
    val_loader = DataLoader(built_val.dataset, batch_size=config.batch_size, sampler=val_sampler, **common)
    return RunData(built_train.dataset, built_val.dataset, train_loader, val_loader, sampler,
                   built_train.num_classes, list(built_train.class_names),
                   coco_ground_truth(built_val.dataset, config.data))


def resolve_num_classes(config: TrainConfig, data: RunData) -> TrainConfig:
    """``num_classes`` 0 becomes the dataset's (max id + 1); class names come along when not set."""
    model = config.model
    if model.num_classes == NUM_CLASSES_FROM_DATA:
        model = model.replace(num_classes=data.num_classes)
        log.info("num_classes = %d (max category id + 1 of the training set)", data.num_classes)
    if not model.class_names and len(data.class_names) == model.num_classes:
        model = model.replace(class_names=tuple(data.class_names))
    is_thing = getattr(data.train_set, "is_thing", None)
    if model.masks and not model.stuff_classes and is_thing:
        model = model.replace(stuff_classes=tuple(sorted(c for c, thing in is_thing.items() if not thing)))
        log.info("stuff classes (panoptic) from the training set: %s", list(model.stuff_classes))
    return config.replace(model=model)


def check_data(config: TrainConfig, data: RunData, stride: int) -> None:
    """Guardrails before the first step: category ids fit, images are larger than the backbone stride."""
    try:
        validate_num_classes(data.train_set, config.model.num_classes)
        validate_num_classes(data.val_set, config.model.num_classes)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    for name, ds in (("training", data.train_set), ("validation", data.val_set)):
        image, target = ds[0]
        h, w = int(image.shape[-2]), int(image.shape[-1])
        if min(h, w) < stride:
            raise TrainingError(f"{name} image {int(target['image_id'])} is {h}x{w} after transforms, smaller "
                                f"than the backbone stride {stride}: use larger images or another backbone")


# --------------------------------------------------------------------------------------------- model
def load_initial_weights(model: nn.Module, path: str, *, class_map: str | None = None,
                         data_names: list[str] | None = None) -> None:
    """Weights of a checkpoint (official or detrtool) for fine-tuning: heads of another size are dropped;
    with ``class_map`` (resolved against the checkpoint's classes and ``data_names``, the dataset's names by
    id) the class head keeps the rows of the mapped classes, moved to their dataset ids, and the no-object row."""
    ckpt = read_checkpoint(path)
    state, head = split_panoptic_state(ckpt["model"])
    detector = model.detr if isinstance(model, DETRsegm) else model
    own = detector.state_dict()
    if class_map is not None:
        state = {**state, **mapped_class_head(state, own, _stored_names(ckpt), class_map, data_names or [], path)}
    dropped = [k for k in ("class_embed.weight", "class_embed.bias", "query_embed.weight")
               if k in state and k in own and state[k].shape != own[k].shape]
    if dropped:
        log.warning("%s: %s of another size (%s) dropped: trained anew for num_classes=%d, num_queries=%d", path,
                    ", ".join(sorted({k.split('.')[0] for k in dropped})), list(state[dropped[0]].shape),
                    detector.num_classes, detector.num_queries)
    state = {k: v for k, v in state.items() if k not in dropped}
    if detector is model:
        load_state_dict_checked(model, state, source=str(path))
        return
    load_state_dict_checked(model, with_mask_head(state, head, masks=True, path=path), source=str(path),
                            fresh_mask_head=not head)


def _stored_names(ckpt: dict[str, Any]) -> tuple[str, ...]:
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    return tuple(model.get("class_names") or ())


def mapped_class_head(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], names: tuple[str, ...],
                      class_map: str, data_names: list[str], path: str) -> dict[str, torch.Tensor]:
    """``class_embed.weight`` [C+1, D] / ``.bias`` [C+1] of the new head: row ``d`` of every mapped pair
    (checkpoint class ``m`` -> dataset id ``d``) is the checkpoint's row ``m``, the last (no-object) row is the
    checkpoint's last; other rows keep their fresh initialisation."""
    weight, bias = state["class_embed.weight"], state["class_embed.bias"]
    resolved = load_class_map(class_map, model_names=names, num_model_classes=weight.shape[0] - 1,
                              data_names=data_names_of(data_names))
    new_weight, new_bias = own["class_embed.weight"].clone(), own["class_embed.bias"].clone()
    if weight.shape[1:] != new_weight.shape[1:]:
        raise TrainingError(f"{path}: class head width {list(weight.shape)} does not fit the model's "
                            f"{list(new_weight.shape)}")
    for model_id, data_id in resolved.model_to_data.items():
        new_weight[data_id], new_bias[data_id] = weight[model_id], bias[model_id]
    new_weight[-1], new_bias[-1] = weight[-1], bias[-1]
    log.info("%s: class map %s keeps %d class-head rows (and the no-object row) for num_classes=%d", path,
             resolved.name, len(resolved.model_to_data), new_weight.shape[0] - 1)
    return {"class_embed.weight": new_weight, "class_embed.bias": new_bias}


def freeze_all_but_heads(model: nn.Module, frozen_weights: str) -> None:
    """``--frozen-weights``: load a trained detector and train only its heads; for a panoptic model only the
    mask head (the reference's second stage)."""
    load_initial_weights(model, frozen_weights)
    if isinstance(model, DETRsegm):
        model.freeze_detr()
        log.info("%s: detector loaded and frozen; only the mask head trains", frozen_weights)
        return
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(("class_embed.", "bbox_embed.")))
    log.info("%s: weights loaded and frozen except class_embed / bbox_embed", frozen_weights)


def build_run_model(config: TrainConfig, device: torch.device, data_names: list[str] | None = None) -> nn.Module:
    """The run's model; ``--init`` weights loaded (through the data's ``class_map`` when one is given,
    resolved against ``data_names``, the training set's names by id)."""
    model = build_model(config.model, train_backbone=config.lr_backbone > 0,
                        backbone_weights=config.backbone_weights, attention_impl=config.attention_impl)
    if config.init:
        try:
            load_initial_weights(model, config.init, class_map=config.data.class_map, data_names=data_names)
        except ClassMapError as exc:
            raise TrainingError(str(exc)) from None
    if config.frozen_weights:
        freeze_all_but_heads(model, config.frozen_weights)
    return model.to(device)


def wrap_ddp(model: nn.Module, info: distributed.DistInfo, device: torch.device) -> nn.Module:
    if not info.enabled:
        return model
    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def resolve_device(name: str, info: distributed.DistInfo) -> torch.device:
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {name}: CUDA is not available on this machine")
        return torch.device("cuda", info.local_rank) if info.enabled else torch.device(name)
    if name != "cpu":
        raise TrainingError(f"--device must be cpu or cuda, got {name!r}")
    return torch.device("cpu")


# ------------------------------------------------------------------------------------- checkpoints
@dataclass
class Trainer:
    """The pieces of a run that a checkpoint captures."""

    config: TrainConfig
    model: nn.Module  # unwrapped
    optimizer: torch.optim.Optimizer
    scheduler: Any
    precision: Precision
    last_record: dict[str, Any] | None = None  # the resumed checkpoint's log record

    def payload(self, epoch: int, rng_states: list[dict[str, Any]], record: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config.to_dict()
        run = {k: v for k, v in cfg.items() if k not in ("model", "loss", "data")}
        scaler = self.precision.scaler
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "epoch": epoch, "rng": rng_states, "log_record": record,
                "config": {"model": cfg["model"], "loss": cfg["loss"], "data": cfg["data"], "run": run}}

    def restore(self, path: str, rank: int) -> int:
        """Load a detrtool training checkpoint; returns the next epoch. An official file loads weights only."""
        ckpt = read_checkpoint(path)
        if "optimizer" not in ckpt or "epoch" not in ckpt:
            load_initial_weights(self.model, path)
            log.info("%s: weights only (no training state): starting at epoch 0", path)
            return 0
        load_state_dict_checked(self.model, ckpt["model"], source=path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        scheduler_state = dict(ckpt["lr_scheduler"])  # position restored; the schedule's shape is this run's
        scheduler_state["lr_lambdas"] = [None] * len(self.scheduler.lr_lambdas)
        self.scheduler.load_state_dict(scheduler_state)
        if self.precision.scaler is not None and ckpt.get("scaler"):
            self.precision.scaler.load_state_dict(ckpt["scaler"])
        states = ckpt.get("rng") or []
        if states:
            set_rng_state(states[rank] if rank < len(states) else states[0])
        self.last_record = ckpt.get("log_record") if isinstance(ckpt.get("log_record"), dict) else None
        log.info("resumed from %s after epoch %d", path, ckpt["epoch"])
        return int(ckpt["epoch"]) + 1


def save_epoch(trainer: Trainer, out: Path, epoch: int, record: dict[str, Any]) -> None:
    """Every process hands its RNG state to the main one, which writes the checkpoint(s) with ``record``."""
    states = distributed.all_gather_objects(rng_state())
    if not distributed.is_main_process():
        return
    payload = trainer.payload(epoch, states, record)
    _save(out / "checkpoint.pth", payload)
    every = trainer.config.save_every
    if every > 0 and (epoch + 1) % every == 0:
        _save(out / f"checkpoint_{epoch:04d}.pth", payload)


def _save(path: Path, payload: dict[str, Any]) -> None:
    """``save_checkpoint``; a failed write (full disk: OSError, or torch's RuntimeError) is one TrainingError."""
    try:
        save_checkpoint(path, payload)
    except (OSError, RuntimeError) as exc:
        free = shutil.disk_usage(path.parent).free / 1e6
        raise TrainingError(f"{path}: cannot write the checkpoint ({first_line(exc)}; {free:.1f} MB free on that "
                            "disk); the previous one is left untouched") from None


def append_log(out: Path, record: dict[str, Any]) -> None:
    """One epoch's record appended to ``log.jsonl`` (run_log.append_record: fsync'ed, cut back on failure)."""
    try:
        append_record(out, record)
    except OSError as exc:
        raise TrainingError(f"{out / 'log.jsonl'}: cannot append epoch {record.get('epoch')} ({first_line(exc)}); "
                            "the checkpoint holds it and --resume restores it") from None


# ------------------------------------------------------------------------------------------- the run
def train(config: TrainConfig) -> Path:
    """Run ``config``; returns the output folder. Raises ``TrainingError`` / ``NonFiniteLossError``."""
    info = distributed.init_distributed(config.device)
    try:
        return _run(config, info)
    finally:
        distributed.cleanup()


def _setup(config: TrainConfig, info: distributed.DistInfo) -> tuple[TrainConfig, RunData, Trainer, torch.device]:
    device = resolve_device(config.device, info)
    seed_everything(config.seed + info.rank)
    data = build_data(config, info)
    config = resolve_num_classes(config, data)
    model = build_run_model(config, device, data.class_names)
    check_data(config, data, model.backbone.stride)
    optimizer = build_optimizer(model, lr=config.lr, lr_backbone=config.lr_backbone, weight_decay=config.weight_decay)
    scheduler = build_scheduler(optimizer, schedule=config.lr_schedule, steps_per_epoch=len(data.train_loader),
                                epochs=config.epochs, lr_drop=config.lr_drop, warmup_steps=config.warmup_steps)
    return config, data, Trainer(config, model, optimizer, scheduler, Precision(device, config.amp)), device


def _run(config: TrainConfig, info: distributed.DistInfo) -> Path:
    out = Path(config.output_dir)
    with locked_output_dir(out) if info.is_main else contextlib.nullcontext(out):
        check_inputs_kept(out, {"--init": config.init, "--frozen-weights": config.frozen_weights,
                                "--backbone-weights": config.backbone_weights})
        config, data, trainer, device = _setup(config, info)
        start = trainer.restore(config.resume, info.rank) if config.resume else 0
        n_parameters = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        elapsed = _prepare_output(config, trainer, out, start=start) if info.is_main else 0.0
        log.info("training %d parameters for epochs %d..%d into %s", n_parameters, start, config.epochs - 1, out)
        pretrain = _maybe_pretrain(config, trainer.model, data, device)
        criterion = build_criterion(config.loss, num_classes=config.model.num_classes,
                                    dec_layers=config.model.dec_layers, aux_loss=config.model.aux_loss,
                                    masks=config.model.masks).to(device)
        if config.time_budget > 0 and start == 0:
            config, budget = fit_to_budget(config, trainer, data, criterion, device, pretrain.get("pretrain_seconds", 0.0))
            pretrain = {**pretrain, **budget}
            if info.is_main:
                save_config_yaml(config, out / "config.yaml")
        elif config.time_budget > 0:
            log.info("--time-budget: resuming keeps the recorded %d epochs (decided when the run started)",
                     config.epochs)
        model = wrap_ddp(trainer.model, info, device)  # DDP copies rank 0's (pre-trained) weights to every rank
        loop = EpochLoop(config, data, trainer, model, criterion, device, out, n_parameters, info.is_main)
        loop.run(start=start, elapsed=elapsed, pretrain=pretrain)
    return out


def fit_to_budget(config: TrainConfig, trainer: Trainer, data: RunData, criterion: nn.Module, device: torch.device,
                  spent: float) -> tuple[TrainConfig, dict[str, Any]]:
    """Measure steps on copies (every RNG state put back), fix the epoch count (rank 0's everywhere) and the
    schedule from it; returns the config with the decision recorded (``time_budget`` 0) and its log entries."""
    state, start = rng_state(), time.perf_counter()
    try:  # the copies' steps draw batches (shuffling, augmentation): the run's random streams must not move
        costs = measure_costs(trainer.model, criterion, data.train_loader, data.val_loader,
                              make_optimizer=lambda m: build_optimizer(m, lr=config.lr, lr_backbone=config.lr_backbone,
                                                                       weight_decay=config.weight_decay),
                              precision=trainer.precision, device=device, weight_dict=criterion.weight_dict,
                              max_norm=config.clip_max_norm, steps_per_epoch=len(data.train_loader),
                              eval_batches=len(data.val_loader))
    finally:
        set_rng_state(state)
    measuring = time.perf_counter() - start
    spent += measuring
    epochs = fit_epochs(config.time_budget, spent, costs, eval_every=config.eval_every, max_epochs=config.epochs)
    epochs = distributed.all_gather_objects(epochs)[0]  # one decision for every process: rank 0's
    decision = BudgetDecision(config.time_budget, spent, costs, epochs, config.epochs)
    log.info(decision.line())
    config = config.replace(epochs=epochs, time_budget=0.0)
    trainer.config = config
    trainer.scheduler = build_scheduler(trainer.optimizer, schedule=config.lr_schedule,
                                        steps_per_epoch=len(data.train_loader), epochs=epochs,
                                        lr_drop=config.lr_drop, warmup_steps=config.warmup_steps)
    return config, {**decision.record(), "time_budget_measure_seconds": measuring}


def _prepare_output(config: TrainConfig, trainer: Trainer, out: Path, *, start: int) -> float:
    """Write config.yaml; start a fresh log (epoch 0) or reconcile it with the resumed checkpoint. Returns the
    training seconds done before ``start`` (the dead time of an interrupted run is not counted)."""
    save_config_yaml(config, out / "config.yaml")
    if start == 0:
        start_fresh_log(out)
        return 0.0
    return train_seconds(reconcile_log(out, epoch=start - 1, record=trainer.last_record))


@dataclass
class EpochLoop:
    """The epoch loop: train, evaluate when due, then checkpoint (with the record) before the log append."""

    config: TrainConfig
    data: RunData
    trainer: Trainer
    model: nn.Module  # possibly DDP-wrapped
    criterion: nn.Module
    device: torch.device
    out: Path
    n_parameters: int
    is_main: bool

    def run(self, *, start: int, elapsed: float, pretrain: dict[str, Any]) -> None:
        elapsed += pretrain.get("pretrain_seconds", 0.0) + pretrain.get("time_budget_measure_seconds", 0.0)
        for epoch in range(start, self.config.epochs):
            tic = time.perf_counter()
            stats = self.train(epoch)
            elapsed += time.perf_counter() - tic
            record = {**{f"train_{k}": v for k, v in stats.items()}, "epoch": epoch, "n_parameters": self.n_parameters,
                      "train_minutes": elapsed / 60, **(pretrain if epoch == start else {})}
            self.evaluate_and_save(epoch, record)

    def train(self, epoch: int) -> dict[str, float]:
        """One epoch; a non-finite loss (or weights) stops before anything is saved."""
        self.data.sampler.set_epoch(epoch)
        config = self.config
        try:
            stats = train_one_epoch(self.model, self.criterion, self.data.train_loader, self.trainer.optimizer,
                                    self.trainer.scheduler, device=self.device, epoch=epoch,
                                    weight_dict=self.criterion.weight_dict, precision=self.trainer.precision,
                                    max_norm=config.clip_max_norm, progress=config.progress)
            check_finite_parameters(self.trainer.model, epoch=epoch)
        except NonFiniteLossError as exc:
            raise NonFiniteLossError(f"{exc}; the last good checkpoint in {self.out} is left untouched") from None
        return stats

    def evaluate_and_save(self, epoch: int, record: dict[str, Any]) -> None:
        """Evaluate when due; the trained epoch is checkpointed and logged even when evaluation fails (then
        the run stops with that failure)."""
        due = (epoch + 1) % self.config.eval_every == 0 or epoch + 1 == self.config.epochs
        failure = self.evaluate_into(record) if due else None
        record = json.loads(json.dumps(record))  # plain types: the checkpoint loads weights-only
        save_epoch(self.trainer, self.out, epoch, record)
        if self.is_main:
            append_log(self.out, record)
            log.info("epoch %d: %s", epoch, _summary(record))
        if failure is not None:
            raise TrainingError(f"epoch {epoch}: evaluation failed ({type(failure).__name__}: {first_line(failure)}); "
                                f"the trained epoch is saved in {self.out / 'checkpoint.pth'} and logged")

    def evaluate_into(self, record: dict[str, Any]) -> Exception | None:
        try:
            record.update(_eval_record(self.config, self.model, self.criterion, self.data, self.trainer.precision,
                                       self.device))
        except Exception as exc:  # noqa: BLE001 - any evaluation failure: keep the trained epoch, then report it
            return exc
        return None


def _maybe_pretrain(config: TrainConfig, model: nn.Module, data: RunData, device: torch.device) -> dict[str, Any]:
    """Crop pre-training of a fresh, trainable backbone (not when weights come from a file, e.g. a resumed run);
    its log entries."""
    from_file = config.init or config.frozen_weights or config.backbone_weights or config.resume
    if config.pretrain_epochs <= 0 or from_file or config.lr_backbone <= 0:
        return {}
    stats = pretrain_backbone(model.backbone[0], data.train_loader, num_classes=config.model.num_classes,
                              epochs=config.pretrain_epochs, device=device, crop_size=config.pretrain_crop_size,
                              lr=config.pretrain_lr, progress=config.progress, skip_classes=config.model.stuff_classes)
    return {"pretrain_epochs": stats.epochs, "pretrain_crops": stats.crops, "pretrain_seconds": stats.seconds,
            "pretrain_accuracy": stats.accuracy}


def _eval_record(config: TrainConfig, model: nn.Module, criterion: nn.Module, data: RunData, precision: Precision,
                 device: torch.device) -> dict[str, Any]:
    evaluator = make_evaluator(data.val_ground_truth, config.evaluator, masks=config.model.masks,
                               dataset=data.val_set, is_thing=config.model.is_thing())
    stats, coco = evaluate(model, criterion, data.val_loader, device=device, weight_dict=criterion.weight_dict,
                           evaluator=evaluator, precision=precision, progress=config.progress)
    record = {f"test_{k}": v for k, v in stats.items()}
    if coco is not None:
        record.update(coco_record(coco))
    return record


def coco_record(coco: dict[str, Any]) -> dict[str, Any]:
    """The log entries of an evaluation: ``test_coco_eval_bbox`` (the 12 numbers), ``test_AP`` ...; for a
    panoptic model also ``test_coco_eval_masks``, ``test_mask_AP`` ... and ``test_PQ``, ``test_SQ``, ``test_RQ``,
    ``test_PQ_th`` ... ``test_RQ_st``."""
    if "bbox" not in coco:
        return {"test_coco_eval_bbox": list(coco["stats"]), **{f"test_{k}": v for k, v in coco.items() if k != "stats"}}
    record = coco_record(coco["bbox"])
    record["test_coco_eval_masks"] = list(coco["segm"]["stats"])
    record.update({f"test_mask_{k}": v for k, v in coco["segm"].items() if k != "stats"})
    pq = coco.get("panoptic") or {}
    record.update({f"test_{k}{g}": pq[f"{k}{g}"] for k in ("PQ", "SQ", "RQ") for g in ("", "_th", "_st") if pq})
    return record


def _summary(record: dict[str, Any]) -> str:
    keys = ("train_loss", "test_loss", "test_AP", "test_AP50", "test_mask_AP", "test_PQ", "train_images_per_s")
    return ", ".join(f"{k}={record[k]:.4g}" for k in keys if k in record)

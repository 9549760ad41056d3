"""``log.jsonl``: one JSON record per trained epoch, complete after any kill and resume.

Contract: every epoch appears exactly once, in order. The log is written through :func:`append_record`
only, after the epoch's checkpoint (which carries the same record, key ``log_record``) has been renamed
into place. Appends are not atomic renames: a record is one ``write`` of one line, flushed and fsync'ed,
and a failed append (a full disk) is truncated back to the previous end. A kill in the middle of an
append can still leave a torn last line; :func:`reconcile_log` repairs it when the run resumes: it keeps
the lines up to the checkpoint's epoch, drops a torn or later line, and appends the checkpoint's record
when the kill came between the checkpoint's rename and the log append. A rewrite goes through
:func:`detr_core.atomic.atomic_write`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from detr_core.atomic import atomic_write, open_no_follow

log = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"


def append_record(out: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line, fsync'ed; on failure the file is cut back to its previous length."""
    path = Path(out) / LOG_NAME
    line = (json.dumps(record) + "\n").encode()
    fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # a link there is refused, not followed
    with os.fdopen(fd, "ab") as handle:
        size = handle.tell()
        try:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError:
            handle.truncate(size)
            raise


def parse_lines(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of ``path`` and the (1-based) numbers of lines that are not a JSON object."""
    records, bad = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    return records, bad


def start_fresh_log(out: Path) -> None:
    """A run starting at epoch 0: an earlier run's ``log.jsonl`` becomes ``log.jsonl.old`` (replacing an older
    one, by a rename), so curves and summaries never mix two runs."""
    path = Path(out) / LOG_NAME
    if path.is_file() and not path.is_symlink():
        path.replace(Path(out) / f"{LOG_NAME}.old")
        log.info("%s held an earlier run's log: kept as %s.old", out, LOG_NAME)


def reconcile_log(out: Path, *, epoch: int, record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Make ``log.jsonl`` hold exactly epochs ``0..epoch`` once each, as a resumed run expects; returns them.

    ``record`` is the checkpoint's own record of ``epoch`` (None for checkpoints written before records
    were stored); it is appended when the log lacks that epoch. Lines after ``epoch``, doubled epochs and
    unreadable (torn) lines are dropped, each with a warning.
    """
    path = Path(out) / LOG_NAME
    records, bad = parse_lines(path) if path.is_file() else ([], [])
    kept = _first_of_each_epoch(records, upto=epoch)
    if record is not None and (not kept or kept[-1].get("epoch") != epoch):
        kept.append(record)
    if bad or len(kept) != len(records):
        _report_repair(path, bad=bad, before=len(records), after=len(kept))
        rewrite_log(out, kept)
    return kept


def _first_of_each_epoch(records: list[dict[str, Any]], *, upto: int) -> list[dict[str, Any]]:
    seen: set[int] = set()
    kept = []
    for record in records:
        epoch = record.get("epoch")
        if isinstance(epoch, int) and epoch <= upto and epoch not in seen:
            seen.add(epoch)
            kept.append(record)
    return kept


def _report_repair(path: Path, *, bad: list[int], before: int, after: int) -> None:
    if bad:
        log.warning("%s: dropped %d unreadable line(s) (line %s; a kill mid-append leaves one)", path, len(bad),
                    ", ".join(map(str, bad)))
    log.info("%s: reconciled with the checkpoint: %d -> %d epoch records", path, before, after)


def rewrite_log(out: Path, records: list[dict[str, Any]]) -> Path:
    """Replace ``log.jsonl`` by ``records`` atomically."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    return atomic_write(Path(out) / LOG_NAME, lambda handle: handle.write(text), binary=False)


def train_seconds(records: list[dict[str, Any]]) -> float:
    """Training seconds up to the last of ``records`` (its cumulative ``train_minutes``)."""
    minutes = records[-1].get("train_minutes", 0.0) if records else 0.0
    return 60.0 * float(minutes) if isinstance(minutes, (int, float)) else 0.0

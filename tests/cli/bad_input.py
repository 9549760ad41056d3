"""The bad-input matrix's one mechanism: run the real CLI (``cli.main.cli`` in-process with click's
``CliRunner``) on a bad input and assert what every such case must give.

- the exit code (non-zero; 2 for click's usage errors, 1 for refused input),
- exactly one error line (``Error: ...``) that names what is wrong (``names``: the file, option,
  annotation or tensor, as substrings of that line),
- no traceback anywhere in the output and no uncaught exception,
- every ``protect``ed path unchanged: its bytes hashed before and after (a folder: every file in it),
  so a refused command never destroys or half-writes what was there.

Each area's matrix is a ``tests/**/test_bad_inputs*.py`` file of :class:`BadCase` rows run through
:func:`check_bad_input`.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import cli


@dataclass(frozen=True)
class BadCase:
    """One row: ``args`` after ``detrtool``; the expected exit code; substrings the error line must hold."""

    id: str
    args: Sequence[str]
    names: Sequence[str]
    exit_code: int = 1
    protect: Sequence[Path] = field(default_factory=tuple)


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of ``path`` (a file) or of every file under it (a folder); {} when it does not exist."""
    path = Path(path)
    if path.is_file():
        return {str(path): hashlib.sha256(path.read_bytes()).hexdigest()}
    if path.is_dir():
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}
    return {}


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


def run_cli(args: Sequence[str], *, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def check_bad_input(args: Sequence[str], *, names: Sequence[str], exit_code: int = 1,
                    protect: Sequence[Path] = (), run: Callable[[Sequence[str]], Result] = run_cli) -> Result:
    """Run ``detrtool *args`` and assert the contract above; returns the click ``Result``."""
    before = {str(p): tree_digest(p) for p in protect}
    result = run(args)
    output = result.output
    assert result.exit_code == exit_code, f"exit {result.exit_code} (wanted {exit_code}) for {list(args)}:\n{output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    assert "Traceback" not in output, output
    lines = error_lines(output)
    assert len(lines) == 1, f"want one 'Error:' line, got {len(lines)}:\n{output}"
    for name in names:
        assert name in lines[0], f"{name!r} not in the error line {lines[0]!r}"
    for path in protect:
        assert tree_digest(path) == before[str(path)], f"{path} changed although the command was refused"
    return result


@contextlib.contextmanager
def tmpfs(folder: Path, *, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """Mount a small tmpfs on ``folder`` (a full disk when filled, or a read-only one): real ENOSPC/EROFS
    from the kernel. Skips the test, saying why, where mounting is not permitted (not root, a container
    without CAP_SYS_ADMIN)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Fill the filesystem of ``folder`` to the last byte (for a full-disk case)."""
    with contextlib.suppress(OSError), open(folder / ".filler", "wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()

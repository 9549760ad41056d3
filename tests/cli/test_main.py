"""The CLI's promises that hold for every command: one error line whatever goes wrong, and a valid
range on every numeric option."""

from __future__ import annotations

import errno

import click
import pytest

import detr_core.plotting as plot_module  # cli.plot imports plot_run from it when the command runs
from cli.main import cli, error_line
from cli.options import FiniteFloatRange, RegularFile
from tests.cli.bad_input import check_bad_input, run_cli


def _commands(group: click.Group = cli, prefix: str = ""):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def _numeric_options_without_range():
    for name, command in _commands():
        for param in command.params:
            if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)) and \
                    not isinstance(param.type, click.types._NumberRangeBase):
                yield f"{name} {param.opts[0]}"


def _float_options_not_finite_checked():
    """Float options that would take nan or inf: a plain FloatRange compares False against its bounds."""
    for name, command in _commands():
        for param in command.params:
            if isinstance(param.type, click.types.FloatParamType) and not isinstance(param.type, FiniteFloatRange):
                yield f"{name} {param.opts[0]}"


def _input_files_not_kind_checked():
    """Existing-file options or arguments (click.Path(exists=True) that takes a file) not refusing a fifo or a
    device as 'not a regular file'."""
    for name, command in _commands():
        for param in command.params:
            kind = param.type
            if isinstance(kind, click.Path) and kind.exists and kind.file_okay and not isinstance(kind, RegularFile):
                yield f"{name} {param.opts[0]}"


def test_every_numeric_option_has_a_range():
    assert list(_numeric_options_without_range()) == []


def test_every_float_option_refuses_nan_and_inf():
    assert list(_float_options_not_finite_checked()) == []


def test_every_input_file_option_refuses_a_non_regular_file():
    assert list(_input_files_not_kind_checked()) == []


@pytest.mark.parametrize("kind, probe", [
    (click.FloatRange(0, 1), _float_options_not_finite_checked),
    (click.Path(exists=True), _input_files_not_kind_checked),
])
def test_the_checks_above_see_a_plain_type(kind, probe):
    @click.command()
    @click.option("--x", type=kind)
    def probe_command(x):  # pragma: no cover - never run
        pass

    cli.add_command(probe_command, "probe-plain")
    try:
        assert "probe-plain --x" in list(probe())
    finally:
        cli.commands.pop("probe-plain")


def test_the_check_above_sees_a_bare_int():
    @click.command()
    @click.option("--n", type=int)
    def probe(n):  # pragma: no cover - never run
        pass

    cli.add_command(probe, "probe-bare-int")
    try:
        assert "probe-bare-int --n" in list(_numeric_options_without_range())
    finally:
        cli.commands.pop("probe-bare-int")


def test_an_unforeseen_error_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "log.jsonl").write_text("")

    def boom(*_a, **_k):
        raise RuntimeError("something deep failed\nsecond line of detail")

    monkeypatch.setattr(plot_module, "plot_run", boom)
    result = check_bad_input(["plot", tmp_path], names=["RuntimeError: something deep failed"])
    assert "second line" not in result.output


def test_verbose_adds_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plot_module, "plot_run", lambda *a, **k: 1 / 0)
    result = run_cli(["-v", "plot", tmp_path])
    assert result.exit_code == 1 and "Error: ZeroDivisionError: division by zero" in result.output
    assert "Traceback" in result.output + capsys.readouterr().err


@pytest.mark.parametrize("code, word", [(errno.ENOSPC, "cannot write"), (errno.EROFS, "cannot write"),
                                        (errno.EACCES, "cannot access")])
def test_os_errors_name_the_file(code, word):
    line = error_line(OSError(code, "ignored", "/data/out/metrics.json"))
    assert line.startswith(f"{word} /data/out/metrics.json: ") and "\n" not in line

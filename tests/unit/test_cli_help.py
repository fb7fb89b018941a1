"""Every `loyalty` command answers --help (exit 0) with the exit codes, and bad usage is exit 2."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from loyalty_cli.main import cli


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name)


ALL = list(commands(cli))


def test_every_command_is_there() -> None:
    names = {" ".join(path) for path in ALL}
    for expected in (
        "jobs interest", "jobs expire", "jobs activate", "jobs run", "features import", "experiments create",
        "experiments sample", "experiments start", "experiments results", "experiments rollout", "experiments list",
        "reconcile", "token",
    ):  # fmt: skip
        assert expected in names, expected


@pytest.mark.parametrize("path", ALL, ids=lambda path: " ".join(path) or "loyalty")
def test_help_on_every_command(path: tuple[str, ...]) -> None:
    answer = CliRunner().invoke(cli, [*path, "--help"])
    assert answer.exit_code == 0, answer.output
    assert "Usage: loyalty" in answer.output and "Exit codes: 0 done" in answer.output


def test_usage_errors_are_exit_2() -> None:
    for args in (
        ["nope"],
        ["jobs", "interest"],
        ["experiments", "results"],
        ["token"],
        ["--deadline-ms", "0", "token"],
    ):
        assert CliRunner().invoke(cli, args).exit_code == 2, args

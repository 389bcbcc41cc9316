"""Every command's --help reads at 80 columns: each option's name is there whole (rich's option
tables cut them to "--threshold-me…"; the CLI uses click's plain help for that reason)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from humwatch.cli import app

COMMAND = typer.main.get_command(app)


def _leaves(group, prefix: tuple[str, ...] = ()):
    ctx = group.context_class(group)  # typer's own click (typer 0.29 carries one)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if hasattr(cmd, "list_commands"):
            yield from _leaves(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


LEAVES = list(_leaves(COMMAND))


def test_every_command_is_checked():
    names = {" ".join(p) for p, _ in LEAVES}
    assert {"fit", "score", "serve", "listen", "compare", "reproduce", "token create"} <= names, names


@pytest.mark.parametrize("path,cmd", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_help_at_80_columns_names_every_option_whole(path, cmd):
    res = CliRunner().invoke(app, [*path, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert "…" not in res.output, res.output
    for p in cmd.params:
        for opt in getattr(p, "opts", []):
            if opt.startswith("--"):
                assert opt in res.output, (opt, res.output)

"""The command line's conventions: shared option definitions that agree with the registries, and one
`error:` line (exit 2) for every usage error."""

import typing

import pytest

from asdkit.cli import app, main
from asdkit.commands import options as o


def test_choices_written_in_the_options_agree_with_the_registries():
    from asdkit.detectors import list_detectors
    from asdkit.methods import list_methods
    from asdkit.models import list_backbones

    assert list(typing.get_args(o.Methods)) == list_methods()
    assert sorted(o.BACKBONES_TEXT.split(", ")) == sorted(list_backbones())
    assert o.DETECTORS_TEXT.split(", ") == list_detectors()


@pytest.mark.parametrize("command", ["run", "fit"])
def test_method_option_lists_every_method(command, capsys):
    from asdkit.methods import list_methods

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in list_methods():
        assert name in out


def test_every_option_has_help():
    import typer.main

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        for p in cmd.params:
            if getattr(p, "param_type_name", "") == "option" and p.name != "help":
                assert p.help, f"{name} {p.opts} has no help text"


@pytest.mark.parametrize("argv, expect", [
    (["run", "--data", "x", "--out", "y", "--method", "magic"], "magic"),
    (["run", "--data", "x"], "--out"),
    (["nope"], "No such command"),
    (["run", "--data", "x", "--out", "y", "--epochs", "many"], "--epochs"),
    (["fit", "--data", "x", "--out", "y", "--threshold-method", "median"], "median"),
    (["run", "--data", "x", "--out", "y", "--bogus"], "--bogus"),
])
def test_usage_errors_are_one_error_line(argv, expect, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2
    assert err.startswith("error:") and expect in err and "\n" not in err


def test_method_options_that_do_not_apply_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--trainable-blocks", "3"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--trainable-blocks does not apply to --method autoencoder" in err
    assert not (tmp_path / "o").exists()

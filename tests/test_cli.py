"""The command line's conventions: shared option definitions that agree with the registries, and one
`error:` line (exit 2) for every usage error."""

import typing

import pytest

from humwatch.cli import app, main
from humwatch.commands import options as o


def test_choices_written_in_the_options_agree_with_the_registries():
    from humwatch.detectors import list_detectors
    from humwatch.methods import list_methods
    from humwatch.models import list_backbones

    assert list(typing.get_args(o.Methods)) == list_methods()
    assert sorted(o.BACKBONES_TEXT.split(", ")) == sorted(list_backbones())
    assert o.DETECTORS_TEXT.split(", ") == list_detectors()


@pytest.mark.parametrize("command", ["run", "fit"])
def test_method_option_lists_every_method(command, capsys):
    from humwatch.methods import list_methods

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


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["run", "--data", "x", "--out", "y", "--method", "magic"], "magic"),
        (["run", "--data", "x"], "--out"),
        (["nope"], "No such command"),
        (["run", "--data", "x", "--out", "y", "--epochs", "many"], "--epochs"),
        (["fit", "--data", "x", "--out", "y", "--threshold-method", "median"], "median"),
        (["run", "--data", "x", "--out", "y", "--bogus"], "--bogus"),
    ],
)
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


def test_device_option_on_every_command_that_runs_a_model(tmp_path, capsys):
    import torch

    from humwatch.models.registry import resolve_device

    mps = torch.backends.mps.is_available()
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    assert resolve_device("cpu") == "cpu"
    for command in ("run", "finetune", "fit", "score", "embed", "reproduce", "demo", "explain"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--device" in capsys.readouterr().out, command
    from humwatch.data.synth import synthesize

    synthesize(tmp_path / "d", machines=["fan"], ids=["00"], n_normal=2, n_anomalous=1, progress=False, channels=1)
    with pytest.raises(SystemExit) as e:
        main(["embed", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "e.npz"), "--device", "tpu", "-q"])
    assert e.value.code == 2 and "unknown device 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as e:
            main(["embed", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "e.npz"), "--device", "cuda", "-q"])
        assert e.value.code == 2 and "CUDA is not available" in capsys.readouterr().err


def test_version_short_help_and_shell_completion(capsys, monkeypatch):
    from humwatch import __version__

    # the shell named, not detected: detection walks up the processes to a shell, and a test worker's
    # (pytest-xdist) may have none ("Shell not supported"); typer's own switch for its tests
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"humwatch {__version__}"
    with pytest.raises(SystemExit) as e:
        main(["fit", "-h"])
    assert e.value.code == 0 and "--folds" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--show-completion", "bash"])
    assert e.value.code == 0 and "_humwatch_completion" in capsys.readouterr().out


def test_tables_are_plain_lines_when_the_output_is_not_a_terminal(capsys):
    from rich.console import Console

    import humwatch.commands.options as opts

    con = Console(file=__import__("io").StringIO(), force_terminal=False)
    from rich.markup import escape

    opts.print_table(
        con, "t", ["a", "b"], [["[bold red]ANOMALOUS[/]", "1.0"], ["x\ny", "2"], [escape("pump[a].wav"), "3"]]
    )  # escaped text comes out as it was
    text = con.file.getvalue()
    assert text.splitlines() == ["# t", "a\tb", "ANOMALOUS\t1.0", "x y\t2", "pump[a].wav\t3"] and "┃" not in text
    con = Console(file=__import__("io").StringIO(), force_terminal=True, width=60)
    opts.print_table(con, "t", ["a", "b"], [["1", "2"]])
    assert "┃" in con.file.getvalue() or "│" in con.file.getvalue()

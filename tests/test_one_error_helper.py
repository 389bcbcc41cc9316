"""One error helper and one kind of error for a damaged file (issue 19, item 5).

* :func:`humwatch.errors.one_line` is the only code that takes the first line of an error: no other
  module of humwatch does it by hand (an AST check of every module).
* A file humwatch wrote that cannot be read back (monitor.json, method.json, a run's results.json,
  config.json and scores.csv, a manifest, a backbone's config.json or humwatch_backbone.json, a
  saved embeddings .npz) is a :class:`~humwatch.errors.DamagedFileError` wherever it is read, with
  the one-line message ``PATH: damaged (reason)``, and exit status 2 from the command line.
* A damaged file that can be made again (a resume record, an output folder's marker) is a miss with
  one warning line that says what is done instead, never ignored in silence.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np
import pytest

from humwatch.errors import ConfigError, DamagedFileError, HumwatchError, one_line

SRC = Path(__file__).resolve().parents[1] / "src" / "humwatch"
DAMAGES = {"not json": b"{not json", "not an object": b"[1, 2]", "not utf-8": b"\xff\xfe{}", "empty": b""}


# ------------------------------------------------------------------------------------ one_line


def test_one_line_is_the_first_line_or_the_type_name():
    assert one_line(ValueError("bad value\nTraceback: more\nand more")) == "bad value"
    assert one_line(ValueError("\n\n  after blank lines  \nrest")) == "after blank lines"
    assert one_line(KeyError()) == "KeyError" and one_line(OSError("")) == "OSError"
    assert one_line(ValueError("x" * 1000), 300) == "x" * 300
    assert one_line(KeyError("k"), typed=True) == "KeyError: 'k'"
    assert one_line(RuntimeError(), typed=True) == "RuntimeError"
    assert one_line(ConfigError("--x: wrong"), typed=True) == "--x: wrong"  # ours say it in words


def _first_line_by_hand(tree: ast.AST) -> list[tuple[int, str]]:
    """Places that take the first (or only the first) line of a text by hand, and helpers that
    stand in for :func:`one_line` under another name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute):
            call, part = node.value, node.slice
            first = (isinstance(part, ast.Constant) and part.value == 0) or (
                isinstance(part, ast.Slice) and part.lower is None and isinstance(part.upper, ast.Constant) and part.upper.value == 1
            )
            newline = any(isinstance(a, ast.Constant) and a.value == "\n" for a in call.args)
            if first and (call.func.attr == "splitlines" or (call.func.attr in ("split", "partition") and newline)):
                found.append((node.lineno, ast.unparse(node)))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
            "first_line" in node.name or node.name in ("_one_line", "one_line", "_reason", "reason")
        ):
            found.append((node.lineno, f"def {node.name}"))
    return found


def test_no_module_but_errors_takes_the_first_line_of_an_error_by_hand():
    modules = sorted(p for p in SRC.rglob("*.py") if p.name != "errors.py" or p.parent != SRC)
    assert len(modules) > 50
    bad = {str(p.relative_to(SRC)): hits for p in modules if (hits := _first_line_by_hand(ast.parse(p.read_text(encoding="utf-8"))))}
    assert not bad, f"use humwatch.errors.one_line instead: {bad}"
    # the check finds what it is for
    assert _first_line_by_hand(ast.parse("m = str(e).strip().splitlines()[0]\nn = t.split('\\n')[:1]\ndef _first_line(e): pass"))


# ------------------------------------------------------------------------- damaged files: one kind


def _damage(path: Path, how: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(DAMAGES[how])
    return path


def _assert_damaged(e: pytest.ExceptionInfo, path: Path) -> None:
    assert e.type is DamagedFileError and isinstance(e.value, HumwatchError)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: damaged (") and msg.endswith(")"), msg


def _monitor(tmp: Path, how: str) -> tuple[Path, object]:
    from humwatch.io import write_manifest
    from humwatch.monitor import load_monitor

    f = _damage(tmp / "mon" / "monitor.json", how)
    write_manifest(f.parent)
    return f, lambda: load_monitor(f.parent)


def _method(tmp: Path, how: str):
    from humwatch.io import write_manifest
    from humwatch.monitor import load_monitor

    f = _damage(tmp / "meth" / "method.json", how)
    write_manifest(f.parent)
    return f, lambda: load_monitor(f.parent)


def _run_file(name: str):
    def make(tmp: Path, how: str):
        from humwatch.rundir import RunDir

        run = tmp / "run"
        run.mkdir()
        (run / "results.json").write_text('{"rows": []}')
        (run / "config.json").write_text('{"config": {}}')
        f = _damage(run / name, how)
        return f, (lambda: RunDir(run).results()) if name == "results.json" else (lambda: RunDir(run).config())

    return make


def _manifest(tmp: Path, how: str):
    from humwatch.io import check_manifest

    (tmp / "saved").mkdir()
    (tmp / "saved" / "a.txt").write_text("a")
    f = _damage(tmp / "saved" / "manifest.json", how)
    return f, lambda: check_manifest(f.parent)


def _backbone(name: str, file: str):
    def make(tmp: Path, how: str):
        from humwatch.models import create_backbone

        f = _damage(tmp / "weights" / file, how)
        return f, lambda: create_backbone(name, weights=str(f.parent))

    return make


CASES = {
    "monitor.json": _monitor,
    "method.json": _method,
    "results.json": _run_file("results.json"),
    "config.json": _run_file("config.json"),
    "manifest.json": _manifest,
    "resnext config.json": _backbone("resnext101_32x8d", "config.json"),  # was silently ignored
    "ast config.json": _backbone("ast", "config.json"),
    "humwatch_backbone.json": _backbone("resnext101_32x8d", "humwatch_backbone.json"),
}


@pytest.mark.parametrize("how", sorted(DAMAGES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_damaged_json_file_is_one_kind_of_error_in_one_line(tmp_path, case, how):
    path, read = CASES[case](tmp_path, how)
    with pytest.raises(HumwatchError) as e:
        read()
    _assert_damaged(e, path)


def test_a_run_s_damaged_scores_csv_and_embeddings_are_the_same_kind(tmp_path):
    from humwatch.embed import EmbeddingSet
    from humwatch.rundir import RunDir

    run = RunDir(tmp_path)
    (tmp_path / "scores.csv").write_text("file,machine_type,machine_id,label,split,score\na.wav,fan,id_00,zero,test,0.5\n")
    with pytest.raises(HumwatchError) as e:
        run.scores()
    _assert_damaged(e, tmp_path / "scores.csv")
    (tmp_path / "scores.csv").write_text("name,value\na.wav,1\n")
    with pytest.raises(HumwatchError) as e:
        run.clips()
    _assert_damaged(e, tmp_path / "scores.csv")
    for name, data in (("broken.npz", b"PK\x03\x04 broken"), ("text.npz", b"not a zip at all")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(HumwatchError) as e:
            EmbeddingSet.load_npz(tmp_path / name)
        _assert_damaged(e, tmp_path / name)


def _cli(argv, capsys) -> tuple[int, str]:
    from humwatch.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["monitor.json", "method.json"])
def test_score_with_a_damaged_monitor_or_method_exits_2_in_one_line(tmp_path, capsys, case):
    from humwatch.audio import write_audio

    wav = tmp_path / "a.wav"
    write_audio(wav, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    path, _ = CASES[case](tmp_path, "not json")
    code, err = _cli(["score", path.parent, wav, "--out", tmp_path / "s.csv"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: damaged (not readable JSON: "), err
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("name", ["results.json", "config.json"])
def test_explain_of_a_run_with_a_damaged_file_exits_2_in_one_line(tmp_path, capsys, name):
    path, _ = CASES[name](tmp_path, "not json")
    (path.parent / "results.md").write_text("| a |\n")
    code, err = _cli(["explain", "--run", path.parent, "--no-models", "--out", tmp_path / "ex"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: damaged (not readable JSON: "), err


# ------------------------------------------------------------- what can be made again: a miss, said


def test_a_damaged_record_is_a_miss_with_one_warning(tmp_path, caplog):
    from humwatch.io import read_record, write_json

    f = tmp_path / "methods" / "knn.json"
    assert read_record(f) is None and not caplog.records  # missing: a miss, nothing to say
    write_json(f, {"status": "ok"})
    assert read_record(f) == {"status": "ok"}
    for how in sorted(DAMAGES):
        _damage(f, how)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="humwatch"):
            assert read_record(f, "running knn again") is None
        [rec] = caplog.records
        msg = rec.getMessage()
        assert "\n" not in msg and msg.startswith(f"{f}: damaged (") and msg.endswith("; running knn again"), msg


def test_a_damaged_output_marker_is_said_and_the_folder_is_not_replaced(tmp_path, caplog):
    from humwatch.io import MARKER, check_out_folder

    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    (out / MARKER).write_bytes(b'{"format": "humwatch.output/1", "kind": "ru')
    with caplog.at_level(logging.WARNING, logger="humwatch"):
        with pytest.raises(ConfigError, match="did not write"):
            check_out_folder(out, overwrite=True, kind="run")
    assert any(r.getMessage().startswith(f"{out / MARKER}: damaged (") for r in caplog.records)
    assert (out / "results.json").read_text() == "{}"

"""Hostile outputs (issue 18): every command that writes checks its output before any work, and
nothing is lost that the command did not write. An output that is, holds or sits in an input is
refused; ``--overwrite`` replaces only a folder humwatch wrote (its ``.humwatch`` marker, of the same
kind); devices, FIFOs, links, folders where a file goes, paths under a file, places that cannot be
written and names over 255 bytes are one ``error:`` line and exit status 2, never a traceback, and
a symbolic link loop in a data folder is a clear skip or error, never a hang."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from test_hostile import MODEL, _tree, humwatch, refused

FEATURES = [
    "--backbone",
    "features",
    "--detector",
    "mahalanobis",
    "--folds",
    "2",
    "--false-alarm-rate",
    "0.25",
    "--threshold-method",
    "percentile",
]
LONG = "n" * 256  # one byte over what a file system takes


def cli(capsys, *args) -> tuple[int, str, str]:
    """The command line in this process (fast; an uncaught exception fails the test as a traceback would)."""
    from humwatch.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    got = capsys.readouterr()
    return e.value.code, got.out, got.err


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (dot-files too) with the SHA-256 of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    good = _tree(root / "good")
    mon = root / "monitor"
    code, _, err = humwatch(
        "fit", "--data", good / "fan/id_00/normal", "--out", mon, *FEATURES, "-q", "--cache", root / "cache", timeout=600
    )
    assert code == 0, err
    run = root / "run"
    code, _, err = humwatch("run", "--data", good, "--out", run, "--epochs", "1", "-q", "--cache", root / "cache", timeout=600)
    assert code == 0, err
    return root, good, mon, run


# ------------------------------------------------------------------ 1: --overwrite and the inputs


def test_an_output_that_is_holds_or_sits_in_an_input_is_refused_and_nothing_is_deleted(base, tmp_path):
    root, good, mon, _ = base
    data = _tree(tmp_path / "d")
    before = snapshot(data)
    refused(humwatch("fit", "--data", data, "--out", data, "--overwrite", *FEATURES), str(data), "itself")
    refused(humwatch("run", "--data", data, "--out", data, "--overwrite", "--epochs", "1"), "itself")
    refused(humwatch("run", "--data", data / "fan", "--out", data, "--overwrite", "--epochs", "1"), "holds")
    refused(humwatch("run", "--data", data, "--out", data / "fan" / "run", "--overwrite", "--epochs", "1"), "inside")
    refused(humwatch("compare", "--data", data, "--out", data / "cmp", "--methods", "autoencoder:epochs=1"), "inside")
    refused(humwatch("reproduce", "--data", data, "--out", tmp_path, "--rows", "autoencoder"), "holds")
    assert snapshot(data) == before and not (data / "fan" / "run").exists() and not (data / "cmp").exists()
    # a monitor among its siblings: exporting it over their folder would delete all of them
    monitors = tmp_path / "monitors"
    shutil.copytree(mon, monitors / "fan-00")
    shutil.copytree(mon, monitors / "pump-00")
    before = snapshot(monitors)
    refused(humwatch("export", monitors / "fan-00", "--out", monitors, "--overwrite"), "holds", "fan-00")
    refused(humwatch("export", monitors / "fan-00", "--out", monitors / "fan-00", "--overwrite"), "itself")
    refused(humwatch("export", monitors / "fan-00", "--out", monitors / "fan-00" / "onnx"), "inside")
    assert snapshot(monitors) == before


def test_overwrite_never_deletes_the_clips_a_manifest_lists(base, tmp_path):
    _, good, _, _ = base
    run = tmp_path / "r"
    code, _, err = humwatch("run", "--data", good, "--out", run, "--epochs", "1", "-q", timeout=600)
    assert code == 0, err
    shutil.copytree(good, run / "clips")  # clips kept in a run folder (ours, so --overwrite could replace it)
    wavs = sorted((run / "clips").rglob("*.wav"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{int('abnormal' in str(p))}\n" for p in wavs))
    refused(humwatch("run", "--data", manifest, "--out", run, "--overwrite", "--epochs", "1"), "holds", ".wav")
    assert all(p.is_file() for p in wavs)


def test_overwrite_replaces_only_a_folder_humwatch_wrote_of_the_same_kind(base, tmp_path, capsys):
    from humwatch.io import MARKER, folder_kind

    root, good, mon, run = base
    assert folder_kind(run) == "run" and folder_kind(mon) == "monitor"
    assert MARKER not in json.loads((mon / "manifest.json").read_text())["files"]  # the seal ignores it
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for args in (("run", "--data", good, "--epochs", "1"), ("fit", "--data", good, *FEATURES), ("export", mon)):
        refused(cli(capsys, *args, "--out", mine, "--overwrite"), "humwatch did not write", MARKER)
    refused(cli(capsys, "fit", "--data", good, *FEATURES, "--out", run, "--overwrite"), "is a run directory, not a monitor")
    refused(cli(capsys, "run", "--data", good, "--epochs", "1", "--out", mon, "--overwrite"), "is a monitor, not a run directory")
    for args in (
        ("compare", "--data", good, "--methods", "autoencoder:epochs=1"),
        ("reproduce", "--data", good),
        ("explain", "--clips", good / "fan/id_00/normal/00000000.wav", "--no-models"),
        ("synth",),
    ):
        where = [mine] if args[0] == "synth" else ["--out", mine]
        refused(cli(capsys, *args, *where), "humwatch did not write")
    assert snapshot(mine) == {"thesis.tex": hashlib.sha256(b"years of work").hexdigest()}
    # a folder humwatch wrote, of the same kind, is replaced whole
    before = snapshot(run)
    code, _, err = humwatch(
        "run", "--data", good, "--out", run, "--epochs", "2", "--overwrite", "-q", "--cache", root / "cache", timeout=600
    )
    assert code == 0, err
    assert snapshot(run) != before and folder_kind(run) == "run"
    assert json.loads((run / "config.json").read_text())["config"]["settings"]["epochs"] == 2


# -------------------------------------------------------- 2: devices, FIFOs, links and the inputs


def test_devices_fifos_links_and_inputs_are_never_written_over(base, tmp_path, capsys):
    root, good, mon, _ = base
    wav = tmp_path / "in.wav"
    shutil.copy(good / "fan/id_00/normal/00000000.wav", wav)
    original = wav.read_bytes()
    score = lambda out: cli(capsys, "score", mon, wav, "--out", out, "--cache", tmp_path / "c")  # noqa: E731
    if os.path.exists("/dev/full"):
        refused(score("/dev/full"), "/dev/full", "character device")
        assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)
    fifo = tmp_path / "s.csv"
    os.mkfifo(fifo)
    refused(humwatch("score", mon, wav, "--out", fifo, timeout=60), "FIFO")  # no hang: it is never opened
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "elsewhere.csv")
    refused(score(link), "symbolic link")
    refused(score(wav), "in.wav itself")
    hard = tmp_path / "hard.csv"
    os.link(wav, hard)
    refused(score(hard), "itself")  # the same file under another name
    refused(score(mon / "scores.csv"), "inside")  # would break the monitor's seal
    inside = good / "fan/id_00/normal"
    kept = (inside / "00000001.wav").read_bytes()
    refused(cli(capsys, "score", mon, inside, "--out", inside / "00000001.wav"), "is a recording in")
    assert (inside / "00000001.wav").read_bytes() == kept
    assert wav.read_bytes() == original and not (tmp_path / "c").exists()
    npy = tmp_path / "x.npy"
    os.mkfifo(npy)
    refused(cli(capsys, "features", wav, "--out", npy), "FIFO")
    npz = tmp_path / "e.npz"
    npz.symlink_to("/dev/null")
    refused(cli(capsys, "embed", "--data", good, "--out", npz, *MODEL), "symbolic link")
    refused(cli(capsys, "explain", mon, wav, "--out", wav / "x"), "in.wav is a file, not a folder")


# ---------------------------------------------------------- 7: --out problems before any work


def _commands(root: Path, good: Path, mon: Path, run: Path, bad: Path) -> dict[str, tuple]:
    """Each command that writes, as (arguments before the output, how the output is given, a file name
    or a folder). Their inputs include ``bad`` where they read audio: an output error that names
    the output, not the bad clip, came before any work."""
    return {
        "score": (("score", mon, bad), "--out", "s.csv"),
        "explain-clips": (("explain", "--clips", bad, "--no-models"), "--out", None),
        "explain-run": (("explain", "--run", run, "--no-models"), "--out", None),
        "explain-alarm": (("explain", mon, bad), "--out", None),
        "features": (("features", bad), "--out", "f.npy"),
        "embed": (("embed", "--data", good, *MODEL), "--out", "e.npz"),
        "run": (("run", "--data", good, "--epochs", "1"), "--out", None),
        "finetune": (("finetune", "--data", good, *MODEL), "--out", None),
        "fit": (("fit", "--data", good, *FEATURES), "--out", None),
        "export": (("export", mon), "--out", None),
        "compare": (("compare", "--data", good, "--methods", "autoencoder:epochs=1"), "--out", None),
        "reproduce": (("reproduce", "--data", good, "--rows", "autoencoder"), "--out", None),
        "demo": (("demo", "--normal", "1", "--anomalous", "1"), "--out", None),
        "synth": (("synth", "--normal", "1", "--anomalous", "0"), None, None),
    }


@pytest.mark.parametrize("case", ["long-name", "under-a-file", "cannot-write"])
def test_every_output_is_checked_before_any_work(base, tmp_path, capsys, case):
    root, good, mon, run = base
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEnot audio")
    afile = tmp_path / "afile"
    afile.write_text("x")
    if case == "cannot-write" and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here to stand for a place nothing can be written")
    place = {"long-name": tmp_path, "under-a-file": afile, "cannot-write": Path("/proc")}[case]
    words = {"long-name": "at most 255", "under-a-file": "afile is a file, not a folder", "cannot-write": "/proc is not writable"}[case]
    for name, (args, option, filename) in _commands(root, good, mon, run, bad).items():
        leaf = LONG + (Path(filename).suffix if filename else "") if case == "long-name" else (filename or "out")
        out = place / leaf
        got = cli(capsys, *args, *([option, out] if option else [out]))
        refused(got, words)
        assert "bad.wav" not in got[2], name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "bad.wav"]  # nothing made, nothing left


def test_score_and_explain_refuse_a_folder_where_a_file_goes_before_scoring(base, tmp_path, capsys):
    root, good, mon, _ = base
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEnot audio")
    refused(cli(capsys, "score", mon, bad, "--out", tmp_path, "--cache", tmp_path / "c"), "is a folder")
    (tmp_path / "bad_why.png").mkdir()
    refused(cli(capsys, "explain", mon, bad, "--out", tmp_path), "bad_why.png", "is a folder")
    (tmp_path / "report").write_text("x")
    refused(cli(capsys, "explain", "--clips", bad, "--out", tmp_path / "report", "--no-models"), "not a folder")
    assert not (tmp_path / "c").exists()


# --------------------------------------------------------------- a symbolic link loop in the data


def test_a_symbolic_link_loop_in_a_data_folder_is_a_clear_skip(base, tmp_path):
    root, good, mon, _ = base
    data = _tree(tmp_path / "d")
    normal = data / "fan/id_00/normal"
    (normal / "up").symlink_to("..")  # a folder loop: listed once, never followed round
    (normal / "loop.wav").symlink_to("loop.wav")  # a file that leads nowhere
    refused(humwatch("run", "--data", data, "--out", tmp_path / "r", "--epochs", "1"), "loop.wav")
    assert not (tmp_path / "r").exists()
    code, out, err = humwatch("run", "--data", data, "--out", tmp_path / "r", "--epochs", "1", "--skip-bad", "-q", timeout=600)
    assert code == 0, err
    results = json.loads((tmp_path / "r/results.json").read_text())
    assert [Path(s["file"]).name for s in results["skipped"]] == ["loop.wav"]
    listed = [line.split(",")[0] for line in (tmp_path / "r/split.csv").read_text().splitlines()[1:]]
    assert len(listed) == len(set(map(os.path.realpath, listed))) == 12  # 11 clips and loop.wav, once each
    assert not any("/up/" in p for p in listed)  # none through the folder loop
    code, out, err = humwatch("score", mon, data, "--skip-bad", "--out", tmp_path / "s.csv", timeout=600)
    assert code in (0, 1) and "Traceback" not in err and "skipped 1 bad file" in out + err, err
    refused(humwatch("score", mon, data, "--out", tmp_path / "s2.csv"), "loop.wav")

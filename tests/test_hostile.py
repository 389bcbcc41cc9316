"""Hostile input, class by class, for every command that reads audio, models or manifests: each case
runs the real command line in a subprocess under a timeout and asserts exit status 2 with exactly
one `error:` line and no traceback (or, with --skip-bad, a skip that is counted), no hang and no
partial output. The corpus is generated here, at test time."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TINY_CNN = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "cardinality": 2, "base_width": 32, "stem_width": 8}
MODEL = ["--backbone", "resnext101_32x8d", "--weights", "none", "--backbone-config", json.dumps(TINY_CNN)]
FIT = ["--detector", "mahalanobis", "--folds", "2", "--false-alarm-rate", "0.25", "--threshold-method", "percentile"]
TIMEOUT = 120


def humwatch(*args, cwd=None, timeout=TIMEOUT) -> tuple[int, str, str]:
    env = {**os.environ, "HUMWATCH_PROGRESS": "0", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "humwatch.cli", *map(str, args)],
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        text=True,
        errors="surrogateescape",
    )
    return p.returncode, p.stdout, p.stderr


def refused(result, *words) -> None:
    code, out, err = result
    assert "Traceback" not in err + out, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, (code, err)
    for w in words:
        assert w in errors[0], (w, errors[0])


def _tone(path: Path, seconds=2.0, sr=16000, seed=0, amp=0.3, anomalous=False) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = amp * np.sin(2 * np.pi * (440 + rng.normal(0, 3)) * t) + 0.01 * rng.standard_normal(t.size)
    if anomalous:
        y += 0.4 * rng.standard_normal(t.size) * (rng.random(t.size) < 0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(os.fsencode(path), np.clip(y, -1, 1).astype(np.float32), sr)
    return path


def _tree(root: Path, n_normal=8, n_anomalous=3) -> Path:
    for k in range(n_normal):
        _tone(root / "fan" / "id_00" / "normal" / f"{k:08d}.wav", seed=k)
    for k in range(n_anomalous):
        _tone(root / "fan" / "id_00" / "abnormal" / f"{k:08d}.wav", seed=100 + k, anomalous=True)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    good = _tree(root / "good")
    mon = root / "monitor"
    code, out, err = humwatch(
        "fit", "--data", good / "fan" / "id_00" / "normal", "--out", mon, *MODEL, *FIT, "-q", "--cache", root / "cache"
    )
    assert code == 0, err
    return root, good, mon


# ----------------------------------------------------------------------------- class 1: hangs


def _not_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    fifo = folder / "fifo.wav"
    os.mkfifo(fifo)
    zero = folder / "zero.wav"
    zero.symlink_to("/dev/zero")
    return [fifo, zero]


@pytest.mark.parametrize("which", [0, 1], ids=["fifo", "dev-zero"])
def test_fifo_and_dev_zero_are_refused_at_once(base, tmp_path, which):
    root, good, mon = base
    bad = _not_files(tmp_path / "odd")[which]
    refused(humwatch("features", bad, "--out", tmp_path / "x.npy"), bad.name, "not an audio file")
    refused(humwatch("score", mon, bad, "--out", tmp_path / "s.csv", "--cache", tmp_path / "c"), bad.name)
    assert not (tmp_path / "s.csv").exists()
    code, out, err = humwatch("score", mon, bad, good / "fan/id_00/normal/00000000.wav", "--skip-bad", "--out", tmp_path / "s.csv")
    assert code in (0, 1) and "skipped 1 bad file" in out + err
    data = _tree(tmp_path / "d")
    target = data / "fan/id_00/normal" / bad.name
    if which == 0:
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    refused(humwatch("embed", "--data", data, "--out", tmp_path / "e.npz", *MODEL, "--cache", tmp_path / "c"), bad.name)
    code, out, err = humwatch("embed", "--data", data, "--out", tmp_path / "e.npz", *MODEL, "--skip-bad", "--cache", tmp_path / "c")
    assert code == 0 and "skipped 1 bad file" in out + err, err
    refused(humwatch("fit", "--data", data / "fan/id_00/normal", "--out", tmp_path / "m", *MODEL, *FIT), bad.name)
    assert not (tmp_path / "m").exists()
    refused(humwatch("run", "--data", data, "--out", tmp_path / "r", "--epochs", "1", "--cache", tmp_path / "c"), bad.name)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------- class 2: finite samples no frontend can use


def _huge(path: Path) -> Path:
    y = np.full(16000 * 2, 1e30, dtype=np.float32)
    y[::2] = -1e30
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, 16000, subtype="FLOAT")
    return path


def test_float_wav_near_1e30_is_an_audio_error_and_can_be_skipped(base, tmp_path):
    root, good, mon = base
    huge = _huge(tmp_path / "huge.wav")
    for fe in ("ae", "cnn"):  # (AST's Kaldi fbank floors its energies, so it makes finite numbers of it)
        refused(humwatch("features", huge, "--frontend", fe, "--out", tmp_path / f"{fe}.npy"), "huge.wav", "not finite")
        assert not (tmp_path / f"{fe}.npy").exists()
    refused(humwatch("score", mon, huge, "--out", tmp_path / "s.csv"), "huge.wav")
    code, out, err = humwatch("score", mon, huge, good / "fan/id_00/normal/00000001.wav", "--skip-bad", "--out", tmp_path / "s.csv")
    assert code in (0, 1) and "skipped 1 bad file" in out + err, err
    data = _tree(tmp_path / "d")
    _huge(data / "fan/id_00/normal/huge.wav")
    refused(humwatch("run", "--data", data, "--out", tmp_path / "r", "--epochs", "1"), "huge.wav")
    code, out, err = humwatch("run", "--data", data, "--out", tmp_path / "r", "--epochs", "1", "--skip-bad", "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "r/results.json").read_text())["skipped"][0]["file"].endswith("huge.wav")
    refused(humwatch("finetune", "--data", data, "--out", tmp_path / "f", *MODEL), "huge.wav")
    refused(humwatch("fit", "--data", data / "fan/id_00/normal", "--out", tmp_path / "m", *MODEL, *FIT), "huge.wav")
    refused(humwatch("explain", "--clips", huge, "--out", tmp_path / "x", "--no-models"), "huge.wav")


# ----------------------------------------------------------------- class 3: tampered model folders


def _load(path):
    from humwatch.monitor import load_monitor

    return load_monitor(path)


def test_every_byte_of_every_monitor_file_is_checked(base, tmp_path):
    import shutil

    from humwatch.errors import HumwatchError

    root, good, mon = base
    # every file the monitor is made of; .humwatch, the output marker, only says who wrote the folder
    # (what --overwrite may replace) and is not read by scoring
    files = sorted(p.relative_to(mon) for p in mon.rglob("*") if p.is_file() and p.name != ".humwatch")
    assert (mon / ".humwatch").is_file()
    assert {"monitor.json", "manifest.json", "method/method.json", "method/detector.safetensors"} <= {f.as_posix() for f in files}
    for rel in files:
        copy = tmp_path / f"m-{rel.as_posix().replace('/', '_')}"
        shutil.copytree(mon, copy)
        data = bytearray((copy / rel).read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit of one byte
        (copy / rel).write_bytes(bytes(data))
        with pytest.raises(HumwatchError) as e:
            _load(copy)
        assert "\n" not in str(e.value), rel


def _reseal(folder: Path) -> None:
    from humwatch.io import write_manifest

    for d in sorted({p.parent for p in folder.rglob("manifest.json")}, key=lambda p: -len(p.parts)):
        write_manifest(d)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.update(threshold=float("nan")), "threshold must be a finite number"),
        (lambda d: d["audio"].update(seconds=-5), "audio.seconds must be"),
        (lambda d: d["audio"].update(seconds=1e9), "audio.seconds must be"),
        (lambda d: d.pop("audio"), "field 'audio' is missing"),
        (lambda d: d["threshold_rule"].update(method="median"), "threshold_rule.method"),
        (lambda d: d.update(hop=0), "hop must be"),
        (lambda d: d.update(method="magic"), "method must be one of"),
    ],
)
def test_every_field_of_monitor_json_is_checked_even_when_the_manifest_is_rewritten(base, tmp_path, edit, words):
    import shutil

    from humwatch.monitor import MonitorError

    _, _, mon = base
    copy = tmp_path / "m"
    shutil.copytree(mon, copy)
    doc = json.loads((copy / "monitor.json").read_text())
    edit(doc)
    (copy / "monitor.json").write_text(json.dumps(doc))
    with pytest.raises(MonitorError, match="checksum"):
        _load(copy)
    _reseal(copy)
    with pytest.raises(MonitorError, match=words):
        _load(copy)


def test_method_state_fields_and_other_weights_are_refused(base, tmp_path, capsys):
    import shutil

    from humwatch.monitor import MonitorError

    _, good, mon = base
    copy = tmp_path / "m"
    shutil.copytree(mon, copy)
    doc = json.loads((copy / "method/method.json").read_text())
    del doc["state"]["backbone"]["cache_key"]  # the weights check
    (copy / "method/method.json").write_text(json.dumps(doc))
    _reseal(copy)
    with pytest.raises(MonitorError, match="cache_key"):
        _load(copy)
    # other weights than the ones the monitor was fitted with: refused, never silently used
    from humwatch.models import create_backbone

    other = create_backbone("resnext101_32x8d", weights="none", config=TINY_CNN, seed=7).save(tmp_path / "other")
    refused(humwatch("score", mon, good / "fan/id_00/normal/00000000.wav", "--weights", other, "--out", tmp_path / "s.csv"), "not the ones")


def test_a_fine_tuned_folder_is_sealed(base, tmp_path):
    from humwatch.errors import ConfigError
    from humwatch.finetune import load_finetuned

    _, good, _ = base
    code, out, err = humwatch("finetune", "--data", good, "--out", tmp_path / "r", *MODEL, "--save-model", "-q")
    assert code == 0, err
    model = tmp_path / "r/models/fan"
    assert (model / "manifest.json").is_file() and (model / "backbone/manifest.json").is_file()
    head = model / "head.safetensors"
    head.write_bytes(head.read_bytes()[:-1] + bytes([head.read_bytes()[-1] ^ 1]))
    with pytest.raises(ConfigError, match="checksum"):
        load_finetuned(model)
    refused(humwatch("score", model, good / "fan/id_00/normal/00000000.wav", "--out", tmp_path / "s.csv"), "checksum")


# --------------------------------------------------------------- class 4: half-written run folders


def test_a_failing_run_leaves_no_folder_and_an_old_one_untouched(base, tmp_path):
    _, good, _ = base
    data = _tree(tmp_path / "d")
    (data / "fan/id_00/normal/00000003.wav").write_bytes(b"RIFF....WAVEnot audio")
    refused(humwatch("run", "--data", data, "--out", tmp_path / "new", "--epochs", "1"), "00000003.wav")
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new.*"))  # not even a split.csv
    code, _, err = humwatch("run", "--data", good, "--out", tmp_path / "old", "--epochs", "1", "-q")
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir() if p.is_file()}
    refused(humwatch("run", "--data", good, "--out", tmp_path / "old", "--epochs", "1"), "--overwrite")
    refused(humwatch("run", "--data", data, "--out", tmp_path / "old", "--epochs", "1", "--overwrite"), "00000003.wav")
    after = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir() if p.is_file()}
    assert after == before  # the old run, whole
    code, _, err = humwatch("run", "--data", good, "--out", tmp_path / "old", "--epochs", "2", "--overwrite", "-q")
    assert code == 0 and json.loads((tmp_path / "old/config.json").read_text())["config"]["settings"]["epochs"] == 2


# ---------------------------------------------------------------------------- class 5: leaks


def test_a_split_that_would_leak_is_refused(base, tmp_path):
    _, good, _ = base
    code, _, err = humwatch("run", "--data", good, "--out", tmp_path / "r", "--epochs", "1", "-q")
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "r/split.csv")))
    train = next(r for r in rows if r["split"] == "train")
    dup = tmp_path / "dup.csv"
    with open(dup, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows + [{**train, "split": "test"}])
    refused(humwatch("run", "--split", dup, "--out", tmp_path / "x", "--epochs", "1"), "listed in train and test")
    other = _tree(tmp_path / "elsewhere")
    refused(humwatch("run", "--data", other, "--split", tmp_path / "r/split.csv", "--out", tmp_path / "y"), "outside --data")
    code, _, err = humwatch("run", "--split", tmp_path / "r/split.csv", "--out", tmp_path / "z", "--epochs", "1", "-q")
    assert code == 0, err


# ------------------------------------------------------------------------- class 6: names, paths


def test_names_that_are_not_utf8_and_outputs_that_cannot_be_written(base, tmp_path):
    _, good, mon = base
    raw = os.fsencode(tmp_path) + b"/caf\xe9.wav"
    _tone(Path(os.fsdecode(raw)))
    name = os.fsdecode(raw)
    code, out, err = humwatch("features", name, "--out", tmp_path / "f.npy")
    assert code == 0 and (tmp_path / "f.npy").is_file(), err
    code, out, err = humwatch("score", mon, name, "--out", tmp_path / "s.csv")
    assert code in (0, 1), err
    assert open(tmp_path / "s.csv", "rb").read().count(b"caf\xe9.wav") == 1  # the name's own bytes
    data = _tree(tmp_path / "d")
    _tone(Path(os.fsdecode(os.fsencode(data) + b"/fan/id_00/normal/\xff\xfe.wav")), seed=9)
    code, out, err = humwatch("run", "--data", data, "--out", tmp_path / "r", "--epochs", "1", "-q")
    assert code == 0, err
    (tmp_path / "afile").write_text("x")
    refused(humwatch("features", name, "--out", tmp_path), "is a folder")
    refused(humwatch("features", name, "--out", tmp_path / "afile" / "x.npy"), "not a folder")
    refused(humwatch("run", "--data", good, "--out", tmp_path / "afile" / "run"), "not a folder")
    refused(humwatch("fit", "--data", good, "--out", tmp_path / "afile", *MODEL), "not a folder")
    refused(humwatch("embed", "--data", good, "--out", tmp_path / "afile" / "e.npz"), "not a folder")
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        refused(humwatch("run", "--data", good, "--out", ro / "run"), "not writable")


def test_manifests_as_spreadsheets_save_them(base, tmp_path):
    _, good, _ = base
    files = sorted((good / "fan/id_00").rglob("*.wav"))
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfpath,label\n" + b"".join(f"{p},{int('abnormal' in str(p))}\n".encode() for p in files))
    code, _, err = humwatch("run", "--data", bom, "--out", tmp_path / "r", "--epochs", "1", "-q")
    assert code == 0, err
    short = tmp_path / "short.csv"
    short.write_text("path,machine_type,machine_id,label\n" + f"{files[0]},fan,id_00,0\n" + f"{files[1]},fan\n")
    refused(humwatch("run", "--data", short, "--out", tmp_path / "x"), "short.csv:3", "2 field(s), the header has 4")


# ----------------------------------------------------------------- class 7: late or silent errors


def test_errors_come_at_once_and_say_what_is_wrong(base, tmp_path):
    from humwatch.audio import load_audio
    from humwatch.errors import AudioError

    _, good, _ = base
    refused(humwatch("reproduce", "--data", good, "--out", tmp_path / "t", "--snr", "loud"), "loud")
    assert not (tmp_path / "t" / "cells").exists()
    (tmp_path / "empty").mkdir()
    refused(humwatch("explain", "--run", tmp_path / "empty"), "holds no run")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    refused(humwatch("explain", "--clips", bad, "--out", tmp_path / "x", "--no-models"), "bad.wav")
    refused(
        humwatch("explain", "--clips", good / "fan/id_00/normal/00000000.wav", "--out", tmp_path / "x", "--backbone", "vit"),
        "unknown backbone 'vit'",
    )
    quiet = _tone(tmp_path / "quiet.wav", amp=0.0)
    sf.write(str(quiet), np.full(16000, 1e-7, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="peak amplitude 1e-07") as e:
        load_audio(quiet)
    assert "all samples are zero" not in str(e.value)
    mp3 = tmp_path / "mp3s" / "normal" / "a.mp3"
    mp3.parent.mkdir(parents=True)
    sf.write(str(mp3), (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000, format="MP3")
    from humwatch.data import load_dataset

    assert [Path(c.path).name for c in load_dataset(tmp_path / "mp3s")] == ["a.mp3"]


# --------------------------------------------------------------------------- class 8: permissions


def test_every_saved_file_has_the_same_mode(base):
    _, _, mon = base
    modes = {stat.S_IMODE(p.stat().st_mode) for p in mon.rglob("*") if p.is_file()}
    assert len(modes) == 1, modes

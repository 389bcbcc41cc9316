"""Issue 18, the monitor's part: nothing lost, nothing silent.

* A **resealed** monitor: a fitted tiny monitor is edited field by field and array by array (NaN, 0,
  1e308, negative, wrong type, swapped or zeroed arrays, 8 kHz, ...), its manifests recomputed with
  :func:`humwatch.io.write_manifest` as an attacker (or a careless script) would, and each edit must
  be refused in one line (``humwatch score``: exit 2, one ``error:`` line, no traceback), or, where
  harmless, give the same scores.
* A score that is **not finite** is an error for its recording (or counted under ``--skip-bad``),
  never a silent "0 of 0 recordings, all normal".
* A WAV whose header says **1 Hz** is refused before decoding, by every command that reads audio.
* A monitor written by a **newer humwatch** loads with a clear warning line.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import make_mimii_tree
from test_hostile import humwatch, refused

from humwatch.calibrate import fit_monitor
from humwatch.cli import main
from humwatch.io import weight_fingerprints, write_manifest
from humwatch.monitor import Monitor, MonitorError

SECONDS = 2.0


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny weight-free monitor (features + mahalanobis on 8 two-second clips), its data and its scores."""
    from humwatch.data import load_dataset

    root = tmp_path_factory.mktemp("hmon")
    tree = make_mimii_tree(root / "data", machines=("fan",), ids=("00",), n_normal=8, n_anomalous=2, seconds=SECONDS)
    clips = load_dataset(tree)
    mon, _ = fit_monitor(
        clips,
        "embed-detect",
        {"backbone": "features", "detector": "mahalanobis", "standardize": True},
        false_alarm_rate=0.25,
        threshold_method="percentile",
        folds=2,
        seconds=SECONDS,
        progress=False,
    )
    mon.save(root / "monitor")
    wavs = sorted(str(c.path) for c in clips)[:3]
    _, scores, _ = Monitor.load(root / "monitor").score_clips([c for c in clips if str(c.path) in wavs], progress=False)
    return root, root / "monitor", wavs, scores


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _reseal(mon: Path) -> None:
    """What an editor that knows about manifests does after changing files: recompute them all."""
    write_manifest(mon / "method")
    write_manifest(mon)


def _edit_json(mon: Path, name: str, change) -> None:
    path = mon / name
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))  # (NaN and Infinity are written as JSON's common extension)
    _reseal(mon)


def _score_refused(mon: Path, wav: str, tmp_path: Path, capsys, *words) -> str:
    """`humwatch score MON WAV`, in this process: exit 2, one `error:` line naming ``words``, no traceback, no output."""
    out = tmp_path / "scores.csv"
    with pytest.raises(SystemExit) as e:
        main(["score", str(mon), wav, "--out", str(out), "-q"])
    cap = capsys.readouterr()
    err = [line for line in cap.err.splitlines() if line.strip()]
    assert e.value.code == 2, cap
    assert "Traceback" not in cap.err + cap.out
    assert len(err) == 1 and err[0].startswith("error:"), err
    for w in words:
        assert w in err[0], (w, err[0])
    assert not out.exists()
    return err[0]


def _set(path: str, value):
    """An edit of monitor.json or method.json: ``a.b.c`` set to ``value`` (``...`` deletes it)."""

    def change(doc):
        *parents, last = path.split(".")
        d = doc
        for p in parents:
            d = d[p]
        if value is ...:
            del d[last]
        else:
            d[last] = value

    return change


# ------------------------------------------------------------- monitor.json, edited and resealed

MONITOR_EDITS = {
    "threshold NaN": ("threshold", float("nan"), "threshold"),
    "threshold inf": ("threshold", float("inf"), "threshold"),
    "threshold 0": ("threshold", 0.0, "threshold"),
    "threshold negative": ("threshold", -1.0, "threshold"),
    "threshold 1e308": ("threshold", 1e308, "threshold"),
    "threshold text": ("threshold", "5", "threshold"),
    "threshold true": ("threshold", True, "threshold"),
    "threshold missing": ("threshold", ..., "threshold"),
    "score_range missing": ("threshold_rule.score_range", ..., "score_range"),
    "score_range reversed": ("threshold_rule.score_range", [1e9, 1.0], "score_range"),
    "score_range text": ("threshold_rule.score_range", ["a", "b"], "score_range"),
    "false_alarm_rate 0": ("threshold_rule.false_alarm_rate", 0, "false_alarm_rate"),
    "threshold method unknown": ("threshold_rule.method", "magic", "threshold_rule.method"),
    "folds 0": ("threshold_rule.folds", 0, "folds"),
    "per recording": ("threshold_rule.per", "recording", "threshold_rule.per"),
    "rule unknown field": ("threshold_rule.boost", 2, "threshold_rule.boost"),
    "sample rate 8 kHz": ("audio.sample_rate", 8000, "16000"),
    "sample rate 1 Hz": ("audio.sample_rate", 1, "audio.sample_rate"),
    "sample rate 1e9": ("audio.sample_rate", 10**9, "audio.sample_rate"),
    "sample rate text": ("audio.sample_rate", "16000", "audio.sample_rate"),
    "seconds 0": ("audio.seconds", 0, "audio.seconds"),
    "seconds 1e308": ("audio.seconds", 1e308, "audio.seconds"),
    "seconds 3 (not the method's)": ("audio.seconds", 3.0, "audio"),
    "channel -1": ("audio.channel", -1, "audio.channel"),
    "channel 3 (not the method's)": ("audio.channel", 3, "audio"),
    "audio unknown field": ("audio.gain", 2, "audio.gain"),
    "hop 0": ("hop", 0, "hop"),
    "hop 1e308": ("hop", 1e308, "hop"),
    "n_train 0": ("n_train", 0, "n_train"),
    "n_train negative": ("n_train", -5, "n_train"),
    "n_train text": ("n_train", "8", "n_train"),
    "n_train not the method's": ("n_train", 9, "n_train"),
    "reference_windows -1": ("reference_windows", -1, "reference_windows"),
    "reference_windows 0 with a reference": ("reference_windows", 0, "reference_windows"),
    "random_init text": ("random_init", "banana", "random_init"),
    "random_init not the method's": ("random_init", True, "random_init"),
    "machines empty": ("machines", [], "machines"),
    "machines text": ("machines", "fan", "machines"),
    "label empty": ("label", "", "label"),
    "label number": ("label", 5, "label"),
    "weights number": ("weights", 5, "weights"),
    "created text": ("created", "yesterday", "created"),
    "humwatch_version text": ("humwatch_version", "banana", "humwatch_version"),
    "humwatch_version number": ("humwatch_version", 7, "humwatch_version"),
    "method another": ("method", "autoencoder", "autoencoder"),
    "method unknown": ("method", "nope", "method"),
    "format_version 2": ("format_version", 2, "format 2"),
    "unknown field": ("extra", 1, "extra"),
    "fingerprints missing": ("fingerprints", ..., "fingerprints"),
    "fingerprints empty": ("fingerprints", {}, "does not record"),
    "fingerprint changed": ("fingerprints.reference.safetensors", "0" * 64, "reference.safetensors"),
}


@pytest.mark.parametrize("case", list(MONITOR_EDITS))
def test_a_resealed_monitor_json_with_an_absurd_field_is_refused_in_one_line(fitted, tmp_path, capsys, case):
    root, src, wavs, _ = fitted
    key, value, word = MONITOR_EDITS[case]
    mon = _copy(src, tmp_path / "m")
    if key.startswith("fingerprints."):  # (the file name holds a dot)
        _edit_json(mon, "monitor.json", lambda d: d["fingerprints"].__setitem__(key.split(".", 1)[1], value))
    else:
        _edit_json(mon, "monitor.json", _set(key, value))
    with pytest.raises(MonitorError) as e:
        Monitor.load(mon)
    assert word in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)
    _score_refused(mon, wavs[0], tmp_path, capsys, word)


# ------------------------------------------------------------- method.json, edited and resealed

METHOD_EDITS = {
    "sample rate 8 kHz": ("audio.sample_rate", 8000, "8000"),
    "sample rate 1 Hz": ("audio.sample_rate", 1, "audio.sample_rate"),
    "seconds NaN": ("audio.seconds", float("nan"), "audio.seconds"),
    "n_train text": ("n_train", "x", "n_train"),
    "n_train negative": ("n_train", -1, "n_train"),
    "random_init text": ("info.random_init", "yes", "info.random_init"),
    "humwatch_version number": ("humwatch_version", 7, "humwatch_version"),
    "unknown field": ("extra", [1, 2], "extra"),
    "fingerprints missing": ("fingerprints", ..., "fingerprints"),
    "fingerprints not a mapping": ("fingerprints", "0" * 64, "fingerprints"),
    "detector unknown": ("settings.detector", "nope", "detector"),
    "detector parameter unknown": ("settings.detector_params", {"nonsense": 1}, "nonsense"),
    "state arrays shapes": ("state.arrays", {"location": [1]}, "shapes"),
    "state detector not the settings'": ("state.detector.params", {"standardize": False}, "settings give"),
    "state detector another kind": ("state.detector.name", "knn", "knn"),
}


@pytest.mark.parametrize("case", list(METHOD_EDITS))
def test_a_resealed_method_json_with_an_absurd_field_is_refused_in_one_line(fitted, tmp_path, capsys, case):
    root, src, wavs, _ = fitted
    key, value, word = METHOD_EDITS[case]
    mon = _copy(src, tmp_path / "m")
    _edit_json(mon, "method/method.json", _set(key, value))
    with pytest.raises(MonitorError) as e:
        Monitor.load(mon)
    assert word in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)
    _score_refused(mon, wavs[0], tmp_path, capsys, word)


def test_harmless_edits_give_the_same_scores(fitted, tmp_path):
    """Fields that only describe (when it was made, its label) may be rewritten with valid values."""
    root, src, wavs, scores = fitted
    mon = _copy(src, tmp_path / "m")
    _edit_json(mon, "monitor.json", lambda d: d.update(created="2030-01-01T00:00:00+00:00", label="my fan", machines=["fan id_07"]))
    from humwatch.data.clips import Clip

    _, again, _ = Monitor.load(mon).score_clips([Clip(w, "x", "x", 0) for w in wavs], progress=False)
    np.testing.assert_allclose(again, scores, rtol=1e-9)


# ------------------------------------------------------------------ weights, edited and resealed


def _edit_arrays(path: Path, change) -> None:
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(path))
    change(arrays)
    save_file(arrays, str(path))


ARRAY_EDITS = {
    "zeroed": ("method/detector.safetensors", lambda a: a.update({k: np.zeros_like(v) for k, v in a.items()})),
    "NaN": ("method/detector.safetensors", lambda a: a.update(location=np.full_like(a["location"], np.nan))),
    "swapped": ("method/detector.safetensors", lambda a: a.update(scaler_mean=a["scaler_scale"], scaler_scale=a["scaler_mean"])),
    "scaled": ("method/detector.safetensors", lambda a: a.update(precision=a["precision"] * 1e-6)),
    "reference zeroed": ("reference.safetensors", lambda a: a.update({k: np.zeros_like(v) for k, v in a.items()})),
}


@pytest.mark.parametrize("case", list(ARRAY_EDITS))
def test_resealed_weights_are_refused_by_their_fingerprint(fitted, tmp_path, capsys, case):
    root, src, wavs, _ = fitted
    name, change = ARRAY_EDITS[case]
    mon = _copy(src, tmp_path / "m")
    _edit_arrays(mon / name, change)
    _reseal(mon)
    with pytest.raises(MonitorError, match="differ from the fingerprint"):
        Monitor.load(mon)
    _score_refused(mon, wavs[0], tmp_path, capsys, Path(name).name, "fingerprint")
    # the method folder on its own (a saved method, `load_method`) refuses them too
    if name.startswith("method/"):
        from humwatch.errors import ConfigError
        from humwatch.methods import load_method

        with pytest.raises(ConfigError, match="differ from the fingerprint method.json records"):
            load_method(mon / "method")


def test_an_added_weights_file_is_refused(fitted, tmp_path, capsys):
    root, src, wavs, _ = fitted
    mon = _copy(src, tmp_path / "m")
    shutil.copy(mon / "method/detector.safetensors", mon / "method/extra.safetensors")
    _reseal(mon)
    _score_refused(mon, wavs[0], tmp_path, capsys, "extra.safetensors", "does not record")


# ------------------------------------------------------------------------ scores that are not finite


def _nan_weights_resealed_everywhere(src: Path, dst: Path) -> Path:
    """Weights that make every score NaN, with every fingerprint and manifest rewritten to match: what
    no check of the saved folder can tell from a healthy one."""
    mon = _copy(src, dst)
    _edit_arrays(mon / "method/detector.safetensors", lambda a: a.update(location=np.full_like(a["location"], np.nan)))
    for name, d in (("method/method.json", mon / "method"), ("monitor.json", mon)):
        doc = json.loads((mon / name).read_text())
        doc["fingerprints"] = weight_fingerprints(d)
        (mon / name).write_text(json.dumps(doc))
    _reseal(mon)
    return mon


def test_a_score_that_is_not_finite_is_an_error_never_a_silent_normal(fitted, tmp_path, capsys):
    root, src, wavs, _ = fitted
    mon = _nan_weights_resealed_everywhere(src, tmp_path / "m")
    _score_refused(mon, wavs[0], tmp_path, capsys, Path(wavs[0]).name, "not a finite number")
    # under --skip-bad each such recording is counted as skipped, with its reason
    out = tmp_path / "s.csv"
    with pytest.raises(SystemExit) as e:
        main(["score", str(mon), *wavs, "--out", str(out), "-q", "--skip-bad"])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out
    assert e.value.code == 0 and "skipped 3 bad file(s)" in cap.out and "not a finite number" in cap.out, cap
    assert "0 of 0 recording(s)" in cap.out  # said, next to the 3 skipped: nothing was scored


def test_the_service_pool_refuses_a_clip_it_cannot_score(fitted, tmp_path):
    """`score_clips` (the service's scorer) raises for a non-finite score rather than returning none."""
    root, src, wavs, _ = fitted
    mon = Monitor.load(_nan_weights_resealed_everywhere(src, tmp_path / "m"))
    from humwatch.data.clips import Clip

    with pytest.raises(MonitorError, match="not a finite number"):
        mon.score_clips([Clip(wavs[0], "service", "fan", 0)], progress=False)


# --------------------------------------------------------------------- a header that says 1 Hz


def _one_hz(path: Path, seconds: float = 2.0) -> Path:
    """A valid 16-bit WAV whose header says 1 Hz (its samples: a 16 kHz tone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    y = (0.3 * np.sin(np.arange(int(seconds * 16000)) / 3)).astype(np.float32)
    sf.write(str(path), y, 16000, subtype="PCM_16")
    b = bytearray(path.read_bytes())
    assert b[12:16] == b"fmt "
    struct.pack_into("<II", b, 24, 1, 2)  # sample rate 1 Hz, 2 bytes a second
    path.write_bytes(bytes(b))
    assert sf.info(str(path)).samplerate == 1
    return path


def test_a_one_hz_header_is_an_audio_error_before_decoding(tmp_path):
    from humwatch.audio import duration, header, load_audio
    from humwatch.errors import AudioError

    bad = _one_hz(tmp_path / "onehz.wav")
    for read in (header, load_audio):
        with pytest.raises(AudioError, match="sample rate 1 Hz.*outside the 1-384 kHz"):
            read(bad)
    assert duration(bad) is None


def test_a_one_hz_wav_is_refused_by_every_command_and_counted_under_skip_bad(fitted, tmp_path):
    """Subprocesses: a crash (the segfault this was) must not take the test run with it."""
    root, src, wavs, _ = fitted
    bad = _one_hz(tmp_path / "onehz.wav")
    refused(humwatch("features", bad, "--out", tmp_path / "x.npy"), "onehz.wav", "1 Hz")
    refused(humwatch("score", src, bad, "--out", tmp_path / "s.csv"), "onehz.wav", "1 Hz")
    assert not (tmp_path / "s.csv").exists()
    folder = tmp_path / "dir"
    folder.mkdir()
    shutil.copy(bad, folder / "onehz.wav")
    shutil.copy(wavs[0], folder / "good.wav")
    code, out, err = humwatch("score", src, folder, "--skip-bad", "--out", tmp_path / "s.csv")
    assert code in (0, 1) and "Traceback" not in err and "skipped 1 bad file" in out + err, (code, out, err)
    assert "1 Hz" in out + err
    refused(humwatch("explain", "--clips", bad, "--out", tmp_path / "x", "--no-models"), "onehz.wav")
    # in the training data, refused (not a threshold 2,100 times too high)
    data = tmp_path / "train"
    data.mkdir()
    for i, w in enumerate(wavs):
        shutil.copy(w, data / f"{i}.wav")
    shutil.copy(bad, data / "onehz.wav")
    refused(
        humwatch(
            "fit",
            "--data",
            data,
            "--out",
            tmp_path / "m",
            "--backbone",
            "features",
            "--detector",
            "mahalanobis",
            "--folds",
            "2",
            "--false-alarm-rate",
            "0.5",
            "--threshold-method",
            "percentile",
            "--window-seconds",
            "2",
        ),
        "onehz.wav",
    )
    assert not (tmp_path / "m").exists()


# -------------------------------------------------------------------------- a newer humwatch


def test_a_monitor_from_a_newer_humwatch_loads_with_a_warning(fitted, tmp_path, caplog):
    root, src, wavs, _ = fitted
    mon = _copy(src, tmp_path / "m")
    _edit_json(mon, "monitor.json", _set("humwatch_version", "99.1.0"))
    with caplog.at_level("WARNING", logger="humwatch"):
        Monitor.load(mon)
    lines = [r.getMessage() for r in caplog.records if "newer" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "99.1.0" in lines[0], lines
    caplog.clear()
    with caplog.at_level("WARNING", logger="humwatch"):
        Monitor.load(src)  # this humwatch's own: no warning
    assert not [r for r in caplog.records if "newer" in r.getMessage()]
    code, out, err = humwatch("score", mon, wavs[0], "--out", tmp_path / "s.csv")
    assert code in (0, 1) and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("warning:") and "newer" in line], err


# ------------------------------------------------------------------------ an exported monitor


def test_an_exported_monitor_checks_its_network_and_weights_and_refuses_a_one_hz_wav(fitted, tmp_path, capsys):
    from humwatch.export import export_monitor
    from humwatch.monitor import load_monitor

    root, src, wavs, scores = fitted
    exp = tmp_path / "exp"
    export_monitor(src, exp)
    from humwatch.data.clips import Clip

    _, onnx_scores, _ = load_monitor(exp, runtime="onnx").score_clips([Clip(w, "x", "x", 0) for w in wavs], progress=False)
    np.testing.assert_allclose(onnx_scores, scores, rtol=1e-3)
    bad = _one_hz(tmp_path / "onehz.wav")
    with pytest.raises(SystemExit) as e:
        main(["score", str(exp), str(bad), "--runtime", "onnx", "--out", str(tmp_path / "s.csv"), "-q"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error:") and "1 Hz" in err and len(err.splitlines()) == 1, err
    # another network put in its place, the manifest recomputed: refused by export.json's SHA-256
    swapped = _copy(exp, tmp_path / "swapped")
    b = bytearray((swapped / "onnx/model.onnx").read_bytes())
    b[len(b) // 2] ^= 1
    (swapped / "onnx/model.onnx").write_bytes(bytes(b))
    write_manifest(swapped)
    with pytest.raises(MonitorError, match="model.onnx: the network differs from the SHA-256 export.json records"):
        load_monitor(swapped, runtime="onnx")
    # the detector's weights zeroed, the manifests recomputed: refused by the fingerprints
    zeroed = _copy(exp, tmp_path / "zeroed")
    _edit_arrays(zeroed / "method/detector.safetensors", lambda a: a.update({k: np.zeros_like(v) for k, v in a.items()}))
    _reseal(zeroed)
    with pytest.raises(MonitorError, match="differ from the fingerprint"):
        load_monitor(zeroed, runtime="onnx")

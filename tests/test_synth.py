"""The built-in MIMII-like generator (humwatch.data.synth): layout, format, determinism, mixing, physics.

Clips here are 1-2 s long so the whole file runs in a few seconds.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from humwatch.data.clips import read_clips_csv
from humwatch.data.synth import ANOMALY_KINDS, MACHINES, render_clip, render_clip_parts, render_source, snr_folder_name, synthesize
from humwatch.errors import ConfigError
from humwatch.features import ae_logmel

SR = 16000


def _synth(out, **kw):
    args = dict(machines=("fan", "valve"), ids=("00", "02"), n_normal=2, n_anomalous=1, seconds=1.0, progress=False)
    args.update(kw)
    return synthesize(out, **args)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


# ---------------------------------------------------------------------------------------------------
# Layout, records, manifest
# ---------------------------------------------------------------------------------------------------


def test_layout_counts_and_records(tmp_path):
    clips = _synth(tmp_path)
    assert len(clips) == 2 * 2 * (2 + 1)
    wavs = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wav"))
    assert len(wavs) == 12
    assert "6dB_fan/fan/id_00/normal/00000000.wav" in wavs
    assert "6dB_fan/fan/id_00/normal/00000001.wav" in wavs
    assert "6dB_valve/valve/id_02/abnormal/00000000.wav" in wavs
    assert not any("abnormal/00000001" in w for w in wavs)
    for c in clips:
        p = Path(c.path)
        assert p.is_absolute() and p.is_file()
        assert c.machine_type in ("fan", "valve")
        assert c.machine_id in ("id_00", "id_02")
        assert c.snr == "6dB"
        assert c.label == (1 if p.parent.name == "abnormal" else 0)
        assert p.parts[-3] == c.machine_id and p.parts[-4] == c.machine_type
    assert sum(c.label for c in clips) == 4


def test_manifest_has_kinds_and_severity_and_reads_back(tmp_path):
    clips = _synth(tmp_path, machines=("pump",), ids=("04",), n_normal=2, n_anomalous=4)
    with open(tmp_path / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "machine_type", "machine_id", "label", "snr", "anomaly_kind", "severity"]
    assert len(rows) == 6
    for r in rows:
        assert (tmp_path / r["path"]).is_file()
        if r["label"] == "0":
            assert r["anomaly_kind"] == "normal" and float(r["severity"]) == 0.0
        else:
            assert r["anomaly_kind"] in ANOMALY_KINDS["pump"]
            assert 0.0 < float(r["severity"]) <= 1.0
    # kinds rotate with the index, so 3 anomalies cover every kind of the machine
    assert {r["anomaly_kind"] for r in rows if r["label"] == "1"} == set(ANOMALY_KINDS["pump"])
    back = read_clips_csv(tmp_path / "manifest.csv")
    assert sorted(c.path for c in back) == sorted(c.path for c in clips)
    assert {(c.path, c.label) for c in back} == {(c.path, c.label) for c in clips}


def test_manifest_keeps_rows_of_earlier_runs(tmp_path):
    _synth(tmp_path, machines=("fan",), ids=("00",), n_normal=1, n_anomalous=0)
    _synth(tmp_path, machines=("slider",), ids=("00",), n_normal=1, n_anomalous=1, snr_db=-6)
    with open(tmp_path / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [
        "-6dB_slider/slider/id_00/abnormal/00000000.wav",
        "-6dB_slider/slider/id_00/normal/00000000.wav",
        "6dB_fan/fan/id_00/normal/00000000.wav",
    ]


def test_snr_folder_names():
    assert [snr_folder_name(v) for v in (6, 0, -6, 6.0, -0.0, 2.5, -1.25)] == ["6dB", "0dB", "-6dB", "6dB", "0dB", "2.5dB", "-1.25dB"]


def test_ids_spellings_are_the_same_product(tmp_path):
    a = _synth(tmp_path / "a", machines=("fan",), ids=("id_02",), n_normal=1, n_anomalous=0)
    b = _synth(tmp_path / "b", machines=("fan",), ids=(2,), n_normal=1, n_anomalous=0)
    assert Path(a[0].path).name == Path(b[0].path).name
    assert a[0].machine_id == b[0].machine_id == "id_02"
    assert Path(a[0].path).read_bytes() == Path(b[0].path).read_bytes()


# ---------------------------------------------------------------------------------------------------
# File format
# ---------------------------------------------------------------------------------------------------


def test_file_format_default(tmp_path):
    clips = _synth(tmp_path, machines=("slider",), ids=("06",), n_normal=1, n_anomalous=1, seconds=1.5)
    for c in clips:
        info = sf.info(c.path)
        assert info.samplerate == SR
        assert info.channels == 8
        assert info.subtype == "PCM_16"
        assert info.format == "WAV"
        assert info.frames == int(1.5 * SR)


def test_file_format_other_rate_and_channels(tmp_path):
    clips = _synth(tmp_path, machines=("pump",), ids=("00",), n_normal=1, n_anomalous=1, seconds=1.0, sample_rate=22050, channels=4)
    for c in clips:
        y, sr = sf.read(c.path, dtype="float32", always_2d=True)
        assert sr == 22050 and y.shape == (22050, 4)
        assert np.isfinite(y).all() and np.abs(y).max() > 1e-3


def test_mono_output(tmp_path):
    (c,) = _synth(tmp_path, machines=("valve",), ids=("00",), n_normal=1, n_anomalous=0, channels=1)
    y, _ = sf.read(c.path, always_2d=True)
    assert y.shape == (SR, 1)


# ---------------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    _synth(tmp_path / "a", seed=3)
    _synth(tmp_path / "b", seed=3)
    _synth(tmp_path / "c", seed=4)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 12
    assert a == b
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)


def test_subset_and_counts_do_not_change_a_clip(tmp_path):
    _synth(tmp_path / "full", machines=MACHINES, ids=("00", "02"), n_normal=2, n_anomalous=2)
    _synth(tmp_path / "sub", machines=("valve",), ids=("02",), n_normal=1, n_anomalous=2)
    full, sub = _files(tmp_path / "full"), _files(tmp_path / "sub")
    assert len(sub) == 3
    for k, v in sub.items():
        assert full[k] == v, k


def test_snr_levels_hold_the_same_recording():
    """As in MIMII, the 6 dB and -6 dB sets mix the same machine and background recordings."""
    m6, b6, _ = render_clip_parts("fan", 0, 1, 2, snr_db=6.0, seconds=1.0)
    m0, b0, _ = render_clip_parts("fan", 0, 1, 2, snr_db=-6.0, seconds=1.0)
    ratio_m = m0 / np.where(np.abs(m6) > 1e-6, m6, np.nan)
    ratio_b = b0 / np.where(np.abs(b6) > 1e-6, b6, np.nan)
    assert np.nanstd(ratio_m) < 1e-3 * np.nanmean(ratio_m)
    assert np.nanstd(ratio_b) < 1e-3 * np.nanmean(ratio_b)
    # the background is 12 dB louder relative to the machine at -6 dB than at 6 dB
    rel = 20 * math.log10(np.nanmean(ratio_b) / np.nanmean(ratio_m))
    assert rel == pytest.approx(12.0, abs=0.01)


# ---------------------------------------------------------------------------------------------------
# Mixing and channels
# ---------------------------------------------------------------------------------------------------


def _power(x):
    return float(np.mean(x.astype(np.float64) ** 2))


@pytest.mark.parametrize("snr", [6.0, 0.0, -6.0])
@pytest.mark.parametrize("machine", MACHINES)
def test_snr_is_achieved(machine, snr):
    """Normal clips have the asked SNR (machine / background power over all channels) within their own
    level variation; the background level is the same in every clip of a product, anomalous or not."""
    achieved, bg = [], []
    for label, index in ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1)):
        m, b, _ = render_clip_parts(machine, 4, label, index, snr_db=snr, seconds=2.0)
        bg.append(_power(b))
        if label == 0:
            achieved.append(10 * math.log10(_power(m) / _power(b)))
    assert all(abs(a - snr) < 2.0 for a in achieved), achieved
    assert abs(np.mean(achieved) - snr) < 1.0, achieved
    assert max(bg) / min(bg) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("snr", [6.0, -6.0])
@pytest.mark.parametrize("machine", MACHINES)
def test_the_file_is_the_mix(tmp_path, machine, snr):
    (c,) = _synth(tmp_path, machines=(machine,), ids=("02",), n_normal=0, n_anomalous=1, snr_db=snr)
    m, b, _ = render_clip_parts(machine, 2, 1, 0, snr_db=snr, seconds=1.0)
    y, _ = sf.read(c.path, dtype="float64", always_2d=True)
    mix = (m + b).astype(np.float64)
    peak = np.abs(mix).max()
    if peak > 0.98:  # the rare limiter case scales the whole clip
        mix *= 0.98 / peak
    assert np.abs(y - mix).max() <= 1.0 / 32768 + 1e-7  # only the 16-bit rounding


def test_channels_differ_by_delay_and_gain():
    m, b, _ = render_clip_parts("pump", 0, 0, 0, seconds=2.0)
    rms = np.sqrt(np.mean(m.astype(np.float64) ** 2, axis=0))
    assert rms.max() / rms.min() > 1.01  # gains differ (1/r and sensitivity)
    assert rms.max() / rms.min() < 1.5

    # the machine reaches the microphones at different times: cross-correlation peaks at sub-sample
    # to few-sample lags, not all zero, and the channels are strongly but not perfectly correlated
    def xcorr_peak(a, c):
        """(lag in samples, normalised correlation) at the peak of the 8x interpolated cross-correlation."""
        n = len(a)
        spec = np.fft.rfft(a, 2 * n) * np.conj(np.fft.rfft(c, 2 * n))
        up = np.fft.irfft(spec, 2 * n * 8) * 8
        k = int(np.argmax(up))
        peak = up[k] / np.sqrt(np.dot(a, a) * np.dot(c, c))
        k = k - 2 * n * 8 if k > n * 8 else k
        return k / 8, peak

    x = m.astype(np.float64)
    peaks = [xcorr_peak(x[:, 0], x[:, c]) for c in range(8)]
    lags = [p[0] for p in peaks]
    assert max(abs(v) for v in lags) > 0.5 and max(abs(v) for v in lags) < 8
    assert len({round(v, 1) for v in lags}) >= 3
    assert min(p[1] for p in peaks) > 0.9  # the same sound, delayed
    assert np.corrcoef(x.T)[0, 4] < 0.99  # ...so not identical sample by sample
    # the background is only partly shared between microphones
    cb = np.corrcoef(b.T.astype(np.float64))
    off = cb[~np.eye(8, dtype=bool)]
    assert 0.05 < off.mean() < 0.95


@pytest.mark.parametrize("machine", MACHINES)
def test_no_clipping_no_nan(machine):
    for label, index in ((0, 0), (1, 0), (1, 1), (1, 2)):
        y, info = render_clip(machine, 6, label, index, snr_db=-6.0, seconds=1.0)
        assert np.isfinite(y).all()
        assert np.abs(y).max() <= 0.98 + 1e-6
        assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) > 10 ** (-50 / 20)  # not near silent


# ---------------------------------------------------------------------------------------------------
# Physics: normal variation and anomalies
# ---------------------------------------------------------------------------------------------------


def _stats(x: np.ndarray) -> np.ndarray:
    """Mean, standard deviation and 99th percentile over time of each log-mel band (3 x 64 values; the
    percentile catches sparse impacts), over a fixed noise floor 60 dB below the signal's RMS (the
    source alone has true silences)."""
    floor = 1e-3 * np.sqrt(np.mean(x.astype(np.float64) ** 2))
    noise = np.random.default_rng(0).standard_normal(len(x)) * floor
    lm = ae_logmel((x + noise).astype(np.float32))
    return np.concatenate([lm.mean(axis=1), lm.std(axis=1), np.percentile(lm, 99, axis=1)])


def test_products_differ_and_normal_clips_vary():
    a = [_stats(render_source("fan", 0, seed=s, seconds=2.0)) for s in range(3)]
    b = _stats(render_source("fan", 4, seconds=2.0))
    within = max(np.linalg.norm(a[i] - a[j]) for i in range(3) for j in range(i))
    assert within > 0  # normal clips are not copies
    assert np.linalg.norm(b - a[0]) > 2 * within  # another id is another product


@pytest.mark.parametrize("machine", MACHINES)
def test_every_anomaly_kind_is_measurable_at_full_severity(machine):
    """At severity 1 each anomaly kind moves the log-mel statistics further from the product's normal
    centroid than normal clips lie from it (the machine source alone, no background)."""
    sec = 8.0 if machine in ("valve", "slider") else 4.0  # several work cycles in every clip
    normals = np.array([_stats(render_source(machine, 2, seed=s, seconds=sec)) for s in range(5)])
    centre = normals.mean(axis=0)
    d_normal = np.linalg.norm(normals - centre, axis=1).max()
    for kind in ANOMALY_KINDS[machine]:
        d = np.mean([np.linalg.norm(_stats(render_source(machine, 2, kind, 1.0, seed=s, seconds=sec)) - centre) for s in range(2)])
        assert d > 1.5 * d_normal, (kind, d, d_normal)


@pytest.mark.parametrize("machine", MACHINES)
def test_anomalous_clips_differ_from_normal_clips_on_average(machine):
    """Written-as-is clips (random kinds and severities, 6 dB background): the anomalies are on
    average further from the normal centroid than held-out normal clips."""

    def st(label, i):
        return _stats(render_clip(machine, 0, label, i, snr_db=6.0, seconds=2.0)[0].mean(axis=1))

    train = np.array([st(0, i) for i in range(6)])
    centre, spread = train.mean(axis=0), train.std(axis=0) + 1e-3
    held = np.array([st(0, i) for i in range(6, 10)])
    anom = np.array([st(1, i) for i in range(6)])
    d_held = np.linalg.norm((held - centre) / spread, axis=1).mean()
    d_anom = np.linalg.norm((anom - centre) / spread, axis=1).mean()
    assert d_anom > 1.1 * d_held, (d_anom, d_held)


def test_severity_scales_the_effect():
    normal = _stats(render_source("pump", 0, seconds=2.0))
    dist = [np.linalg.norm(_stats(render_source("pump", 0, "leakage", s, seconds=2.0)) - normal) for s in (0.1, 0.5, 1.0)]
    assert dist[0] < dist[1] < dist[2]


def test_render_source_rejects_unknown_kind():
    with pytest.raises(ConfigError, match="unbalance"):
        render_source("pump", 0, "unbalance", 1.0, seconds=1.0)


# ---------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(machines=("fan", "drill")), "drill"),
        (dict(machines=()), "machines"),
        (dict(machines=("fan", "fan")), "twice"),
        (dict(ids=("7x",)), "7x"),
        (dict(ids=("100",)), "100"),
        (dict(ids=(-1,)), "-1"),
        (dict(ids=(True,)), "True"),
        (dict(ids=("00", "id_00")), "twice"),
        (dict(ids=()), "ids"),
        (dict(n_normal=-1), "n_normal"),
        (dict(n_anomalous=-3), "n_anomalous"),
        (dict(n_normal=1.5), "n_normal"),
        (dict(n_normal=0, n_anomalous=0), "nothing"),
        (dict(snr_db=float("nan")), "snr_db"),
        (dict(snr_db="6dB"), "snr_db"),
        (dict(snr_db=100.0), "snr_db"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(seconds=0), "seconds"),
        (dict(seconds=float("inf")), "seconds"),
        (dict(sample_rate=100), "sample_rate"),
        (dict(sample_rate=16000.0), "sample_rate"),
        (dict(channels=0), "channels"),
        (dict(channels=2.0), "channels"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, kw, fragment):
    with pytest.raises(ConfigError) as e:
        _synth(tmp_path / "out", **kw)
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()  # nothing written


def test_out_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        _synth(f)


def test_single_strings_are_accepted(tmp_path):
    clips = _synth(tmp_path, machines="valve", ids="06", n_normal=1, n_anomalous=0)
    assert [(c.machine_type, c.machine_id) for c in clips] == [("valve", "id_06")]

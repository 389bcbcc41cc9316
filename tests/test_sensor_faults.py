"""Sensor checks (humwatch.sensor, issue 20): each fault is found on a signal made to have it, and
none is found on healthy generated clips (humwatch.data.synth) nor on the real recordings in
../shared/realdata (when that folder is there)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest

from humwatch import sensor
from humwatch.data.synth import render_clip
from humwatch.explain.alarm import NormalReference

SR = 16000
REAL = Path(os.environ.get("HUMWATCH_REALDATA") or Path(__file__).resolve().parents[1].parent / "shared" / "realdata")
"""The real recordings: ../shared/realdata beside the repository, or $HUMWATCH_REALDATA."""


def healthy(machine="fan", index=0, channels=1, seconds=2.0):
    y, _ = render_clip(machine, 0, 0, index, seed=3, seconds=seconds, sample_rate=SR, channels=channels)
    return y


HEALTHY = [healthy(m, i, ch) for m in ("fan", "pump", "valve", "slider") for i, ch in ((0, 1), (1, 2))]


@pytest.fixture(scope="module")
def reference():
    return NormalReference.from_signals([healthy("fan", i).mean(axis=1) for i in range(4)], SR)


def test_healthy_generated_clips_have_no_fault(reference):
    for y in HEALTHY:
        assert sensor.sensor_fault(y, SR) is None
    for i in range(4, 8):
        assert sensor.sensor_fault(healthy("fan", i), SR, reference) is None


def test_real_recordings_have_no_fault():
    files = sorted(glob.glob(str(REAL / "**" / "*.flac"), recursive=True))
    if not files:
        pytest.skip(f"no real recordings in {REAL}")
    import soundfile as sf

    for f in files:
        y, sr = sf.read(f, dtype="float32", always_2d=True)
        assert sensor.sensor_fault(y, sr) is None, f


def test_silence():
    assert "digital silence" in sensor.check_silence(np.zeros((SR, 2), np.float32))
    assert "digital silence" in sensor.sensor_fault(np.full(SR, 3e-5, np.float32), SR)
    assert all(sensor.check_silence(y) is None for y in HEALTHY)


def test_clipping():
    y = healthy()[:, 0] * 20
    y = np.clip(y, -1.0, 1.0)
    assert "clipping" in sensor.check_clipping(y)
    assert "clipping" in sensor.sensor_fault(y, SR)
    assert all(sensor.check_clipping(y) is None for y in HEALTHY)
    few = healthy()[:, 0].copy()
    few[:10] = 1.0  # a handful of full-scale samples is a loud knock, not clipping
    assert sensor.check_clipping(few) is None


def test_dc_offset():
    y = healthy()[:, 0] * 0.2 + 0.3
    assert "DC offset" in sensor.check_dc_offset(y)
    assert "DC offset" in sensor.sensor_fault(y, SR)
    assert all(sensor.check_dc_offset(y) is None for y in HEALTHY)


def test_dropouts():
    y = healthy(channels=2).copy()
    y[SR // 2 : SR // 2 + int(0.05 * SR), 1] = 0.0  # 50 ms of one channel lost
    assert "dropout" in sensor.check_dropouts(y, SR)
    assert "dropout" in sensor.sensor_fault(y, SR)
    short = healthy().copy()
    short[100:110] = 0.0  # under a millisecond: a zero crossing, not a dropout
    assert sensor.check_dropouts(short, SR) is None
    assert all(sensor.check_dropouts(y, SR) is None for y in HEALTHY)
    assert sensor.longest_zero_run(np.array([0, 0, 1, 0, 0, 0, 2.0])) == 3


def test_level_far_from_the_fitted_clips(reference):
    y = healthy("fan", 5)
    assert "below" in sensor.check_level(y * 10 ** (-45 / 20), SR, reference)
    assert "level" in sensor.sensor_fault(y * 10 ** (-45 / 20), SR, reference)
    assert sensor.check_level(y * 10 ** (-10 / 20), SR, reference) is None  # a bit quieter is fine
    assert sensor.check_level(y * 1e-3, SR, None) is None  # no reference: not checked


def test_non_finite_samples_are_left_to_the_audio_reader():
    y = healthy()[:, 0].copy()
    y[5] = np.nan
    assert sensor.sensor_fault(y, SR) is None


def test_a_sensor_alerts_mail_says_what_and_no_score():
    from humwatch.service.notify import email_message

    doc = {"event": "alert.opened", "machine": "m", "alert_id": 3, "acknowledged_by": None, "score": 0.0, "max_score": 0.0}
    doc |= {"threshold": 2.0, "at": "t", "url": "u"}
    doc["alert"] = {"n_anomalous": 0, "rule": "sensor", "kind": "sensor", "reason": "digital silence (x)", "start_at": "s"}
    msg = email_message(doc, "a@b", ["c@d"])
    body = msg.get_content()
    assert msg["Subject"] == "[humwatch] m: sensor alert 3 opened"
    assert "digital silence (x)" in body and "Score:" not in body
    doc["alert"] = {"n_anomalous": 3, "rule": "3/5/3", "start_at": "s"}  # an anomaly alert's document from before kinds
    assert "Score:" in email_message(doc, "a@b", ["c@d"]).get_content()

"""Short clips are never padded with silence (issue 20, item 1): a recording shorter than a monitor's
window is refused with the reason (the CLI, the service), the last window of a long recording ends at
its end, ``fit`` on short clips uses a window as long as they are and alarms on loud noise, another
channel count than the monitor's recordings is a warning, the listener sends whole clips only."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import time
import types

import numpy as np
import pytest
import soundfile as sf

from humwatch.cli import main
from humwatch.data.clips import Clip, expand_windows
from humwatch.errors import AudioError, DatasetError

SR = 16000


@pytest.fixture(scope="module")
def short_monitor(tmp_path_factory):
    """A monitor fitted (with the weight-free default) on 16 generated 4 s stereo clips, saved; and the data."""
    from humwatch.calibrate import fit_monitor
    from humwatch.data.synth import synthesize
    from humwatch.methods.embed_detect import WEIGHT_FREE

    root = tmp_path_factory.mktemp("short")
    clips = synthesize(root / "data", machines="fan", ids="00", n_normal=16, n_anomalous=0, seconds=4.0, channels=2, progress=False)
    mon, summary = fit_monitor(clips, "embed-detect", dict(WEIGHT_FREE), folds=4, progress=False)  # asked for 10 s windows
    mon.save(root / "mon")
    return mon, summary, clips, root


def _write(path, seconds, channels=2, kind="hum", seed=0):
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    if kind == "noise":
        y = 0.9 * np.clip(rng.standard_normal((n, channels)) / 3, -1, 1)
    else:
        t = np.arange(n) / SR
        y = np.repeat((0.2 * np.sin(2 * np.pi * 200 * t) + 0.01 * rng.standard_normal(n))[:, None], channels, axis=1)
    sf.write(str(path), (y[:, 0] if channels == 1 else y).astype(np.float32), SR)
    return path


def test_the_last_window_ends_at_the_recordings_end_and_none_is_padded():
    from humwatch.audio import AudioSettings, window_starts

    assert window_starts(25.0, 10.0, 10.0) == [0.0, 10.0, 15.0]
    assert window_starts(20.5, 10.0, 10.0) == [0.0, 10.0, 10.5]  # half a second left: still covered
    assert window_starts(20.0, 10.0, 5.0) == [0.0, 5.0, 10.0]
    assert window_starts(10.0, 10.0, 10.0) == [0.0]
    y = np.sin(np.arange(int(10.5 * SR)) / 10.0).astype(np.float32)
    clip = Clip.from_array(y, SR, "a.wav")
    wins = expand_windows([clip], 10.0, 10.0)
    assert [w.start for w in wins] == [0.0, 0.5]
    notes: list[str] = []
    last = wins[-1].load(AudioSettings(seconds=10.0), notes=notes)
    assert len(last) == 10 * SR and notes == []  # a whole window of sound, not padded
    np.testing.assert_array_equal(last, y[-10 * SR :])


def test_fit_on_4_s_clips_uses_a_4_s_window_and_alarms_on_loud_noise(short_monitor, tmp_path, capsys):
    mon, summary, clips, root = short_monitor
    assert mon.audio.seconds == 4.0 and mon.hop == 4.0 and summary["seconds"] == 4.0
    assert all(v > mon.threshold for v in summary["probe_scores"].values()), summary["probe_scores"]
    doc = json.loads((root / "mon" / "monitor.json").read_text())
    assert doc["audio"]["seconds"] == 4.0 and doc["recordings"] == {"channels": [2], "sample_rates": [16000]}
    noise = _write(tmp_path / "noise.wav", 4.0, kind="noise")
    healthy = clips[0].path
    with pytest.raises(SystemExit) as e:
        main(["score", str(root / "mon"), str(noise), healthy, "--out", "-", "-q"])
    rows = {r.split(",")[0]: r.split(",")[-1] for r in capsys.readouterr().out.splitlines()[1:]}
    assert e.value.code == 1 and rows[str(noise)] == "anomalous", rows


def test_fit_refuses_recordings_too_short_for_any_window(tmp_path):
    from humwatch.calibrate import fit_monitor

    clips = [Clip.from_array(np.full(int(0.3 * SR), 0.1, np.float32) * (k + 1) / 10, SR, f"c{k}.wav") for k in range(10)]
    with pytest.raises(DatasetError, match=r"recording is 0\.3 s, shorter than a monitor's shortest 0\.5 s window"):
        fit_monitor(clips, progress=False)


def test_a_recording_shorter_than_the_window_is_refused_with_the_reason(short_monitor, tmp_path, capsys):
    mon, _, clips, root = short_monitor
    short = _write(tmp_path / "short.wav", 2.5)
    with pytest.raises(SystemExit) as e:
        main(["score", str(root / "mon"), str(short), "--out", "-", "-q"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "recording is 2.5 s, shorter than the monitor's 4 s window (fit a monitor with --window-seconds 2.5 for clips this short)" in err
    with pytest.raises(SystemExit) as e:  # --skip-bad: counted, with its reason, and the others scored
        main(["score", str(root / "mon"), str(short), clips[1].path, "--out", "-", "-q", "--skip-bad"])
    cap = capsys.readouterr()
    assert e.value.code == 0 and "skipped 1 bad file" in cap.err and "shorter than the monitor's 4 s window" in cap.err
    assert [r.split(",")[0] for r in cap.out.splitlines()[1:]] == [clips[1].path]
    with pytest.raises(AudioError, match="shorter than the monitor's 4 s window"):  # the Python API
        mon.score([(np.full(SR, 0.1, np.float32), SR)])


def test_a_monitor_without_the_recordings_field_still_loads(short_monitor, tmp_path):
    import shutil

    from humwatch.io import write_manifest
    from humwatch.monitor import load_monitor

    _, _, _, root = short_monitor
    d = tmp_path / "old"
    shutil.copytree(root / "mon", d)
    doc = json.loads((d / "monitor.json").read_text())
    del doc["recordings"]  # as a format 3 monitor written before it had one
    (d / "monitor.json").write_text(json.dumps(doc))
    (d / "manifest.json").unlink()
    write_manifest(d)
    assert load_monitor(d).settings.recordings == {}
    doc["recordings"] = {"channels": [0], "sample_rates": [16000]}
    (d / "monitor.json").write_text(json.dumps(doc))
    (d / "manifest.json").unlink()
    write_manifest(d)
    with pytest.raises(Exception, match="recordings.channels"):
        load_monitor(d)


def test_another_channel_count_is_a_warning(short_monitor, tmp_path, caplog):
    mon, _, _, _ = short_monitor
    mono = _write(tmp_path / "mono.wav", 4.0, channels=1)
    with caplog.at_level(logging.WARNING, logger="humwatch"):
        kept, scores, _ = mon.score_clips([Clip(str(mono), "fan", "id_00", 0)], progress=False)
    said = [r.getMessage() for r in caplog.records]
    assert len(scores) == 1
    assert f"warning: {mono}: mono recording, the monitor was fitted on stereo recordings" in said, said


def test_the_service_refuses_a_short_clip_and_warns_of_a_channel_mismatch(short_monitor, tmp_path):
    import shutil

    from fastapi.testclient import TestClient
    from service_fixtures import make_token

    from humwatch.service.app import Service, create_app
    from humwatch.service.config import ServiceSettings
    from humwatch.service.store import default_db_url

    _, _, _, root = short_monitor
    monitors = tmp_path / "monitors"
    shutil.copytree(root / "mon", monitors / "short-1")
    token = make_token(default_db_url(monitors), "t", "ingest")
    settings = ServiceSettings(monitors=str(monitors), device="cpu").validate()
    svc = Service.open(settings)
    try:
        c = TestClient(create_app(settings, svc), raise_server_exceptions=False)

        def post(path, minute):
            return c.post(
                "/api/v1/machines/short-1/clips",
                content=path.read_bytes(),
                params={"recorded_at": f"2030-01-01T00:{minute:02d}:00Z", "filename": path.name},
                headers={"authorization": f"Bearer {token}", "content-type": "audio/wav"},
            )

        r = post(_write(tmp_path / "cut.wav", 3.0), 1)
        assert r.status_code == 422, r.text
        assert "cut.wav: recording is 3.0 s, shorter than the monitor's 4 s window" in r.text
        mono = _write(tmp_path / "mono.wav", 4.0, channels=1)
        r = post(mono, 2)
        assert r.status_code == 200, r.text
        warned = ["mono.wav: mono recording, the monitor was fitted on stereo recordings"]
        assert r.json()["warnings"] == warned
        # stored with the clip: the API, a resend, the CSV and the pages show it again
        read = {"authorization": f"Bearer {make_token(default_db_url(monitors), 'r', 'read')}"}
        assert c.get(f"/api/v1/clips/{r.json()['clip_id']}", headers=read).json()["warnings"] == warned
        again = post(mono, 2)
        assert again.json()["duplicate"] and again.json()["warnings"] == warned
        table = c.get("/api/v1/machines/short-1/scores", params={"format": "csv"}, headers=read).text
        assert "mono recording, the monitor was fitted on stereo recordings" in table
        c.cookies.set("humwatch_token", read["authorization"].split()[1])
        assert "mono recording, the monitor was fitted on stereo" in c.get(f"/clips/{r.json()['clip_id']}").text
        assert 'class="badge warn" title="mono.wav: mono recording' in c.get("/machines/short-1").text
        c.cookies.clear()
        r = post(_write(tmp_path / "stereo.wav", 4.0, channels=2), 3)
        assert r.status_code == 200 and r.json()["warnings"] == [], r.text
    finally:
        svc.close()


def test_the_listener_sends_whole_clips_only():
    from humwatch.service.listen import clip_pieces

    for n in (21_000, 24_000, 29_999, 30_000, 33_000, 47_500):
        pieces = clip_pieces(n, 1000, 10.0)
        assert all(b - a >= 10_000 for a, b in pieces), (n, pieces)  # never a short piece
        assert pieces[0][0] == 0 and pieces[-1][1] == n and all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))  # nothing dropped


class _OddBlocks:
    """sounddevice.InputStream's stand-in: a continuous tone in blocks of 7,000 frames (not a divisor of a clip)."""

    def __init__(self, samplerate, channels, dtype, device, callback):
        self.sr, self.callback, self._stop = samplerate, callback, threading.Event()

    def __enter__(self):
        def run():
            n = 0
            while not self._stop.is_set():
                t = (n + np.arange(7000)) / self.sr
                self.callback((0.5 * np.sin(2 * np.pi * 3.7 * t)).astype(np.float32)[:, None], 7000, None, None)
                n += 7000
                time.sleep(0.002)

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


def test_the_microphone_keeps_the_rest_for_the_next_clip(tmp_path, monkeypatch):
    from service_fixtures import wait_for

    from humwatch.service.listen import ListenSettings, Spool
    from humwatch.service.listen_mic import MicSource

    monkeypatch.setitem(sys.modules, "sounddevice", types.SimpleNamespace(InputStream=_OddBlocks))
    s = ListenSettings(machine="mic-1", spool=str(tmp_path / "spool"), seconds=1.0, sample_rate=SR, channels=1).validate()
    spool = Spool(s.spool)
    stop = threading.Event()
    th = threading.Thread(target=MicSource(spool, s).run, args=(stop,), daemon=True)
    th.start()
    assert wait_for(lambda: len(spool.pending()) >= 3, 30)
    stop.set()
    th.join(10)
    items = spool.pending()[:3]
    ys = [sf.read(str(i.audio), dtype="float32")[0] for i in items]
    assert [len(y) for y in ys] == [SR] * 3  # whole clips
    t = np.arange(3 * SR) / SR
    np.testing.assert_allclose(np.concatenate(ys), 0.5 * np.sin(2 * np.pi * 3.7 * t), atol=1e-3)  # no sample lost or repeated
    times = [dt.datetime.fromisoformat(i.recorded_at) for i in items]
    assert [(b - a).total_seconds() for a, b in zip(times, times[1:])] == pytest.approx([1.0, 1.0])

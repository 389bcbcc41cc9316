"""`humwatch listen`: the spool, cutting long files, a watched folder sending to a live server, an
outage the spool rides out (then drains), the command line, and the microphone source (with a
stand-in for sounddevice: the test machine has no sound card)."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
import time
import types

import httpx
import numpy as np
import pytest
import soundfile as sf
from service_fixtures import LiveServer, env_with_src, fresh_monitors, make_token, write_clip

from humwatch.errors import ConfigError
from humwatch.service.listen import FolderSource, ListenSettings, MicSource, Sender, Spool, clip_pieces, listen, spool_file


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def scores(server, machine, token) -> list[dict]:
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=30) as c:
        r = c.get(f"/api/v1/machines/{machine}/scores", params={"limit": 500})
        return r.json()["items"] if r.status_code == 200 else []


def test_clip_pieces_send_short_files_whole_and_cut_long_ones():
    sr = 1000
    assert clip_pieces(10_000, sr, 10.0) == [(0, 10_000)]
    assert clip_pieces(15_000, sr, 10.0) == [(0, 15_000)]  # up to 1.5 clips: whole
    # never a piece shorter than a clip: the rest joins the last piece (scored window by window)
    assert clip_pieces(24_000, sr, 10.0) == [(0, 10_000), (10_000, 24_000)]
    assert clip_pieces(26_000, sr, 10.0)[-1] == (10_000, 26_000)
    assert clip_pieces(27_000, sr, 5.0)[-1] == (20_000, 27_000)
    assert clip_pieces(28_000, sr, 5.0)[-1] == (20_000, 28_000)
    assert clip_pieces(33_000, sr, 10.0) == [(0, 10_000), (10_000, 20_000), (20_000, 33_000)]


def test_the_spool_keeps_order_rejects_and_stays_under_its_limit(tmp_path):
    src = write_clip(tmp_path / "a.wav", "normal", 1)
    spool = Spool(tmp_path / "spool", max_bytes=2.5 * src.stat().st_size)
    t0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    items = [spool.put_file(src, "m", t0 + dt.timedelta(seconds=k)) for k in range(3)]
    pending = spool.pending()
    assert [p.audio.name for p in pending] == [i.audio.name for i in items[1:]]  # the oldest made room
    assert pending[0].audio.read_bytes() == src.read_bytes() and pending[0].recorded_at == (t0 + dt.timedelta(seconds=1)).isoformat()
    (spool.pending_dir / "half.wav").write_bytes(b"RIFF")  # a clip without its sidecar is not sent
    assert len(spool.pending()) == 2
    spool.reject(pending[0], "HTTP 422: a.wav: silent")
    assert (spool.rejected_dir / (pending[0].audio.stem + ".reason.txt")).read_text().startswith("HTTP 422")
    spool.done(pending[1])
    assert spool.pending() == []


def test_a_long_file_is_spooled_as_clips_stamped_by_their_offsets(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(str(path), np.random.default_rng(0).standard_normal(16000 * 24).astype(np.float32) * 0.1, 16000)
    items = spool_file(Spool(tmp_path / "spool"), path, "m", 10.0)
    assert len(items) == 2
    times = [dt.datetime.fromisoformat(i.recorded_at) for i in items]
    assert (times[1] - times[0]).total_seconds() == pytest.approx(10.0)
    assert [sf.info(str(i.audio)).frames for i in items] == [160_000, 224_000]  # the 4 s left join the last clip
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    assert spool_file(Spool(tmp_path / "spool"), tmp_path / "junk.wav", "m", 10.0) == []


def test_files_dropped_in_a_watched_folder_become_scored_rows(live_service, tmp_path):
    watch = tmp_path / "incoming"
    (watch / "listen-1").mkdir(parents=True)
    (watch / "no-monitor").mkdir()
    s = ListenSettings(server=live_service.url, spool=str(tmp_path / "spool"), seconds=2.0, settle=0.3, retry_max=1.0).validate()
    spool = Spool(s.spool)
    source, sender = FolderSource(watch, spool, s), Sender(s, live_service.tokens["ingest"], spool)
    stop = threading.Event()
    runner = threading.Thread(target=listen, args=(source, sender, stop), daemon=True)
    runner.start()
    try:
        time.sleep(1.0)  # the watch is set up
        write_clip(watch / "no-monitor" / "x.wav", "normal", 40)  # 404: set aside with its reason, holds up no one
        for k in range(3):
            write_clip(watch / "listen-1" / f"clip{k}.wav", "anomalous" if k == 2 else "normal", 41 + k)
        write_clip(watch / "listen-1" / "long.wav", "normal", 45, seconds=4.2)  # cut into two 2 s clips
        (watch / "listen-1" / "notes.txt").write_text("not audio")
        assert wait_for(lambda: len(scores(live_service, "listen-1", live_service.tokens["read"])) == 5, 90)
        rows = scores(live_service, "listen-1", live_service.tokens["read"])
        names = sorted(r["filename"] for r in rows)
        assert names == ["clip0.wav", "clip1.wav", "clip2.wav", "long@0s.wav", "long@2s.wav"]
        assert [r["decision"] for r in rows if r["filename"] == "clip2.wav"] == ["anomalous"]
        assert wait_for(lambda: sender.rejected == 1, 30)
        assert spool.pending() == [] and sender.sent == 5
        assert [p.read_text()[:8] for p in spool.rejected_dir.glob("*.reason.txt")] == ["HTTP 404"]
    finally:
        stop.set()
        runner.join(20)


def test_the_spool_rides_out_an_outage_and_drains_when_the_server_is_back(service_monitors, tmp_path):
    from humwatch.service.store import default_db_url

    monitors = fresh_monitors(service_monitors, tmp_path / "monitors", names=("listen-2",))
    token = make_token(default_db_url(monitors), "pi", "ingest,read")
    server = LiveServer(monitors, tmp_path / "serve.log").start()
    s = ListenSettings(server=server.url, machine="listen-2", spool=str(tmp_path / "spool"), retry_max=0.5).validate()
    spool = Spool(s.spool)
    sender = Sender(s, token, spool)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    t0 = dt.datetime(2030, 1, 2, tzinfo=dt.timezone.utc)
    try:
        spool.put_file(write_clip(tmp_path / "c0.wav", "normal", 70), "listen-2", t0)
        assert wait_for(lambda: sender.sent == 1, 30)
        server.stop()  # the service goes away
        for k in range(1, 5):
            spool.put_file(write_clip(tmp_path / f"c{k}.wav", "normal", 70 + k), "listen-2", t0 + dt.timedelta(seconds=k))
        time.sleep(2.0)
        assert len(spool.pending()) == 4 and sender.sent == 1  # nothing lost, nothing sent
        server.start()  # back, on the same port and database
        assert wait_for(lambda: not spool.pending(), 60)
        rows = scores(server, "listen-2", token)
        assert len(rows) == 5 and sender.sent == 5 and sender.rejected == 0
    finally:
        stop.set()
        thread.join(20)
        server.stop()


def test_humwatch_listen_on_the_command_line(live_service, tmp_path):
    watch, spool = tmp_path / "drop", tmp_path / "spool"
    watch.mkdir()
    env = {**env_with_src(), "HUMWATCH_TOKEN": live_service.tokens["ingest"]}
    cmd = [
        sys.executable,
        "-m",
        "humwatch.cli",
        "listen",
        "--server",
        live_service.url,
        "--watch",
        str(watch),
        "--machine",
        "listen-2",
        "--spool",
        str(spool),
        "--existing",
    ]
    write_clip(watch / "before.wav", "normal", 80)  # there before it starts: --existing sends it
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3.0)
        write_clip(watch / "after.wav", "normal", 81)
        ok = wait_for(
            lambda: {"before.wav", "after.wav"} <= {r["filename"] for r in scores(live_service, "listen-2", live_service.tokens["read"])},
            90,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert ok, out
    assert proc.returncode == 0 and "sent 2 clip(s), 0 refused; 0 left in the spool" in out, out


def test_listen_usage_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from humwatch.cli import main

    monkeypatch.delenv("HUMWATCH_TOKEN", raising=False)
    cases = (
        (["listen"], "choose one source"),
        (["listen", "--watch", str(tmp_path), "--mic"], "choose one source"),
        (["listen", "--watch", str(tmp_path)], "ingest scope is needed"),
        (["listen", "--watch", str(tmp_path / "nope"), "--token", "t"], "no such folder"),
        (["listen", "--mic", "--token", "t", "--spool", str(tmp_path / "s")], "--mic needs --machine"),
        (["listen", "--watch", str(tmp_path), "--token", "t", "--server", "ftp://x"], "http:// or https://"),
    )
    for args, words in cases:
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and words in err, (args, err)


class FakeInputStream:
    """Stands in for sounddevice.InputStream: calls back with blocks of a 440 Hz tone from a thread,
    as PortAudio does."""

    def __init__(self, samplerate, channels, dtype, device, callback):
        self.sr, self.channels, self.callback = samplerate, channels, callback
        self._stop = threading.Event()

    def __enter__(self):
        def run():
            n, block = 0, 1600
            while not self._stop.is_set():
                t = (n + np.arange(block)) / self.sr
                y = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                self.callback(np.repeat(y[:, None], self.channels, axis=1), block, None, None)
                n += block
                time.sleep(0.001)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def test_the_microphone_source_spools_clips_of_the_set_length(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", types.SimpleNamespace(InputStream=FakeInputStream))
    s = ListenSettings(machine="mic-1", spool=str(tmp_path / "spool"), seconds=1.0, sample_rate=16000, channels=2).validate()
    spool = Spool(s.spool)
    stop = threading.Event()
    thread = threading.Thread(target=MicSource(spool, s).run, args=(stop,), daemon=True)
    thread.start()
    assert wait_for(lambda: len(spool.pending()) >= 3, 30)
    stop.set()
    thread.join(10)
    items = spool.pending()
    assert all(i.machine == "mic-1" for i in items)
    infos = [sf.info(str(i.audio)) for i in items]
    assert {(x.frames, x.samplerate, x.channels) for x in infos} == {(16000, 16000, 2)}
    times = [dt.datetime.fromisoformat(i.recorded_at) for i in items]
    assert [(b - a).total_seconds() for a, b in zip(times, times[1:])] == pytest.approx([1.0] * (len(times) - 1))
    y, _ = sf.read(str(items[1].audio))
    assert np.abs(y).max() == pytest.approx(0.3, abs=0.01)  # the tone, no gap or glitch at the seams
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # not importable: a one-line error
    with pytest.raises(ConfigError, match="--mic"):
        MicSource(spool, s).run(threading.Event())


def test_a_spooled_clip_whose_audio_vanished_is_set_aside_not_fatal(tmp_path):
    spool = Spool(tmp_path / "spool")
    item = spool.put_file(write_clip(tmp_path / "a.wav"), "m", dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
    item.audio.unlink()
    sender = Sender(ListenSettings(spool=str(spool.root)).validate(), "hw_x", spool)
    assert sender.send(None, item) == "rejected" and str(item.audio) in sender.last_error
    spool.reject(item, sender.last_error)
    assert spool.pending() == [] and list(spool.rejected_dir.glob("*.reason.txt"))

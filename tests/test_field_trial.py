"""The field trial (benchmarks/field_trial.py, issue 20 item 7) at CI size: 3 machines, one simulated
hour, through the real listener and server, with a restart, a kill -9, a drifting machine, a fault
and a dead microphone; and the listener's spool, whose size limit raced the sender."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
import threading
from pathlib import Path

from service_fixtures import write_clip

from humwatch.service.listen import Spool

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "field_trial.py"


def load_trial():
    spec = importlib.util.spec_from_file_location("field_trial", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("field_trial", mod)  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------ spool


def test_a_clip_sent_while_the_spool_sums_its_size_is_no_error_and_makes_room(tmp_path, monkeypatch):
    src = write_clip(tmp_path / "a.wav", "normal", 1)
    spool = Spool(tmp_path / "spool", max_bytes=2.5 * src.stat().st_size)
    t0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    first, second = (spool.put_file(src, "m", t0 + dt.timedelta(seconds=k)) for k in range(2))
    listing = Spool.pending

    def sent_right_after_the_listing(self):  # the sender's thread: the oldest clip stored and removed
        items = listing(self)
        self.done(items[0])
        return items

    monkeypatch.setattr(Spool, "pending", sent_right_after_the_listing)
    third = spool.put_file(src, "m", t0 + dt.timedelta(seconds=2))  # over the limit: was FileNotFoundError
    monkeypatch.setattr(Spool, "pending", listing)
    # the sent clip made the room: no other clip was dropped in its place
    assert [p.audio.name for p in spool.pending()] == [second.audio.name, third.audio.name]
    assert not first.audio.exists()


def test_the_spool_limit_holds_while_a_sender_removes_clips_alongside(tmp_path):
    src = write_clip(tmp_path / "a.wav", "normal", 1)
    size = src.stat().st_size
    spool = Spool(tmp_path / "spool", max_bytes=3.5 * size)
    stop, errors = threading.Event(), []

    def sender():
        while not stop.is_set():
            for item in spool.pending()[:1]:
                spool.done(item)

    t = threading.Thread(target=sender)
    t.start()
    try:
        t0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
        for k in range(300):
            try:
                spool.put_file(src, "m", t0 + dt.timedelta(seconds=k))
            except OSError as e:  # the race: a file removed between the listing and its stat
                errors.append(e)
    finally:
        stop.set()
        t.join(10)
    assert not errors, errors[:3]
    assert sum(p.stat().st_size for p in spool.pending_dir.iterdir()) <= 3.5 * size + 4096


# -------------------------------------------------------------------------------------- scoring


def test_the_server_s_monitors_score_with_one_blas_thread(service_monitors):
    from threadpoolctl import threadpool_info, threadpool_limits

    from humwatch.service.scoring import MonitorPool

    with threadpool_limits(limits=2, user_api="blas"):  # two threads as on the 2-core machine (restored after)
        pool = MonitorPool(service_monitors)
        blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
        assert blas and all(i["num_threads"] == 1 for i in blas), blas
    assert pool.names()

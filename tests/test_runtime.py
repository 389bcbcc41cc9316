"""A fitted method holds its state; how a call runs is handed in (humwatch.runtime.Runtime).

One served monitor scores from several threads at once, each call with its own skip list; nothing
accumulates while it scores (10,000 windows, memory flat); methods and monitors take decoded audio
(Clip.from_array) as well as files, with the same numbers.
"""

from __future__ import annotations

import gc
import sys
import threading
import types

import numpy as np
import pytest
import soundfile as sf

from humwatch.audio import AudioSettings
from humwatch.data.clips import Clip, write_clips_csv
from humwatch.errors import AudioError, DatasetError
from humwatch.runtime import Runtime

SR = 4000  # a low rate keeps 10,000 windows quick; the reading rules are those of any rate
SECONDS = 0.5
SETTINGS = {
    "backbone": "features",
    "detector": "knn-ldn",  # the weight-free default, small and fast
    "backbone_config": {"n_mels": 8, "n_fft": 256, "hop_length": 160},
}


def hum(seed: int, seconds: float, f0: float = 200.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A saved features + knn-ldn monitor of 0.5 s windows, fitted on in-memory recordings."""
    from humwatch.calibrate import fit_monitor

    root = tmp_path_factory.mktemp("runtime")
    train = [Clip.from_array(hum(i, 5.0), SR, f"n{i}.wav", "fan", "id_00") for i in range(4)]
    mon, summary = fit_monitor(
        train,
        "embed-detect",
        SETTINGS,
        seconds=SECONDS,
        folds=2,
        progress=False,
        false_alarm_rate=0.2,
        threshold_method="percentile",
        audio=AudioSettings(sample_rate=SR),
    )
    assert summary["skipped"] == []
    mon.save(root / "fan")
    return root / "fan"


def test_one_monitor_scores_from_many_threads_with_each_calls_own_skips(served, tmp_path):
    from humwatch.service.scoring import MonitorPool

    pool = MonitorPool(served)
    entry = pool.get("fan")
    assert not hasattr(entry, "lock")  # no per-monitor lock: scoring is thread-safe
    mon = entry.monitor
    good = [Clip.from_array(hum(100 + i, 3.0, 200.0 + 40 * i), SR, f"g{i}.wav", "fan", "id_00") for i in range(6)]
    bad = []
    for i in range(6):
        p = tmp_path / f"bad{i}.wav"
        p.write_bytes(b"RIFF0000WAVEnot really" + bytes([i]))
        bad.append(Clip(str(p), "fan", "id_00", 0))
    want = {c.path: s for c, s in zip(*mon.score_clips(good, progress=False)[:2])}
    method_before = dict(vars(mon.method))
    results, errors = {}, []
    start = threading.Barrier(6)

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(3):
                kept, scores, skipped = mon.score_clips([good[i], bad[i]], skip_bad=True, progress=False)
                results.setdefault(i, []).append(([c.path for c in kept], list(scores), skipped))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    for i in range(6):
        for kept, scores, skipped in results[i]:
            assert kept == [good[i].path] and scores == pytest.approx([want[good[i].path]], rel=1e-6)
            assert [k for k, _ in skipped] == [bad[i].path]  # this call's bad file, and no other call's
    assert vars(mon.method).keys() == method_before.keys()  # the call changed nothing on the method
    assert mon.method.context is method_before["context"]


def retained_bytes(root) -> int:
    """The size of everything ``root`` holds (its object graph: objects, arrays' data), not counting
    modules, classes and functions (shared code, not state)."""
    seen, todo, total = set(), [root], 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)  # an ndarray that owns its data counts it
        todo.extend(gc.get_referents(obj))
    return total


def test_a_served_monitor_keeps_nothing_while_it_scores(served):
    """The leak: every embedding set a method computed, scoring included, was kept for t-SNE
    (a served monitor grew with every window). 10,000 windows through the service's pool: what
    the pool holds, and the objects alive in the process, are the same after 1,000 and 10,000."""
    from humwatch.folds import limited_threads
    from humwatch.service.scoring import MonitorPool

    pool = MonitorPool(served)
    method = pool.get("fan").monitor.method
    per_call = 50  # a 25 s recording: 50 windows of 0.5 s
    recs = [Clip.from_array(hum(1000 + i, per_call * SECONDS), SR, f"r{i}.wav", "fan", "id_00") for i in range(3)]

    def score(n_windows: int) -> None:
        for k in range(n_windows // per_call):
            pool.score("fan", recs[k % len(recs)])

    with limited_threads(1):  # one thread: torch's thread pool costs more than these tiny batches
        score(200)  # warm: first-call imports and caches
        score(1000)
        gc.collect()
        held_1k, alive_1k = retained_bytes(pool), len(gc.get_objects())
        score(9000)
        gc.collect()
        held_10k, alive_10k = retained_bytes(pool), len(gc.get_objects())
    # before: 9,000 more embeddings (80 float32 each) and their 9,000 clips, about 3 MB
    assert held_10k - held_1k < 16 * 1024, f"the pool grew by {(held_10k - held_1k) / 1e6:.2f} MB over 9,000 windows"
    assert alive_10k - alive_1k < 500, f"{alive_10k - alive_1k} more objects alive after 9,000 more windows"
    assert method._seen == []


def test_embeddings_are_kept_only_when_the_runtime_says_so(served):
    from humwatch.monitor import load_monitor

    m = load_monitor(served).method
    clips = [Clip.from_array(hum(7, SECONDS), SR, "a.wav")]
    m.score(clips)
    m.score(clips, runtime=Runtime(progress=False))
    assert m.embeddings() == {}
    m.score(clips, runtime=Runtime(progress=False, keep_embeddings=True))
    assert [len(e) for e in m.embeddings().values()] == [1]


def test_in_memory_clips_score_as_their_files_do(served, tmp_path):
    from humwatch.monitor import load_monitor

    mon = load_monitor(served)
    y = hum(5, 2.0, 330.0)
    pcm = np.round(np.clip(y, -1, 1) * 32767).astype(np.int16)
    f = tmp_path / "x.wav"
    sf.write(str(f), pcm, SR, subtype="PCM_16")
    from_file = mon.score_windows([Clip(str(f), "fan", "id_00", 0)], progress=False)[1]
    in_memory = mon.score_windows([Clip.from_array(pcm, SR, "x.wav", "fan", "id_00")], progress=False)[1]
    assert len(in_memory) == 4 and np.array_equal(from_file, in_memory)
    stereo = np.stack([y, y], axis=1)  # channels are mixed and other rates resampled as for a file
    at_2k = Clip.from_array(y[::2], SR // 2, "low.wav")
    assert len(mon.score_clips([Clip.from_array(stereo, SR, "st.wav"), at_2k], progress=False)[1]) == 2


def test_in_memory_clips_refuse_what_is_not_audio(tmp_path):
    from humwatch.audio import AudioSettings

    with pytest.raises(AudioError, match=r"<memory>/t.wav: samples must be"):
        Clip.from_array(np.array(["a", "b"]), SR, "t.wav")
    with pytest.raises(AudioError, match="sample rate 10"):
        Clip.from_array(np.zeros(100, np.float32), 10, "t.wav")
    with pytest.raises(DatasetError, match="name"):
        Clip.from_array(np.zeros(100, np.float32), SR, "a/b.wav")
    silent = Clip.from_array(np.zeros(SR, np.float32), SR, "quiet.wav")
    with pytest.raises(AudioError, match=r"<memory>/quiet.wav: silent"):
        silent.load(AudioSettings(seconds=1.0))
    samples = hum(1, 1.0)
    c = Clip.from_array(samples, SR, "copy.wav")
    samples[:] = 0  # the clip holds its own copy
    assert np.abs(c.load(AudioSettings(seconds=1.0))).max() > 0.1
    with pytest.raises(DatasetError, match="in-memory clip cannot be written"):
        write_clips_csv([c], tmp_path / "clips.csv")
    assert not (tmp_path / "clips.csv").exists()


def test_the_embedding_cache_keys_on_the_audio_not_the_name(tmp_path):
    from humwatch.embed import embed_clips
    from humwatch.methods import BackboneSettings, Context
    from humwatch.reader import ClipReader

    spec = BackboneSettings.from_dict({k: v for k, v in SETTINGS.items() if k != "detector"})
    bb = Context(audio=AudioSettings(sample_rate=SR)).backbone(spec)
    y = hum(3, 1.0)
    reader = ClipReader(AudioSettings(sample_rate=SR, seconds=1.0), progress=False)
    first = embed_clips([Clip.from_array(y, SR, "a.wav")], bb, cache_dir=tmp_path, reader=reader)
    again = embed_clips([Clip.from_array(y, SR, "renamed.wav")], bb, cache_dir=tmp_path, reader=reader)
    other = embed_clips([Clip.from_array(hum(4, 1.0), SR, "a.wav")], bb, cache_dir=tmp_path, reader=reader)
    assert again.stats["cache_hits"] == 1 and np.array_equal(first.X, again.X)
    assert other.stats["cache_hits"] == 0 and not np.array_equal(first.X, other.X)


def test_the_why_figure_of_a_kept_clip_needs_no_symlink_nor_temporary_file(served, tmp_path, monkeypatch):
    import os
    import tempfile

    from humwatch.service.scoring import MonitorPool

    pool = MonitorPool(served)
    kept = tmp_path / "17-abc.wav"
    sf.write(str(kept), hum(9, 2.0, 900.0), SR, subtype="PCM_16")

    def refuse(*a, **k):
        raise AssertionError("no file but the kept one is needed")

    monkeypatch.setattr(os, "symlink", refuse)
    monkeypatch.setattr(tempfile, "TemporaryDirectory", refuse)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    why = pool.explain("fan", kept, "pump #3 (left).wav")
    assert why.png[:8] == b"\x89PNG\r\n\x1a\n" and "threshold" in why.summary
    with pytest.raises(AudioError, match="^gone.wav: no such file"):
        pool.explain("fan", tmp_path / "missing.wav", "gone.wav")

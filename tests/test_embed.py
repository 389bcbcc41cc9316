"""embed_clips: batching, streaming, the on-disk cache (hits, damage, concurrency), bad files, .npz files."""

import hashlib
import json
import logging
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import humwatch.embed as E
from humwatch.audio import AudioSettings, load_audio, write_audio
from humwatch.data.clips import Clip
from humwatch.embed import EmbeddingSet, embed_clips
from humwatch.errors import AudioError, ConfigError, DamagedFileError
from humwatch.models import create_backbone

TINY_RX = dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], cardinality=4, base_width=32, stem_width=8)
RX = "resnext101_32x8d"
AUDIO = AudioSettings(seconds=1.0)


def _signal(seed, seconds=1.0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.2 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _make_clips(folder, n, start=0):
    folder = Path(folder)
    clips = []
    for i in range(start, start + n):
        p = folder / f"clip_{i:02d}.wav"
        write_audio(p, _signal(i))
        clips.append(Clip(str(p), "fan", f"id_0{i % 2}", i % 2, snr="6dB", split="train" if i % 3 else "test"))
    return clips


@pytest.fixture(scope="module")
def backbone():
    return create_backbone(RX, weights="none", config=TINY_RX)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return _make_clips(tmp_path_factory.mktemp("audio"), 6)


class Counter:
    """Wraps backbone.embed; counts calls and rows computed."""

    def __init__(self, bb, monkeypatch):
        self.calls, self.rows, self.inner = 0, 0, bb.embed
        monkeypatch.setattr(bb, "embed", self)

    def __call__(self, x):
        self.calls += 1
        self.rows += len(x)
        return self.inner(x)


def _entries(cache_dir):
    return sorted(Path(cache_dir).glob("*/*/*.emb"))


# -- results -------------------------------------------------------------------------------------------
def test_embeddings_match_direct_computation_and_keep_order(backbone, clips):
    emb = embed_clips(clips, backbone, batch_size=4, audio=AUDIO, progress=False)
    assert emb.X.shape == (6, 256) and emb.X.dtype == np.float32 and emb.clips == clips and emb.skipped == []
    direct = backbone.embed(backbone.frontend.batch([load_audio(c.path, AUDIO) for c in clips]))
    np.testing.assert_allclose(emb.X, direct, rtol=1e-5, atol=1e-6)
    assert emb.stats["computed"] == 6


def test_streaming_reads_and_embeds_batch_by_batch(backbone, tmp_path, monkeypatch):
    clips = _make_clips(tmp_path, 10)
    events = []
    import humwatch.reader as R

    real_load = R.load_audio
    monkeypatch.setattr(R, "load_audio", lambda p, s=None, **kw: (events.append("load"), real_load(p, s, **kw))[1])
    inner = backbone.embed
    monkeypatch.setattr(backbone, "embed", lambda x: (events.append(f"embed{len(x)}"), inner(x))[1])
    emb = embed_clips(clips, backbone, batch_size=4, audio=AUDIO, progress=False)
    assert events == ["load"] * 4 + ["embed4"] + ["load"] * 4 + ["embed4"] + ["load"] * 2 + ["embed2"]
    assert len(emb) == 10


def test_bad_arguments(backbone, clips):
    with pytest.raises(ConfigError, match="on_bad"):
        embed_clips(clips, backbone, on_bad="ignore", progress=False)
    with pytest.raises(ConfigError, match="batch size"):
        embed_clips(clips, backbone, batch_size=0, progress=False)
    empty = embed_clips([], backbone, progress=False)
    assert empty.X.shape == (0, 256) and empty.clips == []


def test_progress_bar_and_random_init_are_reported(clips, capsys, caplog, monkeypatch):
    monkeypatch.setenv("HUMWATCH_PROGRESS", "1")
    backbone = create_backbone(RX, weights="none", config=TINY_RX)
    with caplog.at_level(logging.WARNING, logger="humwatch"):
        embed_clips(clips[:2], backbone, audio=AUDIO, progress=True)
        embed_clips(clips[2:4], backbone, audio=AUDIO, progress=False)
    said = [r for r in caplog.records if "RANDOM INIT" in r.getMessage()]
    assert len(said) == 1  # said loudly, once per backbone
    assert "embedding (resnext101_32x8d, RANDOM INIT)" in capsys.readouterr().err


# -- cache -----------------------------------------------------------------------------------------------
def test_second_run_recomputes_nothing(backbone, clips, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = embed_clips(clips, backbone, cache_dir=cache, batch_size=4, audio=AUDIO, progress=False)
    assert first.stats["computed"] == 6 and len(_entries(cache)) == 6
    info = json.loads((cache / backbone.cache_key / "backbone.json").read_text())
    assert info["random_init"] and info["cache_key"] == backbone.cache_key
    count = Counter(backbone, monkeypatch)
    second = embed_clips(clips, backbone, cache_dir=cache, batch_size=4, audio=AUDIO, progress=False)
    assert count.calls == 0 and second.stats["cache_hits"] == 6
    np.testing.assert_array_equal(second.X, first.X)


def test_cache_is_keyed_by_content_audio_settings_and_backbone(backbone, clips, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    base = embed_clips(clips[:3], backbone, cache_dir=cache, audio=AUDIO, progress=False)
    count = Counter(backbone, monkeypatch)
    # same bytes under another name: a hit
    moved = tmp_path / "renamed.wav"
    shutil.copy(clips[0].path, moved)
    r = embed_clips([Clip(str(moved), "fan", "id_00", 0)], backbone, cache_dir=cache, audio=AUDIO, progress=False)
    assert count.rows == 0
    np.testing.assert_array_equal(r.X[0], base.X[0])
    # same name, other bytes: a miss
    write_audio(moved, _signal(99))
    embed_clips([Clip(str(moved), "fan", "id_00", 0)], backbone, cache_dir=cache, audio=AUDIO, progress=False)
    assert count.rows == 1
    # other audio settings: misses
    embed_clips(clips[:3], backbone, cache_dir=cache, audio=AudioSettings(seconds=0.5), progress=False)
    assert count.rows == 4
    # another backbone (other seed): its own entries
    other = create_backbone(RX, weights="none", config=TINY_RX, seed=1)
    o = embed_clips(clips[:3], other, cache_dir=cache, audio=AUDIO, progress=False)
    assert o.stats["computed"] == 3 and not np.allclose(o.X, base.X)


def test_damaged_entries_are_detected_and_recomputed(backbone, clips, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    ref = embed_clips(clips, backbone, cache_dir=cache, audio=AUDIO, progress=False)
    files = _entries(cache)
    # 1: truncated; 2: one payload byte flipped (checksum); 3: well-formed but the wrong size; 4: garbage
    files[0].write_bytes(files[0].read_bytes()[:-7])
    b = bytearray(files[1].read_bytes())
    b[-3] ^= 0xFF
    files[1].write_bytes(bytes(b))
    data = files[2].read_bytes()
    n = len(E.MAGIC)
    (hlen,) = struct.unpack("<I", data[n : n + 4])
    head = json.loads(data[n + 4 : n + 4 + hlen])
    payload = np.ones(257, dtype="<f4").tobytes()
    head.update(dim=257, sha256=hashlib.sha256(payload).hexdigest())
    h = json.dumps(head).encode()
    files[2].write_bytes(E.MAGIC + struct.pack("<I", len(h)) + h + payload)
    files[3].write_bytes(b"\x00" * 40)
    count = Counter(backbone, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="humwatch"):
        again = embed_clips(clips, backbone, cache_dir=cache, audio=AUDIO, progress=False)
    assert count.rows == 4 and again.stats["cache_damaged"] == 4 and again.stats["cache_hits"] == 2
    assert sum("damaged entry" in r.getMessage() for r in caplog.records) == 4
    np.testing.assert_allclose(again.X, ref.X, rtol=1e-6, atol=1e-7)
    third = embed_clips(clips, backbone, cache_dir=cache, audio=AUDIO, progress=False)  # repaired
    assert count.rows == 4 and third.stats["cache_hits"] == 6


def test_concurrent_threads_share_a_cache(backbone, clips, tmp_path):
    cache = tmp_path / "cache"
    results, errors = [None] * 4, []
    gate = threading.Barrier(4)

    def work(k):
        try:
            gate.wait()
            results[k] = embed_clips(clips, backbone, cache_dir=cache, batch_size=2, audio=AUDIO, progress=False).X
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    assert len(_entries(cache)) == 6 and not list(cache.rglob("*.tmp"))
    again = embed_clips(clips, backbone, cache_dir=cache, audio=AUDIO, progress=False)
    assert again.stats["cache_hits"] == 6 and again.stats["cache_damaged"] == 0


WORKER = """
import os, sys, time
from pathlib import Path
from types import SimpleNamespace
import numpy as np
from humwatch.audio import AudioSettings
from humwatch.embed import EmbeddingCache

bb = SimpleNamespace(name="fake", cache_key="fake-0123", embedding_dim=512, precision="fp32", config={},
                     frontend=SimpleNamespace(name="cnn", key="k"),
                     weights=SimpleNamespace(describe=lambda: "fake", random_init=False))


class SlowFile:  # every write stalls half-way, as on a slow or busy disk: a torn entry would be seen
    def __init__(self, f):
        self.f = f

    def write(self, b):
        self.f.write(b[: len(b) // 2])
        self.f.flush()
        time.sleep(0.002)
        self.f.write(b[len(b) // 2 :])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


real_fdopen = os.fdopen
os.fdopen = lambda fd, mode: SlowFile(real_fdopen(fd, mode))
cache = EmbeddingCache(sys.argv[1], bb, AudioSettings())
while not Path(sys.argv[2]).exists():
    time.sleep(0.01)
wrong = 0
for rnd in range(4):
    for i in range(150):
        key = cache.key(f"{i:064x}")
        want = np.arange(512, dtype=np.float32) * (i + 1)
        got = cache.get(key)
        wrong += got is not None and not np.array_equal(got, want)
        cache.put(key, want)
print(wrong, cache.damaged, cache.hits)
"""


def test_two_processes_writing_the_same_entries_do_not_corrupt_the_cache(tmp_path):
    """Two processes write and read the same 150 entries over and over at the same time, with writes that
    stall half-way: every read is either a miss or the exact vector, never a torn or damaged entry
    (writing in place instead of temp file + os.replace makes this test fail)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cache, go = tmp_path / "cache", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, str(script), str(cache), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    go.touch()
    hits = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        wrong, damaged, h = map(int, out.split())
        assert wrong == 0 and damaged == 0
        hits += h
    assert hits >= 2 * 3 * 150  # rounds 2-4 of each process read what was written
    files = _entries(cache)
    assert len(files) == 150 and not list(cache.rglob("*.tmp"))
    bb = SimpleNamespace(
        name="fake",
        cache_key="fake-0123",
        embedding_dim=512,
        precision="fp32",
        config={},
        frontend=SimpleNamespace(name="cnn", key="k"),
        weights=SimpleNamespace(describe=lambda: "fake", random_init=False),
    )
    c = E.EmbeddingCache(cache, bb, AudioSettings())
    for i in range(150):
        np.testing.assert_array_equal(c.get(c.key(f"{i:064x}")), np.arange(512, dtype=np.float32) * (i + 1))


# -- bad files ---------------------------------------------------------------------------------------------
def _bad_clips(folder, clips):
    folder = Path(folder)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "junk.wav").write_bytes(b"RIFF not really a wav file at all" * 10)
    write_audio(folder / "silent.wav", np.zeros(16000, np.float32))
    bad = [folder / "missing.wav", folder / "empty.wav", folder / "junk.wav", folder / "silent.wav"]
    mixed = [
        clips[0],
        Clip(str(bad[0]), "fan", "id_00", 0),
        clips[1],
        Clip(str(bad[1]), "fan", "id_00", 0),
        Clip(str(bad[2]), "fan", "id_00", 0),
        clips[2],
        Clip(str(bad[3]), "fan", "id_00", 1),
    ]
    return mixed, [str(p) for p in bad]


@pytest.mark.parametrize("use_cache", [False, True])
def test_bad_files_raise_or_are_skipped_and_recorded(backbone, clips, tmp_path, use_cache):
    mixed, bad = _bad_clips(tmp_path, clips)
    cache = tmp_path / "cache" if use_cache else None
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        embed_clips(mixed, backbone, cache_dir=cache, audio=AUDIO, on_bad="error", progress=False)
    emb = embed_clips(mixed, backbone, cache_dir=cache, batch_size=3, audio=AUDIO, on_bad="skip", progress=False)
    assert emb.clips == clips[:3] and emb.X.shape == (3, 256)
    assert [p for p, _ in emb.skipped] == bad
    reasons = [r for _, r in emb.skipped]
    for want, reason in zip(("no such file", "empty file", "not readable audio", "silent"), reasons):
        assert want in reason and "\n" not in reason
    good = embed_clips(clips[:3], backbone, audio=AUDIO, progress=False)
    np.testing.assert_allclose(emb.X, good.X, rtol=1e-5, atol=1e-6)


# -- npz ---------------------------------------------------------------------------------------------------
def test_npz_round_trip_without_pickle(backbone, clips, tmp_path):
    mixed, _ = _bad_clips(tmp_path, clips)
    emb = embed_clips(mixed, backbone, audio=AUDIO, on_bad="skip", progress=False)
    out = tmp_path / "emb" / "x.npz"
    emb.save_npz(out)
    with np.load(out, allow_pickle=False) as z:
        assert {"X", "path", "label", "machine_type", "machine_id", "split"} <= set(z.files)
        assert z["X"].dtype == np.float32 and z["label"].dtype == np.int64
        for k in ("path", "machine_type", "machine_id", "split", "skipped_path"):
            assert z[k].dtype.kind == "U"
        assert list(z["split"]) == [c.split for c in emb.clips]
    back = EmbeddingSet.load_npz(out)
    np.testing.assert_array_equal(back.X, emb.X)
    assert back.clips == emb.clips and back.skipped == emb.skipped
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DamagedFileError, match="broken.npz: damaged"):
        EmbeddingSet.load_npz(tmp_path / "broken.npz")
    np.savez(tmp_path / "partial.npz", X=np.zeros((1, 2), np.float32))
    with pytest.raises(DamagedFileError, match="lacks array"):
        EmbeddingSet.load_npz(tmp_path / "partial.npz")

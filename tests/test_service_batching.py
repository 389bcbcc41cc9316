"""Micro-batching in the service (issue 22, item 4), in process (FastAPI's TestClient from threads):
concurrent uploads to one machine are scored in one call of its monitor (the
``humwatch_score_batch_clips`` histogram and the batcher's count say so), each with the score and
decision it gets alone (equal, not close: the autoencoder scores each clip's frames on their own),
a network's batch changes only the last bits (a tiny AST: within a relative 1e-6, the same
decision), a clip that cannot be scored fails only itself, a store that cannot write is still 503 for every
clip of a batch, and the options are checked (one line, exit status 2)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from service_fixtures import clip_bytes, fresh_monitors, iso, make_token
from sqlalchemy.orm import sessionmaker

MACHINE = "api-1"


class App:
    """An in-process server on a copy of one monitor, with an ingest and a read token."""

    def __init__(self, service_monitors, root: Path, **settings):
        from fastapi.testclient import TestClient

        from humwatch.service.app import Service, create_app
        from humwatch.service.config import ServiceSettings
        from humwatch.service.store import default_db_url

        monitors = fresh_monitors(service_monitors, root / "monitors", names=(MACHINE,))
        db = default_db_url(monitors)
        self.tokens = {scope: make_token(db, f"t-{scope}", scope) for scope in ("ingest", "read")}
        self.settings = ServiceSettings(monitors=str(monitors), device="cpu", **settings).validate()
        self.svc = Service.open(self.settings)
        self.app = create_app(self.settings, self.svc)
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def post(self, data: bytes, at: float, filename: str | None = None):
        from fastapi.testclient import TestClient

        params = {"recorded_at": iso(at), **({"filename": filename} if filename else {})}
        with TestClient(self.app, raise_server_exceptions=False) as c:  # one client per thread
            return c.post(
                f"/api/v1/machines/{MACHINE}/clips",
                content=data,
                params=params,
                headers={"authorization": f"Bearer {self.tokens['ingest']}", "content-type": "audio/wav"},
            )

    def post_together(self, uploads: list[tuple[bytes, float]]) -> list:
        """Every upload from a thread of its own, all started at once; the answers in their order."""
        answers: list = [None] * len(uploads)
        start = threading.Barrier(len(uploads))

        def send(i, data, at):
            start.wait()
            answers[i] = self.post(data, at)

        threads = [threading.Thread(target=send, args=(i, d, at)) for i, (d, at) in enumerate(uploads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(a is not None for a in answers), "an upload did not come back"
        return answers

    def batches(self) -> tuple[float, float]:
        """(count, sum) of ``humwatch_score_batch_clips`` as /metrics shows it."""
        from prometheus_client.parser import text_string_to_metric_families

        r = self.client.get("/metrics", headers={"authorization": f"Bearer {self.tokens['read']}"})
        assert r.status_code == 200, r.text
        fam = {f.name: f for f in text_string_to_metric_families(r.text)}["humwatch_score_batch_clips"]
        values = {s.name: s.value for s in fam.samples}
        return values["humwatch_score_batch_clips_count"], values["humwatch_score_batch_clips_sum"]

    def alone(self, data: bytes, name: str = "upload"):
        """(score, threshold, anomalous) of the clip scored by itself, or the AudioError it raises."""
        from humwatch.audio import decode_bytes
        from humwatch.data.clips import Clip

        samples, rate = decode_bytes(data, name)
        return self.svc.pool.score(MACHINE, Clip.from_array(samples, rate, name, "service", MACHINE))

    def close(self):
        self.client.close()
        self.svc.close()


@pytest.fixture()
def batching(service_monitors, tmp_path):
    # a long wait, so that the clips sent together surely meet; a full batch is scored at once
    a = App(service_monitors, tmp_path, max_batch=4, batch_wait_ms=1000)
    yield a
    a.close()


def test_concurrent_uploads_to_one_machine_are_scored_in_one_batch_as_each_alone(batching):
    uploads = [(clip_bytes("anomalous" if k == 2 else "normal", seed=10 + k), float(k)) for k in range(4)]
    assert batching.batches() == (0.0, 0.0)  # the warm-up scores alone, outside the batcher
    answers = batching.post_together(uploads)
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    assert batching.batches() == (1.0, 4.0) and batching.svc.batcher.batches == 1  # one call of the monitor, 4 clips
    for (data, _), r in zip(uploads, answers):
        score, threshold, anomalous = batching.alone(data)
        doc = r.json()
        assert doc["score"] == score and doc["threshold"] == threshold  # exactly, not within a tolerance
        assert doc["decision"] == ("anomalous" if anomalous else "normal")
    assert [r.json()["decision"] for r in answers] == ["normal", "normal", "anomalous", "normal"]


def test_batched_scores_equal_single_scores_for_clips_of_one_name_and_of_several_windows(batching):
    """``score_many`` straight: clips that share a name (uploads without one are all "upload"), and
    a 7 s recording (several windows: its score is the highest window's), each as alone."""
    from humwatch.audio import decode_bytes
    from humwatch.data.clips import Clip

    blobs = [clip_bytes("normal", seed=s) for s in range(3)] + [clip_bytes("normal", seed=7, seconds=7.0), clip_bytes("anomalous", seed=1)]
    clips = [Clip.from_array(*decode_bytes(b, "upload"), "upload", "service", MACHINE) for b in blobs]
    together = batching.svc.pool.score_many(MACHINE, clips)
    assert together == [batching.svc.pool.score(MACHINE, c) for c in clips]
    assert len({t[0] for t in together}) == len(clips)  # five different clips, five different scores


def test_a_clip_that_cannot_be_scored_fails_only_itself(batching, service_monitors, tmp_path):
    """A clip shorter than the monitor's window in a batch: 422 with the line it gets alone (the
    unbatched server's answer), and its three batch-mates their scores."""
    short = clip_bytes("normal", seed=5, seconds=0.5)
    uploads = [(clip_bytes("normal", seed=20 + k), float(k)) for k in range(3)] + [(short, 3.0)]
    answers = batching.post_together(uploads)
    assert [r.status_code for r in answers] == [200, 200, 200, 422], [r.text for r in answers]
    assert batching.batches() == (1.0, 4.0)
    for (data, _), r in zip(uploads[:3], answers):
        assert r.json()["score"] == batching.alone(data)[0]
    alone = App(service_monitors, tmp_path / "alone", max_batch=1)
    try:
        single = alone.post(short, 3.0)
    finally:
        alone.close()
    assert single.status_code == 422 and answers[3].json() == single.json(), (answers[3].text, single.text)
    assert "shorter than" in single.json()["detail"] and "<memory>" not in single.json()["detail"]


def test_a_batch_the_monitor_cannot_score_as_a_whole_is_scored_clip_by_clip(batching, monkeypatch):
    """When the monitor's call fails for the whole batch (an error no skip records), each clip is
    scored alone: the one that fails alone gets its own error (422 here), the others their scores."""
    from humwatch.errors import ConfigError

    poison = clip_bytes("normal", seed=99, seconds=3.0)
    monitor = batching.svc.pool.get(MACHINE).monitor
    real = type(monitor).score_clips

    def fragile(self, clips, *a, **kw):
        if any(c.samples is not None and c.samples.data.shape[0] == 3 * 16000 for c in clips):
            raise ConfigError("clip features of shape (1, 2) do not fit this monitor")
        return real(self, clips, *a, **kw)

    monkeypatch.setattr(type(monitor), "score_clips", fragile)
    uploads = [(clip_bytes("normal", seed=30 + k), float(k)) for k in range(3)] + [(poison, 3.0)]
    answers = batching.post_together(uploads)
    assert [r.status_code for r in answers] == [200, 200, 200, 422], [r.text for r in answers]
    assert "do not fit" in answers[3].json()["detail"]
    for (data, _), r in zip(uploads[:3], answers):
        assert r.json()["score"] == batching.alone(data)[0]


def test_a_store_that_cannot_write_is_503_for_every_clip_of_a_batch(batching):
    """Scoring in batches changes nothing after it: a read-only database answers each clip of the
    batch 503 with the reason (never 500), and nothing is stored."""
    from sqlalchemy import func, select

    from humwatch.service.store import ClipRow, make_engine

    store = batching.svc.store
    ro = make_engine(f"sqlite:///file:{store.engine.url.database}?mode=ro&uri=true", writer=True)
    real = store._write
    store._write = sessionmaker(ro, expire_on_commit=False)
    try:
        uploads = [(clip_bytes("anomalous" if k % 2 else "normal", seed=40 + k), float(k)) for k in range(4)]
        answers = batching.post_together(uploads)
    finally:
        store._write = real
    assert [r.status_code for r in answers] == [503] * 4, [r.text for r in answers]
    assert all("read-only" in r.json()["detail"] and r.headers["retry-after"] for r in answers)
    assert batching.batches() == (1.0, 4.0)
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(ClipRow)) == 0


def test_max_batch_1_scores_each_clip_alone(service_monitors, tmp_path):
    a = App(service_monitors, tmp_path, max_batch=1)
    try:
        answers = a.post_together([(clip_bytes("normal", seed=50 + k), float(k)) for k in range(3)])
        assert [r.status_code for r in answers] == [200] * 3
        assert a.batches() == (3.0, 3.0) and not a.svc.batcher._threads  # no scoring thread: each in its upload's thread
    finally:
        a.close()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--max-batch", "0"], ["--max-batch", "0"]),
        (["--max-batch", "257"], ["--max-batch", "257"]),
        (["--batch-wait-ms", "-1"], ["--batch-wait-ms", "-1"]),
        (["--batch-wait-ms", "5000"], ["--batch-wait-ms", "5000"]),
        (["--max-batch", "many"], ["--max-batch", "integer"]),
        (["--threads", "-1"], ["--threads", "-1"]),
    ],
)
def test_batch_options_are_checked_in_one_line(args, words, tmp_path, capsys):
    from humwatch.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", str(tmp_path), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def test_batch_settings_are_checked():
    from humwatch.errors import ConfigError
    from humwatch.service.config import ServiceSettings

    s = ServiceSettings()
    assert (s.max_batch, s.batch_wait_ms, s.threads) == (16, 5.0, 1)
    for bad in ({"max_batch": 0}, {"batch_wait_ms": float("nan")}, {"max_batch": 2.5}, {"threads": -1}):
        with pytest.raises(ConfigError, match="max_batch|batch_wait_ms|threads"):
            ServiceSettings(**bad).validate()


def test_a_server_process_limits_its_numeric_threads():
    """``--threads 1`` (the default): torch and the BLAS library use one thread per operation in the
    server process (``create_app`` without a service of the caller's applies it); 0 leaves them."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from humwatch.service.app import limit_threads

    before_torch, before_blas = torch.get_num_threads(), threadpool_limits(limits=None)
    try:
        torch.set_num_threads(2)
        limit_threads(0)
        assert torch.get_num_threads() == 2
        limit_threads(1)
        assert torch.get_num_threads() == 1
        assert all(lib["num_threads"] == 1 for lib in threadpool_info())
    finally:
        torch.set_num_threads(before_torch)
        before_blas.restore_original_limits()


def test_a_network_monitor_scores_a_batch_as_each_clip_alone(tmp_path):
    """embed-detect with a (tiny, random-initialised) AST: a batch's windows go through the network
    together (the embedding batches hold windows of several clips), which changes the last bits of
    its float32 matrix products: each clip's score is the one it gets alone within a relative 1e-6
    (measured: about 1e-11), with the same threshold and decision."""
    from helpers import make_mimii_tree

    from humwatch.audio import decode_bytes
    from humwatch.calibrate import fit_monitor
    from humwatch.data import load_dataset
    from humwatch.data.clips import Clip
    from humwatch.service.scoring import MonitorPool

    tiny_ast = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    data = make_mimii_tree(tmp_path / "data", machines=("fan",), ids=("00",), n_normal=8, n_anomalous=0, seconds=2.0)
    settings = {"backbone": "ast", "weights": "none", "backbone_config": tiny_ast, "detector": "knn", "detector_params": {"n_neighbors": 2}}
    mon, _ = fit_monitor(
        load_dataset(data),
        "embed-detect",
        settings,
        seconds=2.0,
        folds=2,
        progress=False,
        false_alarm_rate=0.2,
        threshold_method="percentile",
    )
    mon.save(tmp_path / "monitors" / "m")
    pool = MonitorPool(tmp_path / "monitors")
    blobs = [clip_bytes("normal", seed=s) for s in range(5)] + [clip_bytes("anomalous", seed=1), clip_bytes("normal", seed=9, seconds=5.0)]
    clips = [Clip.from_array(*decode_bytes(b, "upload"), "upload", "service", "m") for b in blobs]
    together = pool.score_many("m", clips)
    alone = [pool.score("m", c) for c in clips]
    np.testing.assert_allclose([t[0] for t in together], [a[0] for a in alone], rtol=1e-6, atol=0)
    assert [t[1:] for t in together] == [a[1:] for a in alone]  # the same threshold and decision
    assert len({a[0] for a in alone}) == len(clips)

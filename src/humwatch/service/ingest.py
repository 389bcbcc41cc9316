"""Taking in a clip: the upload (raw body or multipart), its checks, scoring, the stored row, the
alert rule, and the kept audio of anomalous clips with its retention limit.

Idempotent: a clip's key is the SHA-256 of its machine, its recording time and the SHA-256 of its
bytes, and the ``clips.key`` column is unique. A clip sent again (a listener retrying after a lost
answer) is found before it is scored and answered with the row already stored
(``"duplicate": true``); two copies arriving at the same moment both get scored, one insert wins
and the other is answered with the winner's row.

Every refusal is an :class:`UploadError` with an HTTP status and one line: 413 (too large), 415
(not WAV or FLAC), 422 (unusable audio, too long, a bad recording time). Unusable audio is what
:func:`humwatch.audio.decode_bytes` and :func:`humwatch.audio.load_audio` refuse (AudioError, one
line); the line names the upload's file name. The upload is decoded in memory and scored as an
in-memory clip (:meth:`humwatch.data.clips.Clip.from_array`): no temporary file; its bytes are
written only where the store keeps the audio (an anomalous clip, with ``keep_audio``). The clip is
scored by the ingestor's ``scorer``: the service's :class:`~humwatch.service.scoring.Batcher`, which
scores it together with the machine's other clips arriving at the same time (the same result as
alone), while this thread waits.

Before scoring, the sensor checks (:func:`humwatch.sensor.sensor_fault`) look for a microphone's
fault: a clip with one is stored with its finding (``sensor``; decision ``sensor``, no score) and
not scored; it opens a ``sensor`` alert (:mod:`.health`), never an anomaly alert.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from humwatch.audio import decode_bytes
from humwatch.data.clips import MEMORY, Clip
from humwatch.errors import AudioError, HumwatchError
from humwatch.io import atomic_path
from humwatch.sensor import sensor_fault
from humwatch.service.alerts import machine_rule, on_clip
from humwatch.service.health import on_sensor_clip
from humwatch.service.store import Alert, ClipRow, Machine, Store, utcnow

log = logging.getLogger("humwatch.service")
PRUNE_EVERY_S = 30.0


class UploadError(HumwatchError):
    """A clip the service refuses: an HTTP status and one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """A received upload, in memory (its size is bounded by the upload limit)."""

    data: bytes
    sha256: str
    size: int
    filename: str
    recorded_at: _dt.datetime | None
    suffix: str = ".wav"
    """``.wav`` or ``.flac``, from its first bytes (the name a kept copy gets)."""


def parse_time(text: str | None) -> _dt.datetime | None:
    """An ISO 8601 time (``2024-05-01T12:00:00Z``, ``...+02:00``; no zone = UTC), or None."""
    if text is None or not str(text).strip():
        return None
    raw = str(text).strip()
    try:
        t = _dt.datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
        return (t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    except ValueError:
        raise UploadError(422, f"recorded_at {raw[:40]!r}: not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)") from None
    except OverflowError:  # 9999-12-31T23:00-05:00 is after the last time Python (and the databases) can hold, in UTC
        raise UploadError(422, f"recorded_at {raw[:40]!r}: outside the years 1 to 9999 in UTC") from None


def safe_filename(name: str) -> str:
    """The client's file name as shown and stored: its last part, other characters than letters,
    digits and ``._-@+`` replaced, at most 200 characters; ``upload`` when nothing is left."""
    base = re.sub(r"[^A-Za-z0-9._@+-]", "_", Path(str(name).replace("\\", "/")).name)[:200].strip(".")
    return base or "upload"


def sniff_suffix(head: bytes) -> str | None:
    """``.wav`` or ``.flac`` from a file's first bytes; None for anything else."""
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return ".wav"
    if head[:4] == b"fLaC":
        return ".flac"
    return None


def clip_key(machine: str, recorded_at: _dt.datetime | None, audio_sha256: str) -> str:
    when = recorded_at.isoformat() if recorded_at is not None else ""
    return hashlib.sha256(f"{machine}\n{when}\n{audio_sha256}".encode()).hexdigest()


async def receive_upload(request, limit: int) -> Upload:
    """The request's audio (raw body, or the ``file`` part of a multipart form), read into memory
    (at most ``limit`` bytes) and hashed; the recording time comes from the ``recorded_at`` query
    parameter or form field."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    recorded = request.query_params.get("recorded_at")
    filename = request.query_params.get("filename", "")
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=8)
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise UploadError(422, "multipart upload without a 'file' part holding the audio")
        recorded = form.get("recorded_at") or recorded
        filename = part.filename or filename

        async def chunks():
            while block := await part.read(1 << 16):
                yield block

        source = chunks()
    else:  # the raw body, whatever type it says it is (curl says form-urlencoded): its bytes decide
        source = request.stream()
    recorded_at = parse_time(recorded)
    filename = safe_filename(filename)
    h, size, blocks = hashlib.sha256(), 0, []
    async for block in source:
        size += len(block)
        if size > limit:
            raise UploadError(413, f"{filename}: larger than the {limit / 1e6:g} MB upload limit")
        h.update(block)
        blocks.append(block)
    if size == 0:
        raise UploadError(422, f"{filename}: empty upload")
    data = b"".join(blocks)
    suffix = sniff_suffix(data[:12])
    if suffix is None:
        raise UploadError(415, f"{filename}: not WAV or FLAC audio")
    return Upload(data, h.hexdigest(), size, filename, recorded_at, suffix)


def clip_document(row: ClipRow, machine: str) -> dict:
    iso = lambda t: t.isoformat() if t is not None else None  # noqa: E731
    return {
        "clip_id": row.id,
        "machine": machine,
        "at": iso(row.at),
        "recorded_at": iso(row.recorded_at),
        "received_at": iso(row.received_at),
        "score": None if row.sensor else row.score,
        "threshold": row.threshold,
        "decision": row.decision,
        "sensor": row.sensor,
        "filename": row.filename,
        "seconds": row.seconds,
        "audio_kept": row.audio_path is not None,
        "warnings": (row.warnings or "").splitlines(),
    }


class Ingestor:
    """Scores and stores clips (blocking: called from the server's worker threads)."""

    def __init__(self, store: Store, pool, settings, notifier=None):
        self.store, self.pool, self.settings, self.notifier = store, pool, settings, notifier
        self.scorer = pool
        """What scores a clip (``score(machine, clip)``): the pool, or the service's batcher
        (:class:`humwatch.service.scoring.Batcher`, set by :class:`humwatch.service.app.Service`)."""
        self.rule = settings.rule
        self.audio_dir = settings.audio_path
        self._last_prune = 0.0
        self._prune_lock = threading.Lock()
        self._write_lock = threading.Lock() if getattr(store, "dialect", "") == "sqlite" else contextlib.nullcontext()
        """SQLite takes one writer at a time: this process's writers queue here, in turn, instead of
        in SQLite's busy handler (which sleeps up to 100 ms between tries: a long tail under load)."""

    @property
    def tmp_dir(self) -> Path:
        d = self.audio_dir / ".incoming" if self.settings.keep_audio else Path(tempfile.gettempdir())
        d.mkdir(parents=True, exist_ok=True)
        return d

    def clean_incoming(self, older_than_s: float = 3600.0) -> None:
        """Remove uploads a killed server left half-received (old ones only: another worker
        process may be receiving into the same folder right now)."""
        if not self.settings.keep_audio:
            return
        cutoff = time.time() - older_than_s
        for p in self.tmp_dir.glob(".upload-*"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass

    def ensure_machines(self) -> None:
        """A row for every machine with a monitor (so ingest only ever locks an existing row)."""
        for name in self.pool.names():
            try:
                with self.store.write() as s:
                    if s.scalar(select(Machine.id).where(Machine.name == name)) is None:
                        s.add(Machine(name=name))
            except IntegrityError:  # another worker made it first
                pass

    def _existing(self, key: str, machine: str) -> dict | None:
        with self.store.read() as s:
            row = s.scalar(select(ClipRow).where(ClipRow.key == key))
            return None if row is None else self._answer(s, row, machine, duplicate=True, opened=False)

    def _answer(self, s, row: ClipRow, machine: str, duplicate: bool, opened: bool) -> dict:
        alert = s.scalar(select(Alert).where(Alert.machine_id == row.machine_id, Alert.state == "open", Alert.kind == "anomaly"))
        return {
            **clip_document(row, machine),
            "duplicate": duplicate,
            "alert_opened": opened,
            "alert": None if alert is None else {"id": alert.id, "acknowledged": alert.acked_at is not None},
        }

    def ingest(self, machine: str, up: Upload) -> dict:
        """Score ``up`` with the machine's monitor and store it (or find it stored); its document."""
        key = clip_key(machine, up.recorded_at, up.sha256)
        found = self._existing(key, machine)
        if found is not None:
            return found
        try:
            samples, rate = decode_bytes(up.data, up.filename)
            seconds = samples.shape[0] / rate
            limit = self.settings.max_seconds
            if seconds > limit:
                raise UploadError(422, f"{up.filename}: {seconds:.1f} s of audio, longer than the {limit:g} s limit")
            entry = self.pool.get(machine)
            fault = sensor_fault(samples, rate, getattr(entry.monitor, "reference", None) if entry is not None else None)
            warnings: list[str] = []
            if fault is not None:  # the microphone's fault, not the machine's: stored, not scored
                score, threshold, anomalous = 0.0, entry.threshold if entry is not None else 0.0, False
            else:
                clip = Clip.from_array(samples, rate, up.filename, "service", machine)
                score, threshold, anomalous = self.scorer.score(machine, clip)  # shorter than the window: AudioError (422)
                warnings = self.pool.warnings(machine, clip)  # another channel count or sample rate than the monitor's recordings
            del samples
        except AudioError as e:
            raise UploadError(422, str(e).replace(f"{MEMORY}/", "")) from None
        try:
            return self._store(machine, up, key, seconds, score, threshold, anomalous, fault, warnings)
        except IntegrityError:  # the same clip, stored by a request that ran alongside this one
            found = self._existing(key, machine)
            if found is None:
                raise
            return found

    def _store(self, machine, up: Upload, key, seconds, score, threshold, anomalous, fault=None, warnings=()) -> dict:
        kept: Path | None = None
        try:
            with self._write_lock, self.store.write() as s:
                m = s.scalar(select(Machine).where(Machine.name == machine).with_for_update())
                row = ClipRow(
                    machine_id=m.id,
                    key=key,
                    audio_sha256=up.sha256,
                    at=up.recorded_at or utcnow(),
                    recorded_at=up.recorded_at,
                    received_at=utcnow(),
                    score=score,
                    threshold=threshold,
                    anomalous=anomalous,
                    filename=up.filename,
                    seconds=seconds,
                    sensor=fault,
                    warnings="\n".join(" ".join(w.split())[:500] for w in warnings) or None,
                )
                s.add(row)
                s.flush()
                if anomalous and self.settings.keep_audio:  # the only place an upload's bytes are written
                    kept = self.audio_dir / machine / f"{row.id}-{key[:12]}{up.suffix}"
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(kept, suffix=up.suffix) as tmp:  # whole or not at all
                        tmp.write_bytes(up.data)
                    row.audio_path, row.audio_bytes = str(kept), up.size
                outbox = self.notifier.outbox if self.notifier else None
                on_sensor_clip(s, m, row, outbox)  # a sensor fault opens its own alert; any clip ends a stale one
                alert = None if fault else on_clip(s, m, row, machine_rule(m, self.rule), outbox)
                doc = self._answer(s, row, machine, duplicate=False, opened=alert is not None)
        except BaseException:
            if kept is not None:
                kept.unlink(missing_ok=True)
            raise
        if alert is not None:
            log.warning("alert %s opened: %s, %d of the last clips anomalous", alert.id, machine, alert.n_anomalous)
        if self.notifier:  # opened or closed an alert, maybe: the senders look now
            self.notifier.notify()
        return doc

    # -- kept audio ------------------------------------------------------------------------------
    def maybe_prune(self) -> None:
        """Apply the retention limits, at most every PRUNE_EVERY_S seconds (after a response; a
        store or disk that fails here is logged in one line, and tried again next time)."""
        from sqlalchemy.exc import SQLAlchemyError

        if not self.settings.keep_audio or time.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return
        if self._prune_lock.acquire(blocking=False):
            try:
                self._last_prune = time.monotonic()
                self.prune()
            except (OSError, SQLAlchemyError) as e:
                log.error("retention: could not delete old kept audio: %s", " ".join(str(getattr(e, "orig", None) or e).split())[:300])
            finally:
                self._prune_lock.release()

    def prune(self) -> int:
        """Delete kept audio older than ``audio_days`` and, oldest first, beyond ``audio_max_mb``
        in all; returns how many clips lost their audio (their rows stay)."""
        cutoff = utcnow() - _dt.timedelta(days=self.settings.audio_days)
        budget = self.settings.audio_max_mb * 1e6
        with self.store.write() as s:
            rows = s.execute(
                select(ClipRow.id, ClipRow.audio_path, ClipRow.audio_bytes, ClipRow.received_at)
                .where(ClipRow.audio_path.is_not(None))
                .order_by(ClipRow.id.desc())
            ).all()
            total, full, drop = 0, False, []
            for r in rows:  # newest first: keep until the budget is spent, then drop all older ones
                if r.received_at >= cutoff and not full:
                    full = total + r.audio_bytes > budget
                    if not full:
                        total += r.audio_bytes
                        continue
                drop.append(r)
            for r in drop:
                row = s.get(ClipRow, r.id)
                row.audio_path, row.audio_bytes = None, 0
        for r in drop:
            p = Path(r.audio_path)
            for f in p.parent.glob(p.stem + ".*"):
                f.unlink(missing_ok=True)
        if drop:
            log.info("retention: deleted the kept audio of %d clip(s)", len(drop))
        return len(drop)

"""``humwatch listen``: send clips to the service from a microphone or a watched folder, losing none
while the service is down.

Every clip goes to a local **spool** first (``SPOOL/pending/``: the audio and a JSON sidecar with
its machine and recording time, each written whole), and a sender thread sends the spool oldest
first. A clip leaves the spool when the service has stored it (200, also for a clip it already
had: sending twice is harmless, the service is idempotent); one the service refuses as bad audio
(413, 415, 422) moves to ``SPOOL/rejected/`` with the reason. The service down (no connection, a
5xx, 429) keeps every clip and retries with exponential backoff up to ``retry_max`` seconds, so
after an outage the spool drains by itself. A refused token or a machine the service has no
monitor for (401, 403, 404) keeps that clip and goes on with the others (one misnamed folder does
not hold up every machine), trying it again in the next round.
The spool is bounded (``spool_max_mb``; the oldest clips go first when it is full).

Sources:

* ``--watch DIR`` (:mod:`watchdog`): a new audio file (WAV, FLAC, ...) below DIR is taken once it
  has stopped growing; ``DIR/<machine>/file.wav`` names its machine unless ``--machine`` is given.
  A file up to 1.5 clips long is sent as it is; a longer one is cut into ``seconds``-long clips (a
  last piece under half a clip is dropped). Recording time: the file's modification time minus its
  length (when the recorder finished writing it), plus each piece's offset.
* ``--mic`` (:mod:`sounddevice`, PortAudio): ``seconds``-long clips from an input device, each
  stamped with the time of its first sample.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from humwatch.errors import ConfigError
from humwatch.io import atomic_path, write_json, write_text
from humwatch.settings import Int, Optional, Real, Settings, Text, setting

log = logging.getLogger("humwatch.listen")
REJECT_STATUSES = (413, 415, 422)
"""The service's answers that mean "this clip will never be accepted": it leaves the spool."""
HOLD_STATUSES = (401, 403, 404)
"""Answers about this clip's machine or the token (fixed by a person): the clip waits, the others go on."""
SEEN_MAX = 100_000
"""Files a folder watch remembers as sent (so that touching one does not send it again)."""


def default_spool() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "humwatch" / "spool"


@dataclass
class ListenSettings(Settings):
    where: ClassVar[str] = "listen"

    server: str = setting("http://127.0.0.1:8000", Text(), "the service's URL")
    machine: str | None = setting(None, Optional(Text()), "machine name (watch mode: else DIR/<machine>/)")
    spool: str = setting("", Text(), "spool folder")
    seconds: float = setting(10.0, Real(0.5, 600), "clip length (seconds)")
    sample_rate: int = setting(16000, Int(8000, 192000), "microphone sample rate")
    channels: int = setting(1, Int(1, 64), "microphone channels")
    retry_max: float = setting(30.0, Real(0.1, 3600), "longest wait between retries (seconds)")
    timeout: float = setting(60.0, Real(1, 3600), "HTTP timeout of one upload (seconds)")
    spool_max_mb: float = setting(1024.0, Real(1), "spool size limit (MB)")
    settle: float = setting(0.5, Real(0, 60), "watch: seconds a new file must stop growing before it is taken")

    def _check(self) -> None:
        if not self.server.startswith(("http://", "https://")):
            raise ConfigError(f"--server {self.server!r}: must be an http:// or https:// URL")
        self.server = self.server.rstrip("/")


# ------------------------------------------------------------------------------------------ spool


@dataclass
class Item:
    """One spooled clip: its audio file and what to send with it."""

    audio: Path
    machine: str
    recorded_at: str
    filename: str

    @property
    def meta(self) -> Path:
        return self.audio.with_suffix(".json")


class Spool:
    """``ROOT/pending/<ns>-<seq>.<ext>`` + ``.json`` (the sidecar is written last: an entry without
    one is half-written and not sent), ``ROOT/rejected/`` for clips the service refused."""

    def __init__(self, root: str | Path, max_bytes: float = 1024e6):
        self.root = Path(root)
        self.pending_dir, self.rejected_dir = self.root / "pending", self.root / "rejected"
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.arrived = threading.Event()

    def _name(self) -> str:
        with self._lock:
            return f"{time.time_ns():020d}-{next(self._seq):06d}"

    def _commit(self, audio: Path, machine: str, recorded_at: _dt.datetime, filename: str) -> Item:
        item = Item(audio, machine, recorded_at.astimezone(_dt.timezone.utc).isoformat(), filename)
        write_json(item.meta, {"machine": machine, "recorded_at": item.recorded_at, "filename": filename})
        self._limit()
        self.arrived.set()
        return item

    def put_file(self, src: Path, machine: str, recorded_at: _dt.datetime) -> Item:
        """Spool a copy of ``src`` (its bytes unchanged)."""
        dest = self.pending_dir / (self._name() + src.suffix.lower())
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        return self._commit(dest, machine, recorded_at, src.name)

    def put_audio(self, y, sample_rate: int, machine: str, recorded_at: _dt.datetime, filename: str) -> Item:
        """Spool samples (frames x channels, or mono) as 16-bit WAV."""
        from humwatch.audio import write_audio

        dest = self.pending_dir / (self._name() + ".wav")
        write_audio(dest, y, sample_rate)
        return self._commit(dest, machine, recorded_at, filename)

    def pending(self) -> list[Item]:
        """Spooled clips, oldest first."""
        items = []
        audio_of = {p.stem: p for p in self.pending_dir.iterdir() if p.suffix != ".json"}  # one listing, not one per clip
        for meta in sorted(self.pending_dir.glob("*.json")):
            audio = audio_of.get(meta.stem)
            if audio is None:
                continue
            try:
                doc = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            items.append(Item(audio, doc["machine"], doc["recorded_at"], doc.get("filename", audio.name)))
        return items

    def done(self, item: Item) -> None:
        item.meta.unlink(missing_ok=True)
        item.audio.unlink(missing_ok=True)

    def reject(self, item: Item, reason: str) -> None:
        for p in (item.audio, item.meta):
            if p.exists():
                os.replace(p, self.rejected_dir / p.name)
        write_text(self.rejected_dir / (item.audio.stem + ".reason.txt"), reason + "\n")

    def _limit(self) -> None:
        total = sum(p.stat().st_size for p in self.pending_dir.iterdir() if p.is_file())
        for item in self.pending() if total > self.max_bytes else []:
            if total <= self.max_bytes:
                break
            total -= item.audio.stat().st_size + item.meta.stat().st_size
            log.warning("spool over its %.0f MB limit: dropped the oldest clip %s", self.max_bytes / 1e6, item.audio.name)
            self.done(item)


# ----------------------------------------------------------------------------------------- sender


class Sender:
    """Sends the spool to the service, oldest first, until stopped."""

    def __init__(self, settings: ListenSettings, token: str, spool: Spool):
        self.s, self.token, self.spool = settings, token, spool
        self.sent = self.rejected = 0
        self.last_error = ""

    def send(self, client, item: Item) -> str:
        """``sent``, ``rejected``, ``hold`` (this clip waits) or ``retry`` (the service is not
        there: everything waits), with :attr:`last_error` saying why."""
        url = f"{self.s.server}/api/v1/machines/{item.machine}/clips"
        ctype = "audio/flac" if item.audio.suffix == ".flac" else "audio/wav"
        try:
            data = item.audio.read_bytes()
        except OSError as e:  # removed or unreadable behind our back: it can never be sent
            self.last_error = f"{item.audio}: {e.strerror or e}"
            return "rejected"
        try:
            r = client.post(url, content=data, params={"recorded_at": item.recorded_at,
                            "filename": item.filename}, headers={"authorization": f"Bearer {self.token}",
                                                                 "content-type": ctype})
        except Exception as e:  # httpx's transport errors: refused, reset, timed out
            self.last_error = f"{self.s.server}: {type(e).__name__} {' '.join(str(e).split())[:120]}".strip()
            return "retry"
        detail = _detail(r)
        if r.status_code == 200:
            doc = r.json()
            alert = " (alert opened)" if doc.get("alert_opened") else ""
            log.info("%s: %s %.4g (threshold %.4g)%s%s", item.filename, doc.get("decision"), doc.get("score"),
                     doc.get("threshold"), alert, ", sent before" if doc.get("duplicate") else "")
            return "sent"
        self.last_error = f"HTTP {r.status_code}: {detail}"
        if r.status_code in REJECT_STATUSES:
            return "rejected"
        return "hold" if r.status_code in HOLD_STATUSES else "retry"

    def run(self, stop: threading.Event) -> None:
        import httpx

        wait, held = 0.0, {}  # held: clip file -> when to try it again
        with httpx.Client(timeout=self.s.timeout) as client:
            while not stop.is_set():
                down = False
                for item in self.spool.pending():
                    if stop.is_set():
                        return
                    if held.get(item.audio.name, 0.0) > time.monotonic():
                        continue
                    outcome = self.send(client, item)
                    if outcome == "retry":
                        wait = min(max(2 * wait, 0.5), self.s.retry_max)
                        log.warning("%s: not sent (%s); next try in %.1f s", item.filename, self.last_error, wait)
                        down = True
                        break
                    wait = 0.0
                    if outcome == "hold":
                        held[item.audio.name] = time.monotonic() + self.s.retry_max
                        log.warning("%s: not sent (%s); it waits in the spool, next try in %.0f s", item.filename,
                                    self.last_error, self.s.retry_max)
                        continue
                    held.pop(item.audio.name, None)
                    if outcome == "sent":
                        self.sent += 1
                        self.spool.done(item)
                    else:
                        self.rejected += 1
                        log.error("%s: refused by the service (%s); moved to %s", item.filename, self.last_error,
                                  self.spool.rejected_dir)
                        self.spool.reject(item, self.last_error)
                if down:
                    stop.wait(wait)
                else:
                    self.spool.arrived.wait(0.5)
                    self.spool.arrived.clear()


def _detail(r) -> str:
    try:
        return str(r.json().get("detail", ""))[:200]
    except Exception:
        return r.text[:200]


# ---------------------------------------------------------------------------------------- sources


def clip_pieces(n_frames: int, sample_rate: int, seconds: float) -> list[tuple[int, int]]:
    """(start, stop) frames of the clips a file of ``n_frames`` is sent as: the whole file when it
    is at most 1.5 clips long, else ``seconds``-long pieces (a last piece under half a clip dropped)."""
    size = int(round(seconds * sample_rate))
    if n_frames <= 1.5 * size:
        return [(0, n_frames)]
    pieces = [(a, min(a + size, n_frames)) for a in range(0, n_frames, size)]
    return [(a, b) for a, b in pieces if b - a >= size / 2]


def spool_file(spool: Spool, path: Path, machine: str, seconds: float) -> list[Item]:
    """Put ``path`` into the spool as one clip or as pieces (see :func:`clip_pieces`)."""
    import soundfile as sf

    from humwatch.audio import header

    try:
        info = header(path)  # (a header outside 1-384 kHz too: never cut into thousands of pieces)
    except Exception as e:  # not audio (yet): the service would refuse it too
        log.error("%s: not readable audio (%s); not sent", path, " ".join(str(e).split())[:120])
        return []
    mtime = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc)
    start = mtime - _dt.timedelta(seconds=info.frames / info.samplerate)
    pieces = clip_pieces(info.frames, info.samplerate, seconds)
    if len(pieces) == 1 and pieces[0] == (0, info.frames):
        return [spool.put_file(path, machine, start)]
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return [spool.put_audio(y[a:b], sr, machine, start + _dt.timedelta(seconds=a / sr), f"{path.stem}@{a / sr:.0f}s.wav")
            for a, b in pieces]


class FolderSource:
    """Watches ``folder`` (recursively) and spools every new audio file once it is complete."""

    def __init__(self, folder: str | Path, spool: Spool, settings: ListenSettings, existing: bool = False):
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise ConfigError(f"--watch {folder}: no such folder")
        self.spool, self.s, self.existing = spool, settings, existing
        self._seen: dict[Path, tuple[int, int]] = {}
        self._candidates: dict[Path, float] = {}
        self._lock = threading.Lock()

    def machine_of(self, path: Path) -> str | None:
        if self.s.machine:
            return self.s.machine
        rel = path.relative_to(self.folder)
        return rel.parts[0] if len(rel.parts) > 1 else None

    def offer(self, path: str | Path) -> None:
        """A file that may be new (a watchdog event): checked once it settles."""
        from humwatch.audio import AUDIO_SUFFIXES

        p = Path(path)
        if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".") and self.spool.root not in p.parents:
            with self._lock:
                self._candidates[p] = time.monotonic()

    def _settled(self) -> list[Path]:
        now, ready = time.monotonic(), []
        with self._lock:
            for p, t in list(self._candidates.items()):
                if now - t >= self.s.settle:
                    del self._candidates[p]
                    ready.append(p)
        return ready

    def take(self, path: Path) -> int:
        """Spool ``path`` if it is complete and not spooled before; how many clips it gave."""
        try:
            st = path.stat()
        except OSError:
            return 0
        if time.time() - st.st_mtime < self.s.settle:  # still being written
            self.offer(path)
            return 0
        sig = (st.st_size, st.st_mtime_ns)
        if self._seen.get(path) == sig:
            return 0
        machine = self.machine_of(path)
        if machine is None:
            log.error("%s: which machine? put it in %s/<machine>/ or pass --machine", path, self.folder)
            self._seen[path] = sig
            return 0
        items = spool_file(self.spool, path, machine, self.s.seconds)
        self._seen[path] = sig
        while len(self._seen) > SEEN_MAX:  # forget the oldest: a long-running watch stays small
            self._seen.pop(next(iter(self._seen)))
        log.info("%s -> %d clip(s) for %s", path.name, len(items), machine)
        return len(items)

    def run(self, stop: threading.Event) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        source = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if not event.is_directory and event.event_type in ("created", "modified", "closed", "moved"):
                    source.offer(getattr(event, "dest_path", "") or event.src_path)

        observer = Observer()
        observer.schedule(Handler(), str(self.folder), recursive=True)
        observer.start()
        try:
            if self.existing:
                from humwatch.audio import find_audio

                for p in find_audio(self.folder):
                    self.offer(p)
            while not stop.wait(0.2):
                for p in self._settled():
                    try:
                        self.take(p)
                    except OSError as e:  # the spool's disk full or gone: this file is not sent, the watch goes on
                        log.error("%s: could not spool it (%s)", p, e.strerror or e)
        finally:
            observer.stop()
            observer.join(5)


class MicSource:
    """Records ``seconds``-long clips from a sound input device into the spool."""

    def __init__(self, spool: Spool, settings: ListenSettings, device: str | int | None = None):
        if not settings.machine:
            raise ConfigError("--mic needs --machine NAME (the machine the microphone listens to)")
        self.spool, self.s, self.device = spool, settings, device

    def run(self, stop: threading.Event) -> None:
        import queue

        import numpy as np

        try:
            import sounddevice as sd
        except (OSError, ImportError) as e:  # sounddevice raises OSError when the PortAudio library is missing
            raise ConfigError(f"--mic: {e} (pip install sounddevice; apt-get install libportaudio2)") from None
        blocks: queue.Queue = queue.Queue()

        def callback(indata, frames, when, status):
            if status:
                log.warning("microphone: %s", status)
            blocks.put(indata.copy())

        size, sr = int(round(self.s.seconds * self.s.sample_rate)), self.s.sample_rate
        buf, have, k = [], 0, 0
        try:
            stream = sd.InputStream(samplerate=sr, channels=self.s.channels, dtype="float32", device=self.device,
                                    callback=callback)
        except Exception as e:  # PortAudio's errors: no such device, unsupported rate ...
            raise ConfigError(f"--mic: cannot open the input device ({' '.join(str(e).split())[:160]})") from None
        with stream:
            t0 = _dt.datetime.now(_dt.timezone.utc)
            while not stop.is_set():
                try:
                    block = blocks.get(timeout=0.2)
                except queue.Empty:
                    continue
                buf.append(block)
                have += len(block)
                while have >= size:
                    y = np.concatenate(buf)
                    clip, rest = y[:size], y[size:]
                    start = t0 + _dt.timedelta(seconds=k * self.s.seconds)
                    try:
                        self.spool.put_audio(clip, sr, self.s.machine, start, f"mic-{start:%Y%m%dT%H%M%S}.wav")
                    except OSError as e:  # the spool's disk full or gone: this clip is lost, recording goes on
                        log.error("microphone clip at %s: could not spool it (%s)", start, e.strerror or e)
                    k += 1
                    buf, have = [rest], len(rest)


def listen(source, sender: Sender, stop: threading.Event) -> None:
    """Run a source and the sender until ``stop`` is set (or the source fails)."""
    thread = threading.Thread(target=sender.run, args=(stop,), name="humwatch-sender", daemon=True)
    thread.start()
    try:
        source.run(stop)
    finally:
        stop.set()
        thread.join(10)

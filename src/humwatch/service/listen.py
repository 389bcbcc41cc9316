"""``humwatch listen``: send clips to the service from a microphone or a watched folder, losing none
while the service is down.

Every clip goes to a local **spool** first (``SPOOL/pending/``: the audio and a JSON sidecar with
its machine and recording time, each written whole), and a sender thread sends the spool oldest
first. A clip leaves the spool when the service has stored it (200, also for a clip it already
had: sending twice is harmless, the service is idempotent). One the service refuses (any other 4xx:
bad audio, a machine without a monitor, a name no monitor can have) moves to ``SPOOL/rejected/``
with the reason beside it, kept, never deleted (one misnamed folder does not hold up every
machine); so does an entry whose sidecar cannot be read. Only the service being down (no
connection, a 5xx, 408, 429) keeps every clip and retries with exponential backoff up to
``retry_max`` seconds, so after an outage the spool drains by itself. A refused token (401, 403)
or a redirect (the wrong ``--server``: the clip is not at fault) keeps that clip and goes on with
the others, trying it again in the next round. Should the sender thread ever die, the process
ends with one ``error:`` line instead of running on without sending.
The spool is bounded (``spool_max_mb``; the oldest clips go first when it is full).
With nothing to send, the sender posts a heartbeat (``POST /api/v1/machines/M/heartbeat``) every
``heartbeat`` seconds (60; 0: none) for each machine it speaks for (``--machine``, and every machine
it has sent a clip of), so the service tells a quiet machine from a dead listener (``stale``).

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
import stat
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from humwatch.errors import ConfigError, HumwatchError, one_line
from humwatch.io import atomic_path, write_json, write_text
from humwatch.settings import WINDOW_SECONDS, Int, Optional, Real, Settings, Text, setting

log = logging.getLogger("humwatch.listen")
RETRY_STATUSES = (408, 429)
"""The 4xx answers that mean "not now" (as every 5xx does): everything waits and is tried again."""
HOLD_STATUSES = (401, 403)
"""Answers about the token (fixed by a person, not the clip's fault): the clip waits, the others go on.
Every other 4xx refuses the clip itself: it is set aside in ``SPOOL/rejected/`` with the reason."""
SEEN_MAX = 100_000
"""Files a folder watch remembers as sent (so that touching one does not send it again)."""


def default_spool() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "humwatch" / "spool"


class ListenError(HumwatchError):
    """The listener cannot go on (its sender stopped); the clips stay in the spool."""


@dataclass
class ListenSettings(Settings):
    where: ClassVar[str] = "listen"

    server: str = setting("http://127.0.0.1:8000", Text(), "the service's URL")
    machine: str | None = setting(None, Optional(Text()), "machine name (watch mode: else DIR/<machine>/)")
    spool: str = setting("", Text(), "spool folder")
    seconds: float = setting(10.0, WINDOW_SECONDS, "clip length (seconds)")
    sample_rate: int = setting(16000, Int(8000, 192000), "microphone sample rate")
    channels: int = setting(1, Int(1, 64), "microphone channels")
    retry_max: float = setting(30.0, Real(0.1, 3600), "longest wait between retries (seconds)")
    timeout: float = setting(60.0, Real(1, 3600), "HTTP timeout of one upload (seconds)")
    spool_max_mb: float = setting(1024.0, Real(1), "spool size limit (MB)")
    settle: float = setting(0.5, Real(0, 60), "watch: seconds a new file must stop growing before it is taken")
    heartbeat: float = setting(60.0, Real(0, 3600), "seconds between heartbeats while there is nothing to send (0: none)")

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
            except OSError:  # sent and removed meanwhile
                continue
            except ValueError as e:  # sidecars are written whole: this one was damaged later
                self._set_aside(audio, f"{meta.name}: damaged ({one_line(e)})")
                continue
            fields = doc if isinstance(doc, dict) else {}
            machine, recorded_at = fields.get("machine"), fields.get("recorded_at")
            if not (isinstance(machine, str) and machine and isinstance(recorded_at, str)):
                self._set_aside(audio, f"{meta.name}: no machine and recording time in it")
                continue
            items.append(Item(audio, machine, recorded_at, str(fields.get("filename") or audio.name)))
        return items

    def _set_aside(self, audio: Path, reason: str) -> None:
        log.error("%s: cannot be sent (%s); moved to %s", audio.name, reason, self.rejected_dir)
        self.reject(Item(audio, "", "", audio.name), reason)

    def done(self, item: Item) -> None:
        item.meta.unlink(missing_ok=True)
        item.audio.unlink(missing_ok=True)

    def reject(self, item: Item, reason: str) -> None:
        """Move the clip and its sidecar to ``rejected/`` (kept: ``mv`` them back to send again)
        with ``<name>.reason.txt`` beside them."""
        for p in (item.audio, item.meta):
            try:
                os.replace(p, self.rejected_dir / p.name)
            except FileNotFoundError:  # never written, or moved by another thread just now
                pass
        write_text(self.rejected_dir / (item.audio.stem + ".reason.txt"), reason + "\n")

    def _limit(self) -> None:
        # the sender removes clips while this sums: one gone counts 0 (an error lost the rest of a cut file)
        sizes = {p: _size(p) for p in self.pending_dir.iterdir()}
        total = sum(sizes.values())
        for item in self.pending() if total > self.max_bytes else []:
            if total <= self.max_bytes:
                break
            total -= sizes.get(item.audio, 0) + sizes.get(item.meta, 0)
            if not item.audio.exists():  # sent since the sizes were taken: it made its room itself
                continue
            log.warning("spool over its %.0f MB limit: dropped the oldest clip %s", self.max_bytes / 1e6, item.audio.name)
            self.done(item)


def _size(path: Path) -> int:
    """A spooled file's size; 0 when it is gone (sent, or a temporary file renamed, just now) or no file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


# ----------------------------------------------------------------------------------------- sender


class Sender:
    """Sends the spool to the service, oldest first, until stopped."""

    def __init__(self, settings: ListenSettings, token: str, spool: Spool):
        self.s, self.token, self.spool = settings, token, spool
        self.sent = self.rejected = self.heartbeats = 0
        self.last_error = ""
        self.machines: set[str] = {settings.machine} if settings.machine else set()  # --machine, and those it sent clips of
        self._last_contact = dict.fromkeys(self.machines, time.monotonic())  # the first beat after `heartbeat` s idle

    def _url(self, machine: str, what: str) -> str:
        # quoted: a folder named "bad?x" must reach the service as that name, not as "bad" and a query
        # (and "." or "..", which URL clients fold away, as %2E)
        name = urllib.parse.quote(machine, safe="")
        return f"{self.s.server}/api/v1/machines/{name if name.strip('.') else name.replace('.', '%2E')}/{what}"

    def beat(self, client) -> int:
        """Heartbeats for the machines idle ``heartbeat`` s (:func:`.listen_beat.send_heartbeats`)."""
        from humwatch.service.listen_beat import send_heartbeats

        return send_heartbeats(self, client)

    def send(self, client, item: Item) -> str:
        """``sent``, ``rejected``, ``hold`` (this clip waits) or ``retry`` (the service is not
        there: everything waits), with :attr:`last_error` saying why."""
        url = self._url(item.machine, "clips")
        ctype = "audio/flac" if item.audio.suffix == ".flac" else "audio/wav"
        try:
            data = item.audio.read_bytes()
        except OSError as e:  # removed or unreadable behind our back: it can never be sent
            self.last_error = f"{item.audio}: {e.strerror or e}"
            return "rejected"
        try:
            r = client.post(
                url,
                content=data,
                params={"recorded_at": item.recorded_at, "filename": item.filename},
                headers={"authorization": f"Bearer {self.token}", "content-type": ctype},
            )
        except Exception as e:  # httpx's transport errors: refused, reset, timed out
            self.last_error = f"{self.s.server}: {type(e).__name__} {' '.join(str(e).split())[:120]}".strip()
            return "retry"
        code = r.status_code
        if code == 200:
            try:
                doc = r.json()
                stored = isinstance(doc, dict) and "clip_id" in doc
            except ValueError:
                stored = False
            if not stored:  # a proxy's or another program's page: the clip is not stored
                self.last_error = f"HTTP 200 without the service's answer ({' '.join(r.text.split())[:80]!r}): is --server right?"
                return "retry"
            alert = " (alert opened)" if doc.get("alert_opened") else ""
            log.info(
                "%s: %s, score %s (threshold %s)%s%s",
                item.filename,
                doc.get("decision"),
                _num(doc.get("score")),
                _num(doc.get("threshold")),
                alert,
                ", sent before" if doc.get("duplicate") else "",
            )
            return "sent"
        self.last_error = f"HTTP {code}: {_detail(r)}"
        if code >= 500 or code in RETRY_STATUSES:
            return "retry"
        if code in HOLD_STATUSES or 300 <= code < 400:
            if 300 <= code < 400:
                self.last_error += f" (redirected to {r.headers.get('location', '?')}: give that as --server)"
            return "hold"
        return "rejected"

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
                        log.warning(
                            "%s: not sent (%s); it waits in the spool, next try in %.0f s", item.filename, self.last_error, self.s.retry_max
                        )
                        continue
                    held.pop(item.audio.name, None)
                    if outcome == "sent":
                        self.sent += 1
                        self.machines.add(item.machine)
                        self._last_contact[item.machine] = time.monotonic()
                        self.spool.done(item)
                    else:
                        self.rejected += 1
                        log.error("%s: refused by the service (%s); moved to %s", item.filename, self.last_error, self.spool.rejected_dir)
                        self.spool.reject(item, self.last_error)
                if down:
                    stop.wait(wait)
                else:
                    self.beat(client)  # nothing (more) to send: say the machines are alive
                    self.spool.arrived.wait(0.5)
                    self.spool.arrived.clear()


def _num(x) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) else str(x)


def _detail(r) -> str:
    try:
        return str(r.json().get("detail", ""))[:200]
    except Exception:
        return r.text[:200]


# ---------------------------------------------------------------------------------------- sources


def clip_pieces(n_frames: int, sample_rate: int, seconds: float) -> list[tuple[int, int]]:
    """(start, stop) frames of the clips a file of ``n_frames`` is sent as: the whole file when it
    is at most 1.5 clips long, else ``seconds``-long pieces, the last one taking the rest shorter
    than a clip (so every piece is at least a whole clip: none is ever sent short, to be refused or
    padded, and no sound is dropped; the monitor scores a longer piece window by window)."""
    size = int(round(seconds * sample_rate))
    if n_frames <= 1.5 * size:
        return [(0, n_frames)]
    starts = list(range(0, n_frames - size + 1, size))
    return [(a, b if b + size <= n_frames else n_frames) for a, b in ((a, a + size) for a in starts)]


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
    return [
        spool.put_audio(y[a:b], sr, machine, start + _dt.timedelta(seconds=a / sr), f"{path.stem}@{a / sr:.0f}s.wav") for a, b in pieces
    ]


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


def listen(source, sender: Sender, stop: threading.Event) -> None:
    """Run a source and the sender until ``stop`` is set (or the source fails). A sender that dies
    stops the source too and raises :class:`ListenError`: a listener that records but never sends
    would fill its spool, dropping clips, while looking alive."""
    died: list[BaseException] = []

    def send() -> None:
        try:
            sender.run(stop)
        except BaseException as e:  # anything at all: said once below, the source stops
            log.debug("the sender stopped", exc_info=True)
            died.append(e)
            stop.set()

    thread = threading.Thread(target=send, name="humwatch-sender", daemon=True)
    thread.start()
    try:
        source.run(stop)
    finally:
        stop.set()
        thread.join(10)
    if died:
        e = died[0]
        raise ListenError(
            f"the sender stopped ({type(e).__name__}: {' '.join(str(e).split())[:200]}); the clips not sent are in {sender.spool.pending_dir}"
        ) from None


from humwatch.service.listen_mic import MicSource  # noqa: E402,F401  (the microphone source: listen_mic.py)

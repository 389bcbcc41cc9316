"""``humwatch listen --mic``: the microphone source of :mod:`humwatch.service.listen` (in a module of
its own to keep listen.py under the project's 500 lines; import it from either)."""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from typing import TYPE_CHECKING

from humwatch.errors import ConfigError

if TYPE_CHECKING:
    from humwatch.service.listen import ListenSettings, Spool

log = logging.getLogger("humwatch.listen")


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
            stream = sd.InputStream(samplerate=sr, channels=self.s.channels, dtype="float32", device=self.device, callback=callback)
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

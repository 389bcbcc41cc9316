"""The listener's heartbeats (:class:`humwatch.service.listen.Sender`): with nothing to send, a
``POST /api/v1/machines/M/heartbeat`` every ``heartbeat`` seconds for each machine the listener
speaks for, so the service tells a quiet machine from a dead listener (``stale``)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("humwatch.listen")


def send_heartbeats(sender, client) -> int:
    """Send a heartbeat for every machine of ``sender`` not heard of for ``heartbeat`` seconds (a
    clip sent counts); how many were answered 200. A failed one is logged and tried at the next
    beat, never held against the clips."""
    if not sender.s.heartbeat:
        return 0
    now, n = time.monotonic(), 0
    for machine in sorted(sender.machines):
        if now - sender._last_contact.get(machine, -1e18) < sender.s.heartbeat:
            continue
        sender._last_contact[machine] = now
        try:
            r = client.post(sender._url(machine, "heartbeat"), headers={"authorization": f"Bearer {sender.token}"})
        except Exception as e:  # the service is not there: the next clip or beat tries again
            log.debug("%s: heartbeat not sent (%s)", machine, type(e).__name__)
            continue
        if r.status_code == 200:
            n, sender.heartbeats = n + 1, sender.heartbeats + 1
        else:
            log.warning("%s: heartbeat refused (HTTP %s: %s)", machine, r.status_code, " ".join(r.text.split())[:160])
    return n

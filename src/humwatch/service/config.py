"""The service's settings, checked before anything is loaded (``humwatch serve``'s options).

They travel to uvicorn's worker processes as JSON in ``$HUMWATCH_SERVICE_SETTINGS`` (each worker
builds its app from them: :func:`humwatch.service.app.app_from_env`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from humwatch.errors import ConfigError
from humwatch.settings import Bool, Int, Optional, Real, Settings, Text, setting

ENV = "HUMWATCH_SERVICE_SETTINGS"
EMAIL_RE = re.compile(r"^[^@\s,<>\"]{1,64}@[A-Za-z0-9.-]{1,253}$")

PORT = Int(1, 65535)
"""A TCP port (the server's, the SMTP server's)."""
RETRIES = Int(0, 20)
"""Retries after a notification's first attempt (webhook, e-mail)."""
BACKOFF_SECONDS = Real(0, 600, open_low=True)
"""Seconds before a notification's first retry (doubling after)."""
MAX_BATCH = Int(1, 256)
"""Clips of one machine scored together (``--max-batch``; 1: each alone)."""
BATCH_WAIT_MS = Real(0, 1000)
"""Milliseconds a batch waits for more clips after its first (``--batch-wait-ms``)."""
THREADS = Int(0, 1024)
"""Threads one numeric operation may use in a server process (``--threads``; 0: the libraries' default)."""


@dataclass
class ServiceSettings(Settings):
    where: ClassVar[str] = "serve"

    monitors: str = setting(".", Text(), "folder of monitors, one per machine (MONITORS/<machine>/)")
    db: str | None = setting(None, Optional(Text()), "database URL (default: SQLite file MONITORS/humwatch-service.db)")
    device: str = setting("cpu", Text(), "where the monitors' models run")
    max_upload_mb: float = setting(16.0, Real(0, 1024, open_low=True), "largest upload accepted (MB)")
    max_seconds: float = setting(60.0, Real(0, 3600, open_low=True), "longest audio accepted (seconds)")
    alert_rule: str = setting("3/5/3", Text(), "K/N/M: K anomalous of the last N clips open an alert, M normal ones close it")
    keep_audio: bool = setting(True, Bool(), "keep the audio of anomalous clips (for listening and figures)")
    audio_dir: str | None = setting(None, Optional(Text()), "where kept audio goes (default: MONITORS/humwatch-service-audio)")
    audio_days: float = setting(30.0, Real(0, open_low=True), "kept audio older than this is deleted (days)")
    audio_max_mb: float = setting(1024.0, Real(0, open_low=True), "kept audio beyond this total is deleted, oldest first (MB)")
    webhook: str | None = setting(None, Optional(Text()), "URL POSTed a JSON document when an alert opens, is acknowledged or closes")
    webhook_secret: str | None = setting(None, Optional(Text()), "sign webhook bodies with HMAC-SHA256 of this secret")
    webhook_retries: int = setting(5, RETRIES, "webhook retries after the first attempt")
    webhook_backoff: float = setting(1.0, BACKOFF_SECONDS, "seconds before the first retry (doubling)")
    smtp_host: str | None = setting(None, Optional(Text()), "SMTP server that alert e-mails go through")
    smtp_port: int = setting(25, PORT, "its port")
    smtp_from: str | None = setting(None, Optional(Text()), "the e-mails' From address")
    smtp_starttls: bool = setting(False, Bool(), "upgrade the SMTP connection with STARTTLS")
    smtp_retries: int = setting(3, RETRIES, "e-mail retries after the first attempt")
    smtp_backoff: float = setting(5.0, BACKOFF_SECONDS, "seconds before the first e-mail retry (doubling)")
    notify_email: str | None = setting(None, Optional(Text()), "comma-separated addresses e-mailed alert events")
    public_url: str | None = setting(None, Optional(Text()), "the dashboard's address, for links in notifications")
    max_failed_logins: int = setting(
        100,
        Int(0, 1_000_000),
        "unknown or revoked tokens one client address may show per minute before its requests are answered 429 (0: no limit)",
    )
    max_uploads_per_minute: int = setting(
        1200, Int(0, 10_000_000), "clips one token may send per minute before more are answered 429 (0: no limit)"
    )
    max_batch: int = setting(16, MAX_BATCH, "clips of one machine scored together in one call of its monitor (1: each clip alone)")
    batch_wait_ms: float = setting(5.0, BATCH_WAIT_MS, "how long a batch waits for more clips after its first (milliseconds)")
    threads: int = setting(
        1, THREADS, "threads one operation of torch or the BLAS library may use in each server process (0: their default, every core)"
    )

    def _check(self) -> None:
        from humwatch.service.alerts import AlertRule

        AlertRule.parse(self.alert_rule)
        if self.webhook is not None and not self.webhook.startswith(("http://", "https://")):
            raise ConfigError(f"--webhook {self.webhook!r}: must be an http:// or https:// URL")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"--public-url {self.public_url!r}: must be an http:// or https:// URL")
        if self.notify_email is not None:
            if not self.smtp_host or not self.smtp_from:
                raise ConfigError("--notify-email needs --smtp-host and --smtp-from")
            for addr in [self.smtp_from, *self.email_recipients]:
                if not EMAIL_RE.match(addr):
                    raise ConfigError(f"--notify-email/--smtp-from: {addr!r} is not an e-mail address (name@host)")
            if not self.email_recipients:
                raise ConfigError("--notify-email: no address given (a@b,c@d)")
        elif self.smtp_host or self.smtp_from:
            raise ConfigError("--smtp-host/--smtp-from without --notify-email: say who is e-mailed")

    # -- derived ---------------------------------------------------------------------------------
    @property
    def email_recipients(self) -> list[str]:
        return [a.strip() for a in (self.notify_email or "").split(",") if a.strip()]

    @property
    def db_url(self) -> str:
        from humwatch.service.store import default_db_url

        return self.db or default_db_url(self.monitors)

    @property
    def audio_path(self) -> Path:
        return Path(self.audio_dir) if self.audio_dir else Path(self.monitors).resolve() / "humwatch-service-audio"

    @property
    def rule(self):
        from humwatch.service.alerts import AlertRule

        return AlertRule.parse(self.alert_rule)

    def to_env(self) -> dict[str, str]:
        return {ENV: json.dumps(self.to_dict())}

    @classmethod
    def from_env(cls) -> "ServiceSettings":
        raw = os.environ.get(ENV)
        if not raw:
            raise ConfigError(f"${ENV} is not set (start the service with `humwatch serve`)")
        return cls.from_dict(json.loads(raw))

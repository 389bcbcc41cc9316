"""`humwatch serve` (the scoring service), `humwatch listen` (its client) and `humwatch token` (API tokens)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Optional

import typer

from humwatch.commands import options as o
from humwatch.errors import ConfigError

token_app = typer.Typer(help="API tokens of a service (stored as hashes; a token is shown once, when it is made).", no_args_is_help=True)


def _store(monitors: Optional[Path], db: Optional[str]):
    from humwatch.service.store import Store, default_db_url

    if db is None and monitors is None:
        raise ConfigError("say which service: --monitors MONITORS (its default database) or --db URL")
    store = Store(db or default_db_url(monitors))
    store.migrate()
    return store


def serve_cmd(
    monitors: o.Monitors,
    db: o.Db = None,
    host: o.Host = "127.0.0.1",
    port: o.Port = 8000,
    workers: o.Workers = 1,
    max_batch: o.MaxBatch = 16,
    batch_wait_ms: o.BatchWaitMs = 5.0,
    threads: o.ServeThreads = 1,
    device: o.Device = "auto",
    max_upload_mb: o.MaxUploadMb = 16.0,
    max_seconds: o.MaxSeconds = 60.0,
    alert_rule: o.AlertRuleOption = "3/5/3",
    keep_audio: o.KeepAudio = True,
    audio_dir: o.AudioDir = None,
    audio_days: o.AudioDays = 30.0,
    audio_max_mb: o.AudioMaxMb = 1024.0,
    webhook: o.Webhook = None,
    webhook_secret: o.WebhookSecret = None,
    webhook_retries: o.WebhookRetries = 5,
    webhook_backoff: o.WebhookBackoff = 1.0,
    smtp_host: o.SmtpHost = None,
    smtp_port: o.SmtpPort = 25,
    smtp_from: o.SmtpFrom = None,
    smtp_starttls: o.SmtpStarttls = False,
    smtp_retries: o.SmtpRetries = 3,
    smtp_backoff: o.SmtpBackoff = 5.0,
    notify_email: o.NotifyEmail = None,
    public_url: o.PublicUrl = None,
    max_failed_logins: o.MaxFailedLogins = 100,
    max_uploads_per_minute: o.MaxUploadsPerMinute = 1200,
    access_log: o.AccessLog = True,
):
    """Serve the monitors of a folder: a JSON API (/api/v1, /docs), a dashboard (/) and a store of scores and alerts."""

    import uvicorn

    from humwatch.service.config import ServiceSettings
    from humwatch.service.notify import requeue_interrupted
    from humwatch.service.scoring import find_monitors

    settings = ServiceSettings(
        monitors=str(monitors),
        db=db,
        device=device,
        max_upload_mb=max_upload_mb,
        max_seconds=max_seconds,
        alert_rule=alert_rule,
        keep_audio=keep_audio,
        audio_dir=str(audio_dir) if audio_dir else None,
        audio_days=audio_days,
        audio_max_mb=audio_max_mb,
        webhook=webhook,
        webhook_secret=webhook_secret,
        webhook_retries=webhook_retries,
        webhook_backoff=webhook_backoff,
        max_failed_logins=max_failed_logins,
        max_uploads_per_minute=max_uploads_per_minute,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        threads=threads,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_from=smtp_from,
        smtp_starttls=smtp_starttls,
        smtp_retries=smtp_retries,
        smtp_backoff=smtp_backoff,
        notify_email=notify_email,
        public_url=public_url or (f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"),
    ).validate()
    found = find_monitors(monitors)
    store = _store(None, settings.db_url)
    try:
        requeue_interrupted(store)
        from humwatch.service.auth import list_tokens

        n_tokens = sum(not t["revoked"] for t in list_tokens(store))
    finally:
        store.close()
    con = o.console()
    con.print(f"humwatch serve: {len(found)} monitor(s) ({', '.join(found)}); database {store.display_url}")
    con.print(f"dashboard http://{host}:{port}/  API http://{host}:{port}/docs")
    if not n_tokens:
        con.print(f"[yellow]no tokens yet: make one with `humwatch token create NAME --scope ingest,read --monitors {monitors}`[/]")
    if not _is_loopback(host):
        con.print(f"[yellow]listening on {host}: other machines can reach this server; put TLS (a reverse proxy) in front[/]")
    if workers == 1:
        from humwatch.service.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, access_log=access_log, log_level="info")
    else:
        import shutil
        import tempfile

        from humwatch.service.metrics import MULTIPROC_ENV

        os.environ.update(settings.to_env())
        # /metrics: every worker's counters go to files in one fresh folder, summed at each scrape
        own = None if os.environ.get(MULTIPROC_ENV) else tempfile.mkdtemp(prefix="humwatch-metrics-")
        if own:
            os.environ[MULTIPROC_ENV] = own
        try:
            uvicorn.run(
                "humwatch.service.app:app_from_env",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                access_log=access_log,
                log_level="info",
            )
        finally:
            if own:
                shutil.rmtree(own, ignore_errors=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_cmd(
    server: o.Server = "http://127.0.0.1:8000",
    token: o.ApiToken = None,
    machine: o.MachineName = None,
    watch: o.Watch = None,
    existing: o.Existing = False,
    mic: o.Mic = False,
    mic_device: o.MicDevice = None,
    sample_rate: o.SampleRate = 16000,
    channels: o.MicChannels = 1,
    seconds: o.ClipSeconds = 10.0,
    spool: o.Spool = None,
    heartbeat: o.Heartbeat = 60.0,
):
    """Send clips to a service from a watched folder (--watch DIR) or a microphone (--mic); a local spool keeps them while it is down."""
    import logging
    import signal
    import threading

    from humwatch.service.listen import FolderSource, ListenSettings, MicSource, Sender, Spool, default_spool, listen

    if (watch is None) == (not mic):
        raise ConfigError("choose one source: --watch DIR or --mic")
    if not token:
        raise ConfigError("a token with the ingest scope is needed: --token or $HUMWATCH_TOKEN (`humwatch token create`)")
    s = ListenSettings(
        server=server,
        machine=machine,
        spool=str(spool or default_spool()),
        seconds=seconds,
        sample_rate=sample_rate,
        channels=channels,
        heartbeat=heartbeat,
    ).validate()
    q = Spool(s.spool, s.spool_max_mb * 1e6)
    device = int(mic_device) if mic_device and mic_device.isdigit() else mic_device
    source = FolderSource(watch, q, s, existing=existing) if watch is not None else MicSource(q, s, device)
    sender = Sender(s, token, q)
    logging.getLogger("humwatch.listen").setLevel(logging.INFO)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    con = o.console()
    what = f"watching {watch}" if watch is not None else f"recording {seconds:g} s clips from the microphone"
    con.print(f"humwatch listen: {what} -> {s.server} (spool {q.root}; Ctrl-C to stop)")
    try:
        listen(source, sender, stop)  # a sender that died: ListenError, one error line, exit status 2
    except KeyboardInterrupt:
        stop.set()
    finally:
        left = len(q.pending()) if q.pending_dir.is_dir() else 0
        con.print(
            f"sent {sender.sent} clip(s), {sender.rejected} refused; {left} left in the spool {q.root}"
            + (f" (refused ones in {q.rejected_dir}, each with its reason)" if sender.rejected else "")
        )


def token_create_cmd(
    name: o.TokenName, scope: o.Scopes = "read", monitors: o.MonitorsOption = None, db: o.Db = None, out: o.TokenOut = None
):
    """Make a token; it is printed once, or written to --out readable by you only (the service keeps only its hash)."""
    from humwatch.service.auth import create_token

    if out is not None and (out.exists() or out.is_symlink()):
        raise ConfigError(f"--out {out}: exists already (it may hold a token in use); remove it or choose another file")
    store = _store(monitors, db)
    try:
        if out is None:
            token = create_token(store, name, scope)
        else:
            _create_token_file(store, name, scope, out)
    finally:
        store.close()
    if out is None:
        typer.echo(token)
        typer.echo(f"token {name!r} ({scope}) made: keep it now, it is not shown again", err=True)
    else:
        typer.echo(f"token {name!r} ({scope}) made and written to {out} (readable by you only)", err=True)


def _create_token_file(store, name: str, scope: str, out: Path) -> None:
    """The file is opened (0600) before the token is made and takes its place after: a file that
    cannot be written leaves no token in the database that nobody has, and no half-written file."""
    from humwatch.io import atomic_path
    from humwatch.service.auth import create_token

    try:
        with atomic_path(out, mode=0o600) as tmp:
            token = create_token(store, name, scope)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(token + "\n")
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write it ({e.strerror or e})") from None


def token_list_cmd(monitors: o.MonitorsOption = None, db: o.Db = None):
    """List tokens: name, scopes, made when, revoked or not (never the tokens themselves)."""
    from humwatch.service.auth import list_tokens

    store = _store(monitors, db)
    try:
        for t in list_tokens(store):
            typer.echo(f"{t['name']}\t{','.join(t['scopes'])}\t{t['created_at']}\t{'revoked' if t['revoked'] else 'active'}")
    finally:
        store.close()


def token_revoke_cmd(name: o.TokenName, monitors: o.MonitorsOption = None, db: o.Db = None):
    """Revoke a token: it stops working at once."""
    from humwatch.service.auth import revoke_token

    store = _store(monitors, db)
    try:
        revoke_token(store, name)
    finally:
        store.close()
    typer.echo(f"token {name!r} revoked", err=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    app.command("listen")(listen_cmd)
    token_app.command("create")(token_create_cmd)
    token_app.command("list")(token_list_cmd)
    token_app.command("revoke")(token_revoke_cmd)
    app.add_typer(token_app, name="token")

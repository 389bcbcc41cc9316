"""The service's store: SQLAlchemy 2 models, the engine and its sessions, and Alembic migrations.

One schema for SQLite (the default: a file beside the monitors) and PostgreSQL (``--db
postgresql+psycopg://user@host/db``)::

    machines   one row per machine that has sent a clip (its name, and alert-rule overrides)
    clips      every scored clip: its content key (unique: same machine + recording time + audio
               bytes = one row), times, score, threshold, decision, and the stored audio if kept
    alerts     K of the last N clips anomalous opens one, M normal clips in a row close it; ack;
               of a kind: anomaly, sensor (a clip with a sensor fault) or stale (silence)
    tokens     API tokens: a name, the SHA-256 of the token (never the token), scopes
    store_info which humwatch last upgraded the schema (``written_by``)
    notifications  the outbox: one row per alert event and channel (webhook, email) to send
    silences   maintenance windows per machine: no alert opens, nothing is notified

SQLite runs in WAL mode with ``synchronous=FULL``: a clip is on disk when its transaction commits,
so a 200 answer survives the server being killed (or the machine losing power) right after.
Writing transactions start with ``BEGIN IMMEDIATE`` (SQLite's writer lock taken up front, waited
for up to ``busy_timeout``): a deferred transaction that later wants to write can fail with
"database is locked" however long it waits. Reads use plain deferred transactions, so the
dashboard never waits for an ingest.

The schema is created and upgraded by Alembic (``migrations/`` in this package, shipped with it);
:meth:`Store.migrate` runs ``upgrade head``, :meth:`Store.check_schema` refuses a database at
another revision with one line; a revision this humwatch does not know (a newer humwatch wrote the
database) is refused by both, naming the version that wrote it.
"""

from __future__ import annotations

import datetime as _dt
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text, TypeDecorator, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from humwatch.errors import HumwatchError, one_line

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_MS = 30_000
"""How long a writer waits for SQLite's write lock before giving up."""


class StoreError(HumwatchError):
    """A database that cannot be reached, opened or used (one line)."""


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """A point in time, stored as UTC and read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        value = value.astimezone(_dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=_dt.timezone.utc) if value.tzinfo is None else value.astimezone(_dt.timezone.utc)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names fixed by rule, so that migrations name them the same on every database."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Machine(Base):
    __tablename__ = "machines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    alert_k: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    alert_n: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    alert_m: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[Optional[_dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    """When its listener last said it is alive (``POST .../heartbeat``); None: never."""
    expected_interval_s: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    """How often it sends a clip, as an admin set it (``PUT .../expected-interval``); None: learned
    from its clips' arrivals (:mod:`.health`)."""
    created_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ClipRow(Base):
    __tablename__ = "clips"
    __table_args__ = (Index("ix_clips_machine_at", "machine_id", "at"), Index("ix_clips_machine_id_id", "machine_id", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machines.id"))
    key: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 of machine name, recording time and the audio's SHA-256: the idempotency key."""
    audio_sha256: Mapped[str] = mapped_column(String(64))
    at: Mapped[_dt.datetime] = mapped_column(UTCDateTime())
    """The clip's time on the timeline: its recording time, else when it was received."""
    recorded_at: Mapped[Optional[_dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    received_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    anomalous: Mapped[bool] = mapped_column(Boolean)
    filename: Mapped[str] = mapped_column(String(255), default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    audio_path: Mapped[Optional[str]] = mapped_column(String(1024), nullable=True)
    audio_bytes: Mapped[int] = mapped_column(Integer, default=0)
    sensor: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    """A sensor fault found before scoring (:mod:`humwatch.sensor`, one line); such a clip is not
    scored (``score`` 0, shown as none) and counts towards no anomaly alert."""
    warnings: Mapped[Optional[str]] = mapped_column(Text(), nullable=True)
    """What makes its score less trustworthy, one warning a line (another channel count or sample
    rate than the monitor's recordings); None: nothing."""

    @property
    def decision(self) -> str:
        """``sensor`` (a sensor fault: not scored), ``anomalous`` or ``normal``: the API's, the CSV's."""
        return "sensor" if self.sensor else "anomalous" if self.anomalous else "normal"


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_machine_state", "machine_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machines.id"))
    state: Mapped[str] = mapped_column(String(8), default="open")
    """``open`` or ``closed``; acknowledging does not close an alert, normal clips do."""
    kind: Mapped[str] = mapped_column(String(16), default="anomaly", server_default="anomaly")
    """``anomaly`` (the K/N/M rule), ``sensor`` (a clip with a sensor fault) or ``stale`` (no clip
    nor heartbeat for longer than the machine's expected interval): :mod:`.health`."""
    reason: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    """What a sensor or stale alert is about (the sensor finding, the silence's length)."""
    start_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime())
    """Timeline time of the first anomalous clip that counted towards opening it."""
    end_at: Mapped[Optional[_dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    """Timeline time of the clip that closed it."""
    opened_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[Optional[_dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    first_clip_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    """The first clip it is about; None for a stale alert of a machine that never sent a clip."""
    last_clip_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    n_anomalous: Mapped[int] = mapped_column(Integer, default=0)
    normal_streak: Mapped[int] = mapped_column(Integer, default=0)
    max_score: Mapped[float] = mapped_column(Float)
    rule: Mapped[str] = mapped_column(String(32), default="")
    acked_at: Mapped[Optional[_dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)
    acked_by: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    webhook_status: Mapped[Optional[str]] = mapped_column(String(16), nullable=True)
    """None (no webhook), ``pending``, ``sending``, ``sent`` or ``failed``."""
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_error: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)


class Notification(Base):
    """One alert event to tell one channel (``webhook`` or ``email``), written in the transaction
    that made the event, sent later by that channel's thread (:mod:`.notify`)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_channel_status", "channel", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    event: Mapped[str] = mapped_column(String(32))
    """``alert.opened``, ``alert.acknowledged`` or ``alert.closed``."""
    channel: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text())
    """The event document (JSON) as it was when the event happened."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """``pending``, ``sending``, ``sent`` or ``failed``."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    created_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Silence(Base):
    """A maintenance window of one machine: clips whose time falls in [start_at, end_at) are
    scored and stored, but open no alert, count towards none, and nothing is notified."""

    __tablename__ = "silences"
    __table_args__ = (Index("ix_silences_machine_end", "machine_id", "end_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machines.id"))
    start_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[_dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[Optional[_dt.datetime]] = mapped_column(UTCDateTime(), nullable=True)


class StoreInfo(Base):
    """Facts about the store itself: ``written_by``, the humwatch version that last upgraded it."""

    __tablename__ = "store_info"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


# ------------------------------------------------------------------------------------- engine


def default_db_url(monitors: str | Path) -> str:
    """The default store: ``humwatch-service.db`` (SQLite) in the monitors' folder."""
    return f"sqlite:///{(Path(monitors).resolve() / 'humwatch-service.db').as_posix()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # pysqlite: we send BEGIN ourselves (see _begin)
    cur = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", f"busy_timeout={SQLITE_BUSY_MS}"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def make_engine(url: str, *, writer: bool = False) -> Engine:
    """An engine for ``url``; for SQLite, WAL mode and (``writer``) BEGIN IMMEDIATE transactions."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise StoreError(f"--db {url!r}: not a database URL (sqlite:///PATH or postgresql+psycopg://USER@HOST/DB)") from None
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        begin = "BEGIN IMMEDIATE" if writer else "BEGIN"
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
        return engine
    try:
        return create_engine(u, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except (ImportError, ArgumentError) as e:
        raise StoreError(f"--db {u.render_as_string(hide_password=True)}: {one_line(e)}") from None


class Store:
    """The database behind the service: ``read()`` and ``write()`` give sessions in a transaction
    (committed on leaving the block, rolled back on an error)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url, writer=True)
        self.dialect = self.engine.dialect.name
        self.read_engine = make_engine(url) if self.dialect == "sqlite" else self.engine
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)

    @property
    def display_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._write.begin() as s:
            yield s

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read.begin() as s:
            yield s

    def close(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()

    # -- migrations -------------------------------------------------------------------------------
    def _alembic_config(self):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["engine"] = self.engine
        return cfg

    def migrate(self) -> str:
        """Create or upgrade the schema to the newest revision; returns it."""
        from alembic import command

        from humwatch._version import __version__

        self._refuse_newer(self.current_revision())
        try:
            command.upgrade(self._alembic_config(), "head")
            with self.write() as s:
                s.merge(StoreInfo(key="written_by", value=__version__))
        except (OperationalError, SQLAlchemyError) as e:
            raise StoreError(f"{self.display_url}: cannot migrate the database ({one_line(getattr(e, 'orig', None) or e)})") from None
        return self.head_revision()

    def _refuse_newer(self, current: str | None) -> None:
        """A schema revision this humwatch does not know comes from a newer one: say which, in one
        line (Alembic would say "Can't locate revision" with a traceback)."""
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        from humwatch._version import __version__

        if current is None:
            return
        script = ScriptDirectory.from_config(self._alembic_config())
        try:
            script.get_revision(current)
            return
        except CommandError:
            pass
        by = self._written_by()
        raise StoreError(
            f"{self.display_url}: written by {f'humwatch {by}' if by else 'a newer humwatch'} (schema "
            f"revision {current}); this humwatch {__version__} knows revisions up to "
            f"{script.get_current_head()}: upgrade humwatch, or use another --db"
        )

    def _written_by(self) -> str | None:
        from sqlalchemy import text

        try:
            with self.read() as s:
                value = s.execute(text("SELECT value FROM store_info WHERE key = 'written_by'")).scalar()
        except SQLAlchemyError:  # a schema from before store_info, or one that changed it
            return None
        return " ".join(str(value).split())[:40] or None if value is not None else None

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as e:
            raise StoreError(f"{self.display_url}: cannot open the database ({one_line(getattr(e, 'orig', None) or e)})") from None

    def check_schema(self) -> None:
        """Refuse a database whose schema is not this humwatch's (one line, says what to do)."""
        current, head = self.current_revision(), self.head_revision()
        self._refuse_newer(current)
        if current != head:
            raise StoreError(
                f"{self.display_url}: database schema is at {current or 'nothing'}, this humwatch needs {head} "
                "(`humwatch serve` upgrades it on start)"
            )

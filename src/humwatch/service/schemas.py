"""The API's documents as pydantic models: they check the answers and write the OpenAPI page."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field

from humwatch.settings import ALERT_COUNT


class Clip(BaseModel):
    clip_id: int
    machine: str
    at: str = Field(description="Timeline time: the recording time, else when the server received the clip (UTC, ISO 8601).")
    recorded_at: Optional[str]
    received_at: str
    score: Optional[float] = Field(description="None for a clip with a sensor fault (not scored).")
    threshold: float
    decision: Literal["normal", "anomalous", "sensor"]
    sensor: Optional[str] = Field(None, description="The sensor fault found before scoring (silence, clipping, ...), if any.")
    filename: str
    seconds: float = Field(description="Length of the uploaded audio.")
    audio_kept: bool = Field(description="The server kept this clip's audio (anomalous clips, within the retention limit).")
    warnings: list[str] = Field(
        default_factory=list,
        description="What makes this score less trustworthy: a channel count or sample rate other than the monitor's recordings'.",
    )


class OpenAlertRef(BaseModel):
    id: int
    acknowledged: bool


class Ingested(Clip):
    duplicate: bool = Field(description="This clip (same machine, recording time and audio) was stored before; nothing new was stored.")
    alert_opened: bool = Field(description="This clip opened an alert.")
    alert: Optional[OpenAlertRef] = Field(description="The machine's open alert, if any.")


class Alert(BaseModel):
    id: int
    machine: str
    state: Literal["open", "closed"]
    kind: Literal["anomaly", "sensor", "stale"] = Field(
        "anomaly", description="anomaly (K/N/M rule), sensor (a sensor fault), stale (silence)."
    )
    reason: Optional[str] = Field(None, description="What a sensor or stale alert is about.")
    acknowledged: bool
    acked_at: Optional[str]
    acked_by: Optional[str]
    start_at: str = Field(description="Timeline time of the first anomalous clip that opened it.")
    end_at: Optional[str] = Field(description="Timeline time of the clip that closed it.")
    opened_at: str
    closed_at: Optional[str]
    first_clip_id: Optional[int] = Field(description="The first clip it is about (null: a stale alert of a machine that never sent one).")
    last_clip_id: Optional[int]
    n_anomalous: int
    max_score: float
    rule: str = Field(description="K/N/M in force when it opened.")
    webhook_status: Optional[Literal["pending", "sending", "sent", "failed"]]


class MonitorInfo(BaseModel):
    method: str
    label: str
    threshold: float
    random_init: bool
    seconds: Optional[float]
    sample_rate: int


class Machine(BaseModel):
    machine: str
    state: Literal["alarm", "acknowledged", "stale", "sensor", "ok", "no data"]
    has_monitor: bool
    monitor: Optional[MonitorInfo]
    last_clip: Optional[Clip]
    n_clips: int
    clips_24h: int
    anomalous_24h: int
    open_alert: Optional[Alert]
    sensor_alert: Optional[Alert] = Field(None, description="The machine's open sensor alert, if any.")
    stale_alert: Optional[Alert] = Field(None, description="The machine's open stale alert, if any.")
    last_seen: Optional[str] = Field(None, description="Its last clip's arrival or heartbeat, whichever is later.")
    expected_interval_s: float = Field(description="How often it is expected to send a clip (s): set by an admin, or learned.")
    expected_interval_from: Literal["set", "learned", "default"] = Field(
        description="set (PUT .../expected-interval), learned (the median gap between its last clips' arrivals) or default."
    )
    stale_after_s: float = Field(description="Silent (no clip nor heartbeat) for longer than this, it is stale.")
    alert_rule: str


class ScoresPage(BaseModel):
    machine: str
    items: list[Clip]
    limit: int
    offset: int
    next_offset: Optional[int] = Field(description="Offset of the next page; null on the last page.")


class AlertsPage(BaseModel):
    items: list[Alert]
    limit: int
    offset: int
    next_offset: Optional[int]


class AlertRuleIn(BaseModel):
    # the bounds of humwatch.settings.ALERT_COUNT, which AlertRule checks too
    k: int = Field(ge=ALERT_COUNT.low, le=ALERT_COUNT.high, description="Anomalous clips among the last N that open an alert.")
    n: int = Field(ge=ALERT_COUNT.low, le=ALERT_COUNT.high)
    m: int = Field(ge=ALERT_COUNT.low, le=ALERT_COUNT.high, description="Normal clips in a row that close it.")


class ExpectedIntervalIn(BaseModel):
    seconds: Optional[float] = Field(
        ge=1, le=7 * 24 * 3600, description="How often the machine sends a clip (s); null: learn it from its clips again."
    )


class SilenceIn(BaseModel):
    start: str = Field(description="When the maintenance window starts (ISO 8601; no zone = UTC).")
    end: str = Field(description="When it ends (after start).")
    reason: str = Field("", max_length=200, description="Why (shown on the dashboard), at most 200 characters.")


class Silence(BaseModel):
    id: int
    machine: str
    start: str
    end: str
    reason: str
    created_by: str
    created_at: str
    active: bool = Field(description="The window is in force now.")


class TokenInfo(BaseModel):
    name: str
    scopes: list[str]
    created_at: str
    revoked: bool


class Health(BaseModel):
    status: Literal["ok"]


class Problem(BaseModel):
    detail: str = Field(description="One line saying what is wrong.")

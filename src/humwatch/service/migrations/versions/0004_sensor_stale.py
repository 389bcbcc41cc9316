"""sensor faults and stale machines: clips.sensor (the finding), alerts.kind and alerts.reason
(anomaly, sensor, stale), machines.heartbeat_at (the listener's last heartbeat):
humwatch.sensor, humwatch.service.health.

Revision ID: 0004
Revises: 0003
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema (added columns only: every existing alert is an anomaly alert)."""
    op.add_column("clips", sa.Column("sensor", sa.String(length=255), nullable=True))
    op.add_column("alerts", sa.Column("kind", sa.String(length=16), nullable=False, server_default="anomaly"))
    op.add_column("alerts", sa.Column("reason", sa.String(length=255), nullable=True))
    op.add_column("machines", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("machines") as b:
        b.drop_column("heartbeat_at")
    with op.batch_alter_table("alerts") as b:
        b.drop_column("reason")
        b.drop_column("kind")
    with op.batch_alter_table("clips") as b:
        b.drop_column("sensor")

"""a clip's warnings (a channel count or sample rate other than the monitor's recordings'),
a machine's expected interval set by an admin, and alerts without a clip (a stale alert of a
machine that only ever sent heartbeats): clips.warnings, machines.expected_interval_s,
alerts.first_clip_id / last_clip_id nullable.

Revision ID: 0005
Revises: 0004
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema (added columns; the clip ids of an alert may be null; the 0 that a stale
    alert without any clip got before becomes null)."""
    op.add_column("clips", sa.Column("warnings", sa.Text(), nullable=True))
    op.add_column("machines", sa.Column("expected_interval_s", sa.Float(), nullable=True))
    with op.batch_alter_table("alerts") as b:
        b.alter_column("first_clip_id", existing_type=sa.Integer(), nullable=True)
        b.alter_column("last_clip_id", existing_type=sa.Integer(), nullable=True)
    op.execute("UPDATE alerts SET first_clip_id = NULL, last_clip_id = NULL WHERE first_clip_id = 0 AND last_clip_id = 0")


def downgrade() -> None:
    """Downgrade schema (an alert without a clip gets 0 again)."""
    op.execute("UPDATE alerts SET first_clip_id = 0 WHERE first_clip_id IS NULL")
    op.execute("UPDATE alerts SET last_clip_id = 0 WHERE last_clip_id IS NULL")
    with op.batch_alter_table("alerts") as b:
        b.alter_column("first_clip_id", existing_type=sa.Integer(), nullable=False)
        b.alter_column("last_clip_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("machines") as b:
        b.drop_column("expected_interval_s")
    with op.batch_alter_table("clips") as b:
        b.drop_column("warnings")

"""store_info: which humwatch last upgraded the schema (so an older humwatch that finds a newer
schema can say which version wrote it; humwatch.service.store.Store.migrate).

Revision ID: 0002
Revises: 0001
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "store_info",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_store_info")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("store_info")

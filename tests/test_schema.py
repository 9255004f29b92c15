"""The migrations and the models describe the same schema, on both dialects."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from careflow.db.models import Base


def test_migrations_match_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []

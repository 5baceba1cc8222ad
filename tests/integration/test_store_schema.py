"""The store's tables are created safely by runs that start at the same moment."""

from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from migration_soak.store import Store
from tests.conftest import recreate_database


def test_concurrent_first_runs_create_the_schema_once(pg_server, fresh_db):
    name = f"{fresh_db[:50]}_store"
    recreate_database(pg_server, name)
    url = sa.URL.create("postgresql+psycopg2", username="postgres", password=pg_server.password,
                        host=pg_server.host, port=pg_server.port, database=name)
    stores = [Store(sa.create_engine(url)) for _ in range(10)]
    try:
        with ThreadPoolExecutor(len(stores)) as pool:  # without the lock: UniqueViolation on pg_type
            list(pool.map(lambda s: s.create_schema(), stores))
        with stores[0].engine.connect() as conn:
            tables = conn.execute(sa.text(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar()
        assert tables >= 3
    finally:
        for s in stores:
            s.engine.dispose()

"""Sessions: several queries on one live kernel (the kernel lives on the replica in
``holder``; the turns, as JSON, are readable from any replica). SQLite files made while the
store created its schema in code may have the table already."""

from yoyo import step

from engine.service.migrate import sql

__depends__ = {"0002_storage"}

steps = [
    step(
        sql(
            postgresql="""
            CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                status TEXT NOT NULL,
                request TEXT NOT NULL,
                turns TEXT NOT NULL,
                holder TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                last_active DOUBLE PRECISION NOT NULL,
                closed_at DOUBLE PRECISION,
                closed_reason TEXT
            );
            CREATE INDEX sessions_owner ON sessions (owner, status);
            """,
            sqlite="""
            CREATE TABLE IF NOT EXISTS sessions (
                id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                status TEXT NOT NULL,
                request TEXT NOT NULL,
                turns TEXT NOT NULL,
                holder TEXT NOT NULL,
                created_at REAL NOT NULL,
                last_active REAL NOT NULL,
                closed_at REAL,
                closed_reason TEXT
            );
            CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, status);
            """,
        ),
        "DROP TABLE sessions",
    ),
]

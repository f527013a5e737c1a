"""Sessions: several queries on one live kernel (the kernel lives on the replica in
``holder``; the turns, as JSON, are readable from any replica)."""

from yoyo import step

__depends__ = {"0002_storage"}

steps = [
    step(
        """
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
        "DROP TABLE sessions",
    ),
]

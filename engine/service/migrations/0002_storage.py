"""Bytes each job (inline context, trajectory) and upload (unpacked) keeps on disk, for the
per-key storage quota. SQLite databases made by older versions may have the columns already."""

from yoyo import step

from engine.service.migrate import add_column, drop_column

__depends__ = {"0001_initial"}

steps = [
    step(
        add_column("jobs", "stored_bytes", "BIGINT NOT NULL DEFAULT 0"),
        drop_column("jobs", "stored_bytes"),
    ),
    step(
        add_column("files", "stored_bytes", "BIGINT NOT NULL DEFAULT 0"),
        drop_column("files", "stored_bytes"),
    ),
]

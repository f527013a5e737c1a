"""Bytes each job (inline context, trajectory) and upload (unpacked) keeps on disk, for the
per-key storage quota."""

from yoyo import step

__depends__ = {"0001_initial"}

steps = [
    step(
        "ALTER TABLE jobs ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE jobs DROP COLUMN stored_bytes",
    ),
    step(
        "ALTER TABLE files ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE files DROP COLUMN stored_bytes",
    ),
]

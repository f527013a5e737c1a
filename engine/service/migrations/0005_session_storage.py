"""Every byte kept for a key counts for its storage quota: a session's inline context
(``context_bytes``, kept while it is open) and its row (request and turns, ``stored_bytes``),
and a job's request and result besides its inline context and trajectory. Rows made before
this version get their JSON counted now (in characters: the same as bytes for ASCII), and
open sessions their inline context (PostgreSQL keeps it as a blob; SQLite's service process
wrote it to the path in the request)."""

import json
import os
from typing import Any

from yoyo import step

from engine.service.migrate import add_column, drop_column, is_sqlite


def count_open_contexts(conn: Any) -> None:
    cursor = conn.cursor()
    try:
        if not is_sqlite(conn):
            cursor.execute(
                "UPDATE sessions SET context_bytes = (SELECT COALESCE(SUM(octet_length(data)), "
                "0) FROM blobs WHERE key = 'context/' || sessions.id) WHERE status = 'open'"
            )
            return
        cursor.execute("SELECT id, request FROM sessions WHERE status = 'open'")
        for session_id, request in cursor.fetchall():
            path = json.loads(request).get("context_path")
            if path and os.path.isfile(path):
                cursor.execute(
                    "UPDATE sessions SET context_bytes = ? WHERE id = ?",
                    (os.path.getsize(path), session_id),
                )
    finally:
        cursor.close()


__depends__ = {"0004_claim_token"}

steps = [
    step(
        add_column("sessions", "context_bytes", "BIGINT NOT NULL DEFAULT 0"),
        drop_column("sessions", "context_bytes"),
    ),
    step(
        add_column("sessions", "stored_bytes", "BIGINT NOT NULL DEFAULT 0"),
        drop_column("sessions", "stored_bytes"),
    ),
    step("UPDATE sessions SET stored_bytes = LENGTH(request) + LENGTH(turns)"),
    step(count_open_contexts),
    step(
        "UPDATE jobs SET stored_bytes = stored_bytes + LENGTH(request) "
        "+ COALESCE(LENGTH(result), 0) + COALESCE(LENGTH(error), 0)",
        "UPDATE jobs SET stored_bytes = stored_bytes - LENGTH(request) "
        "- COALESCE(LENGTH(result), 0) - COALESCE(LENGTH(error), 0)",
    ),
]

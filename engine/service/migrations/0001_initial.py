"""Jobs, events, files and blobs; in PostgreSQL also leases for replicas and notifications on
every change. SQLite creates only what a database made before migrations lacks."""

from yoyo import step

from engine.service.migrate import sql

__depends__: set[str] = set()

steps = [
    step(
        sql(
            postgresql="""
            CREATE TABLE jobs (
                id TEXT PRIMARY KEY,
                -- insertion order (named like SQLite's implicit column so the shared SQL
                -- sorts by it)
                rowid BIGSERIAL NOT NULL,
                owner TEXT NOT NULL,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                request TEXT NOT NULL,
                result TEXT,
                error TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                max_retries INTEGER NOT NULL DEFAULT 0,
                created_at DOUBLE PRECISION NOT NULL,
                started_at DOUBLE PRECISION,
                finished_at DOUBLE PRECISION,
                lease_owner TEXT,
                lease_until DOUBLE PRECISION,
                cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
            );
            CREATE INDEX jobs_status ON jobs (status, created_at, rowid);
            CREATE INDEX jobs_owner ON jobs (owner, status);
            CREATE INDEX jobs_lease ON jobs (lease_owner) WHERE status = 'running';
            CREATE TABLE events (
                job_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                event TEXT NOT NULL,
                PRIMARY KEY (job_id, seq)
            );
            CREATE TABLE files (
                id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                filename TEXT NOT NULL,
                bytes BIGINT NOT NULL,
                path TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            );
            CREATE TABLE blobs (
                key TEXT NOT NULL,
                part INTEGER NOT NULL,
                data BYTEA NOT NULL,
                PRIMARY KEY (key, part)
            );
            """,
            sqlite="""
            CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                request TEXT NOT NULL,
                result TEXT,
                error TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                max_retries INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                started_at REAL,
                finished_at REAL
            );
            CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
            CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, status);
            CREATE TABLE IF NOT EXISTS events (
                job_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                event TEXT NOT NULL,
                PRIMARY KEY (job_id, seq)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS files (
                id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                filename TEXT NOT NULL,
                bytes INTEGER NOT NULL,
                path TEXT NOT NULL,
                created_at REAL NOT NULL
            );
            CREATE TABLE IF NOT EXISTS blobs (
                key TEXT NOT NULL,
                part INTEGER NOT NULL,
                data BLOB NOT NULL,
                PRIMARY KEY (key, part)
            ) WITHOUT ROWID;
            """,
        ),
        sql(
            postgresql="DROP TABLE blobs; DROP TABLE files; DROP TABLE events; DROP TABLE jobs;",
            sqlite="DROP TABLE blobs; DROP TABLE files; DROP TABLE events; DROP TABLE jobs;",
        ),
    ),
    step(
        # Every replica LISTENs: rlm_job wakes the event streams and waiters of a job,
        # rlm_queue the workers (a job became claimable), rlm_cancel the replica running it.
        # One SQLite file has one service process: nothing to notify.
        sql(
            postgresql="""
            CREATE FUNCTION rlm_job_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('rlm_job', NEW.id);
                IF NEW.status = 'queued' THEN
                    PERFORM pg_notify('rlm_queue', NEW.id);
                ELSIF NEW.status = 'running' AND NEW.cancel_requested THEN
                    PERFORM pg_notify('rlm_cancel', NEW.id);
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER jobs_changed AFTER INSERT OR UPDATE OF status, cancel_requested
                ON jobs FOR EACH ROW EXECUTE FUNCTION rlm_job_changed();
            CREATE FUNCTION rlm_event_added() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('rlm_job', NEW.job_id);
                RETURN NULL;
            END $$;
            CREATE TRIGGER events_added AFTER INSERT ON events
                FOR EACH ROW EXECUTE FUNCTION rlm_event_added();
            """,
            sqlite="",
        ),
        sql(
            postgresql="""
            DROP TRIGGER events_added ON events; DROP FUNCTION rlm_event_added();
            DROP TRIGGER jobs_changed ON jobs; DROP FUNCTION rlm_job_changed();
            """,
            sqlite="",
        ),
    ),
]

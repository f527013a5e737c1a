"""Every replica hears of a deleted job, session or upload (``rlm_deleted``, with the id and,
for a session's message, the session's id) and removes its own copies of it: the replica
that deletes a record removes only what it keeps itself. One SQLite file has one service
process: nothing to notify."""

from yoyo import step

from engine.service.migrate import sql

__depends__ = {"0005_session_storage"}

steps = [
    step(
        sql(
            postgresql="""
            CREATE FUNCTION rlm_job_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify(
                    'rlm_deleted',
                    OLD.id || ' ' || COALESCE(OLD.request::json ->> 'session_id', '')
                );
                RETURN NULL;
            END $$;
            CREATE TRIGGER jobs_deleted AFTER DELETE ON jobs
                FOR EACH ROW EXECUTE FUNCTION rlm_job_deleted();
            CREATE FUNCTION rlm_record_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('rlm_deleted', OLD.id);
                RETURN NULL;
            END $$;
            CREATE TRIGGER sessions_deleted AFTER DELETE ON sessions
                FOR EACH ROW EXECUTE FUNCTION rlm_record_deleted();
            CREATE TRIGGER files_deleted AFTER DELETE ON files
                FOR EACH ROW EXECUTE FUNCTION rlm_record_deleted();
            """,
            sqlite="",
        ),
        sql(
            postgresql="""
            DROP TRIGGER files_deleted ON files; DROP TRIGGER sessions_deleted ON sessions;
            DROP FUNCTION rlm_record_deleted();
            DROP TRIGGER jobs_deleted ON jobs; DROP FUNCTION rlm_job_deleted();
            """,
            sqlite="",
        ),
    ),
]

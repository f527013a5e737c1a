"""A fencing token per attempt: whoever moves a job to "running" gets a new ``claim_token``,
and the outcome and trajectory events of that attempt are written only while the job still
carries it (a replica that lost its lease cannot overwrite the attempt that replaced it)."""

from yoyo import step

from engine.service.migrate import add_column, drop_column

__depends__ = {"0003_sessions"}

steps = [
    step(add_column("jobs", "claim_token", "TEXT"), drop_column("jobs", "claim_token")),
]

"""Where trajectories to export come from: files, an eval's results, or a service's jobs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engine.errors import ConfigError
from engine.eval.results import latest, read_results
from engine.export.runs import ExportError
from engine.rlm.trajectory import read_trajectory
from engine.user_files import parse_jsonl


@dataclass(frozen=True)
class Source:
    """One trajectory to export and the score its task got, if any is known."""

    name: str
    events: list[dict[str, Any]]
    score: float | None = None


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        return read_trajectory(path)
    except ConfigError as exc:
        raise ExportError(f"{exc}; is it a trajectory?") from exc


def trajectory_sources(paths: list[Path]) -> Iterator[Source]:
    """Trajectory files; a directory means every ``*.jsonl`` below it."""
    for path in paths:
        if path.is_dir():
            files = sorted(path.rglob("*.jsonl"))
            if not files:
                raise ExportError(f"no *.jsonl trajectory files under {path}")
            for file in files:
                yield Source(str(file), _read(file))
        elif path.exists():  # a device or FIFO too: the reader refuses it by name
            yield Source(str(path), _read(path))
        else:
            raise ExportError(f"{path} does not exist; give trajectory files or directories")


def eval_sources(results: Path) -> Iterator[Source]:
    """The RLM items of an eval (``results.jsonl`` or its output directory), with scores.

    Each item's trajectory path is taken from its results line; the latest line of a retried
    item wins. Items whose trajectory file is gone are an error naming the file.
    """
    path = results / "results.jsonl" if results.is_dir() else results
    if not path.exists():
        raise ExportError(f"no eval results at {path}; give an `rlm eval --out` directory")
    for record in latest(read_results(path)).values():
        trajectory = record.get("trajectory_path")
        if record.get("method") != "rlm" or not trajectory:
            continue
        score = record.get("score")
        yield Source(
            f"{path}:{record['key']}",
            _read(Path(trajectory)),
            float(score) if isinstance(score, int | float) else None,
        )


def service_sources(
    url: str,
    api_key: str,
    *,
    status: str | None = "succeeded",
    timeout_s: float = 60.0,
    page_size: int | None = None,
) -> Iterator[Source]:
    """The jobs of one API key on a running ``rlm serve`` (by default the succeeded ones),
    read ``page_size`` jobs a page (None: the service's largest page)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s) as client:
        for job in _all_jobs(client, status, page_size):
            where = f"{url}/v1/jobs/{job['id']}"
            body = _get(client, f"/v1/jobs/{job['id']}/trajectory").content
            try:
                events = [event for _, event in parse_jsonl(body, where)]
            except ConfigError as exc:
                raise ExportError(f"{exc}; is {url} an rlm service?") from exc
            yield Source(where, events)


def _all_jobs(
    client: httpx.Client, status: str | None, page_size: int | None
) -> Iterator[dict[str, Any]]:
    """Every job of the listing, page by page (a page holds at most 100: reading only the
    first one left the rest out without a word)."""
    params = {"status": status} if status else {}
    if page_size is not None:
        params["limit"] = str(page_size)
    seen: set[str] = set()
    while True:
        page = _get(client, "/v1/jobs", params=params).json()
        jobs = page.get("data") if isinstance(page, dict) else None
        if not isinstance(jobs, list):
            raise ExportError(f"GET /v1/jobs on {client.base_url} is not a job listing")
        for job in jobs:
            if not isinstance(job, dict) or not isinstance(job.get("id"), str):
                raise ExportError(f"GET /v1/jobs on {client.base_url} listed a job without an id")
            if job["id"] not in seen:  # a cursor that repeats must not loop forever
                seen.add(job["id"])
                yield job
        last = page.get("last_id")
        if not page.get("has_more") or not isinstance(last, str) or last == params.get("after"):
            return
        params = {**params, "after": last}


def _get(client: httpx.Client, path: str, params: dict[str, str] | None = None) -> httpx.Response:
    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise ExportError(f"cannot reach the service at {client.base_url}: {exc}") from exc
    if response.status_code == 401:
        raise ExportError(f"the service at {client.base_url} refused the API key (401)")
    if response.status_code >= 400:
        raise ExportError(
            f"GET {path} on {client.base_url} failed with {response.status_code}: "
            f"{response.text[:200]}"
        )
    return response

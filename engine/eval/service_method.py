"""The ``rlm`` method run by a service: each item a job on ``rlm serve`` (one replica or many).

``rlm eval --service URL --api-key KEY`` answers items with this instead of a local
:class:`~engine.eval.methods.RLMMethod`: the item's query and context are submitted as a job
(inline context), the job is followed until it ends, and its result becomes the same
:class:`~engine.eval.methods.Outcome`; its trajectory is downloaded next to the results so
reports and ``rlm export`` work as for local runs. Models, sandboxes and budgets are the
service's (a job may lower budgets: ``limits``). A full queue (HTTP 429) is waited out.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx

from engine.errors import EvalError
from engine.eval.base import EvalItem
from engine.eval.methods import Outcome
from engine.lifecycle import AsyncResource
from engine.log import get_logger

log = get_logger(__name__)

POLL_S = 1.0
BUSY_WAIT_S = 2.0
TRANSPORT_TRIES = 3
FINAL = frozenset({"succeeded", "failed", "cancelled"})


class ServiceMethod(AsyncResource):
    """Answers items as jobs of the service at ``url``; use as an async context manager."""

    name = "rlm"

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        limits: dict[str, Any] | None = None,
        trajectory_dir: Path | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.limits = limits or {}
        self.trajectory_dir = trajectory_dir
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout_s)

    async def _open(self, stack: AsyncExitStack) -> None:
        stack.push_async_callback(self._client.aclose)

    async def model_name(self) -> str:
        """The service's root model (``GET /v1/models``); also checks URL and key."""
        response = await self._request("GET", "/v1/models")
        ids = [str(model.get("id", "")) for model in response.json().get("data") or []]
        # The explicit form "rlm/<root model>" names the model that answers.
        explicit = [i.split("/", 1)[1] for i in ids if i.startswith("rlm/")]
        return explicit[0] if explicit else "service"

    async def answer(self, item: EvalItem) -> Outcome:
        started = time.monotonic()
        body: dict[str, Any] = {"query": item.query, "context": item.context}
        if self.limits:
            body["limits"] = self.limits
        while True:
            response = await self._request("POST", "/v1/jobs", json=body, ok=(201, 429))
            if response.status_code == 201:
                break
            await anyio.sleep(BUSY_WAIT_S)  # this key's queue is full: wait for a slot
        job = response.json()
        while job["status"] not in FINAL:
            await anyio.sleep(POLL_S)
            job = (await self._request("GET", f"/v1/jobs/{job['id']}")).json()
        return await self._outcome(job, time.monotonic() - started)

    async def _outcome(self, job: dict[str, Any], wall_s: float) -> Outcome:
        result = job.get("result") or {}
        usage = result.get("usage_total") or {}
        return Outcome(
            prediction=job.get("answer") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            cost_usd=float(usage.get("cost_usd", 0.0)),
            wall_s=float(result.get("wall_s", wall_s)),
            iterations=int(result.get("iterations", 0)),
            sub_calls=int(result.get("sub_calls", 0)),
            trajectory_path=await self._save_trajectory(job["id"]),
            stop_reason=result.get("stop_reason") or job["status"],
            error=job.get("error") if job["status"] != "succeeded" else None,
        )

    async def _save_trajectory(self, job_id: str) -> str | None:
        if self.trajectory_dir is None:
            return None
        response = await self._request("GET", f"/v1/jobs/{job_id}/trajectory")
        self.trajectory_dir.mkdir(parents=True, exist_ok=True)
        path = self.trajectory_dir / f"{job_id}.jsonl"
        await anyio.Path(path).write_bytes(response.content)
        return str(path)

    async def _request(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> httpx.Response:
        for attempt in range(TRANSPORT_TRIES):
            try:
                response = await self._client.request(method, path, **kwargs)
                break
            except httpx.TransportError as exc:
                # A replica behind a load balancer may restart: try a few times first.
                if attempt + 1 == TRANSPORT_TRIES:
                    raise EvalError(
                        f"cannot reach the service at {self.url}: {exc}; check --service and "
                        "that rlm serve runs there"
                    ) from exc
                await anyio.sleep(BUSY_WAIT_S)
        if response.status_code in ok:
            return response
        if response.status_code == 401:
            raise EvalError(
                f"the service at {self.url} refused the API key; pass one of its RLM_API_KEYS "
                "with --api-key"
            )
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise EvalError(
            f"the service answered {method} {path} with {response.status_code}: {message}"
        )

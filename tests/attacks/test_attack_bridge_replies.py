"""Attack: sandbox code asks the bridge for large replies and never reads them.

The reply fills the Unix socket's buffer, and the bridge waited to write the rest with no
deadline: each such connection (and the request memory it reserved) was held for as long as
the sandbox lived, and 16 of them (the limit per sandbox) left the sandbox's bridge answering
nothing but 503. Replies now have the same deadline as requests.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import anyio
import httpx
import pytest

from engine.bridge import BridgeServer
from engine.bridge.server import BridgeLimits
from tests.attacks.conftest import AttackReport, RssMeter

pytestmark = pytest.mark.anyio

REPLY_BYTES = 1 << 20


class LargeReplies:
    """A real bridge handler whose replies are 1 MiB (a long model answer)."""

    async def llm_query(self, prompt: str, model: str | None) -> str:
        return "r" * REPLY_BYTES if prompt == "large" else f"echo {prompt}"

    async def rlm_query(self, prompt: str, context_path: Path | None) -> str:
        return "unused"


async def test_connections_that_never_read_their_replies(
    tmp_path: Path, rss_meter: RssMeter, attack_report: AttackReport
) -> None:
    token = secrets.token_urlsafe(16)
    # Default limits but a short body time (30 s by default), to keep the test quick.
    limits = BridgeLimits(body_timeout_s=1.0)
    body = b'{"prompt": "large"}'
    request = (
        b"POST /v1/llm_query HTTP/1.1\r\nHost: bridge\r\nAuthorization: Bearer "
        + token.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    async with BridgeServer(tmp_path / "b.sock", token, LargeReplies(), limits=limits) as server:
        hogs = [await anyio.connect_unix(server.socket_path) for _ in range(limits.max_connections)]
        for hog in hogs:
            await hog.send(request)
        transport = httpx.AsyncHTTPTransport(uds=str(server.socket_path))
        refused = 0
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            with anyio.fail_after(60):
                while True:
                    response = await client.post(
                        "/v1/llm_query",
                        json={"prompt": "after"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    if response.status_code == 200:
                        break
                    assert response.status_code == 503
                    refused += 1
                    await anyio.sleep(0.2)
        for hog in hogs:
            await hog.aclose()
    assert response.json()["response"] == "echo after"
    attack_report(
        f"{limits.max_connections} bridge connections ask for 1 MiB replies and never read them",
        "a reply must be read within the body time (30 s; here 1 s) plus 1 s per MiB, then "
        "the connection is closed",
        f"all {len(hogs)} closed; the next call answered after {refused} refusals (before: "
        "the connections were held for the sandbox's life and every other call got 503)",
        rss_growth=rss_meter.growth(),
    )

"""What the warm pool's liveness check adds to a task's warm start.

Run with ``python -m benchmarks.bench_pool_probe [--n 200]``. Prints numbers, asserts nothing.
Measured on one idle warm sandbox: :meth:`Sandbox.probe` (one ``kernel_info_request`` on the
kernel's shell channel, answered by its main thread, with the request's idle status read off
iopub: what every hand-out now pays), beside the Docker call it avoids while the
kernel is alive (``container.reload()``, an inspect through the daemon), and the warm start it
is added to (``benchmarks/warm.py``: claim, context, first cell; the probe included).
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio

from benchmarks.warm import warm_start_times
from engine.sandbox import SandboxConfig, docker_api
from engine.sandbox.pool import WarmPool


def _summary(name: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(f"{name:<40} n={len(ms):<4} p50 {statistics.median(ms):8.2f} ms   p95 {p95:8.2f} ms")


async def main(n: int) -> None:
    config = SandboxConfig.from_env()  # RLM_SANDBOX_RUNTIME=runc measures under runc
    async with WarmPool(config, 1) as pool:
        with anyio.fail_after(config.start_timeout_s + 30):
            while pool.ready < 1:
                await anyio.sleep(0.02)
        sandbox = pool._ready[0][0]  # measured in place: never handed to a task
        container = sandbox._container
        assert container is not None
        probes, inspects = [], []
        for _ in range(n):
            started = time.perf_counter()
            dead = await sandbox.probe(pool.probe_timeout_s)
            probes.append(time.perf_counter() - started)
            if dead is not None:
                raise RuntimeError(f"the idle sandbox counts as dead: {dead}")
            started = time.perf_counter()
            await docker_api.call(container.reload)
            inspects.append(time.perf_counter() - started)
    _summary("probe (kernel_info, the added cost)", probes)
    _summary("Docker inspect (not paid while alive)", inspects)
    _summary("warm start (probe, claim, first cell)", await warm_start_times(config, 10))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="probes and inspects to time")
    anyio.run(main, parser.parse_args().n)

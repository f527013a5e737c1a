"""Build the infrastructure image of the `scale` compose profile (PostgreSQL and nginx).

    python deploy/infra.py [--tag rlm-infra:latest] [--force]

Same base as the engine and sandbox images (the Debian base bootstrapped from the host's apt
sources; no registry image is pulled). The two Debian packages are installed from the base
image's apt source during the build. Tagged with a hash of the base image and the files in
``deploy/infra/``, so a rebuild with nothing changed takes about a second.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "deploy" / "infra"
DEFAULT_TAG = "rlm-infra:latest"

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "deploy"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from build import reuse, say  # noqa: E402  (deploy/build.py: the engine image, built the same way)


def build(tag: str = DEFAULT_TAG, *, force: bool = False) -> str:
    """Build (or reuse) the infrastructure image; returns the fingerprint-pinned tag."""
    from engine.sandbox import docker_api
    from engine.sandbox.image import docker_build, ensure_base_image

    started = time.perf_counter()
    client = docker_api.client()
    base = ensure_base_image(progress=say)
    digest = hashlib.sha256(str(client.images.get(base).id).encode())
    for path in sorted(INFRA.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    repository = tag.rsplit(":", 1)[0]
    pinned = f"{repository}:{digest.hexdigest()[:12]}"
    if not force and reuse(client, pinned, tag, started):
        return pinned
    say(f"building {pinned} from {base}")
    docker_build(
        INFRA, pinned, base, {"rlm-engine.image": "infra"}, what="infrastructure", progress=say
    )
    client.images.get(pinned).tag(tag)
    say(f"built {tag} ({pinned}) in {time.perf_counter() - started:.0f} s")
    return pinned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default=DEFAULT_TAG)
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args()
    from engine.errors import RLMError

    try:
        print(build(args.tag, force=args.force))
    except RLMError as exc:
        print(f"deploy/infra.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

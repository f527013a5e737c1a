#!/usr/bin/env bash
# Install what sandboxes need on a Debian or Ubuntu host: the Docker engine, docker-compose
# debootstrap (to bootstrap the base image without a registry) and PostgreSQL; then make sure
# dockerd runs.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v runsc >/dev/null 2>&1 || need+=(runsc)  # gVisor: the stronger, optional runtime
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the trajectory viewer's browser test
# PostgreSQL: the shared job store of service replicas; the tests start private clusters.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Register gVisor with Docker (network off, Unix sockets to the host allowed: the kernel's
# ipc sockets and the bridge live in the bind-mounted run dir). Merged into daemon.json.
gvisor_changed=$($SUDO python3 - <<'PY'
import json, os
path = "/etc/docker/daemon.json"
config = {}
if os.path.exists(path):
    with open(path) as handle:
        text = handle.read()
    config = json.loads(text) if text.strip() else {}
wanted = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--host-uds=all"]}
if config.get("runtimes", {}).get("runsc") == wanted:
    print("no")
else:
    config.setdefault("runtimes", {})["runsc"] = wanted
    os.makedirs("/etc/docker", exist_ok=True)
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2)
    print("yes")
PY
)
if [ "$gvisor_changed" = yes ] && docker info >/dev/null 2>&1; then
  echo "registering gVisor (runsc) with the running dockerd"
  $SUDO kill -HUP "$(pidof dockerd)"
  sleep 2
fi

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl start docker
  else
    $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi
echo "docker: $(docker version --format '{{.Server.Version}}')"

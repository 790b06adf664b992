#!/usr/bin/env bash
# Docker for the container lab (issue 4): install docker.io from Debian when missing, and start a
# dockerd when none answers — in the background, logging to a file — then wait (bounded) until
# `docker info` works. CI machines have no init system running dockerd, hence the manual start.
# Then build the lab's images (registry-free base, node image): setup is the step with network
# access, and the tests only rebuild the node image when the sources changed (seconds).
# DP2PT_NO_DOCKER=1 skips all of it (the Docker tests then skip, saying why).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -n "${DP2PT_NO_DOCKER:-}" ]; then
  echo "setup.d/docker: skipped (DP2PT_NO_DOCKER set)"
  exit 0
fi

LOG=${DP2PT_DOCKERD_LOG:-/var/log/dp2pt-dockerd.log}
WAIT_S=${DP2PT_DOCKERD_WAIT:-60}

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.d/docker: run as root" >&2
  exit 1
fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # docker.io's postinst must not try to start a service through an init system that is not there.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need[@]}"
  rm -f /usr/sbin/policy-rc.d
fi

start_engine() {
  if docker info >/dev/null 2>&1; then
    echo "setup.d/docker: docker engine already running"
    return 0
  fi
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "setup.d/docker: starting dockerd (log: $LOG)"
    # setsid: its own session, so the end of `make setup` (or a Ctrl-C) does not take it down.
    setsid nohup dockerd >"$LOG" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 "$WAIT_S"); do
    if docker info >/dev/null 2>&1; then
      echo "setup.d/docker: docker engine ready"
      return 0
    fi
    sleep 1
  done
  echo "setup.d/docker: dockerd did not answer within ${WAIT_S}s; last lines of $LOG:" >&2
  tail -n 20 "$LOG" >&2 || true
  return 1
}

start_engine
bash images/build-base.sh
bash images/build-node.sh

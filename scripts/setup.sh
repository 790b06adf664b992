#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for dp2pt: Debian packages, then the Python package with its extras.
# Idempotent; run as root. Extra steps of feature areas live in scripts/setup.d/*.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (it installs Debian packages)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
mapfile -t pkgs < <(grep -hv '^\s*#' scripts/apt-packages.txt | grep -v '^\s*$')
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Debian's own python3 comes without pip (python3-pip); a pyenv or other python3 brings its own.
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  # coturn's and redis-server's postinst must not start system-wide daemons; the lab and the tests start their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
fi

# Debian's python3 is "externally managed" (PEP 668): pip refuses to install next to apt's packages
# unless told to. This machine is a lab run as root, and the lab starts `dp2pt` by name in every
# node, so the package goes where that name is found, not into a virtual environment.
pip_flags=()
if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
  pip_flags+=(--break-system-packages)
fi
python3 -m pip install -q "${pip_flags[@]}" -e '.[lab,dev,directory]'

for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] && bash "$step"
done
echo "setup: done"

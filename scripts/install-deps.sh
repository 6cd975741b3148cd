#!/bin/sh
# Installs every Debian package lmforge needs to build, run and test. Idempotent and
# non-interactive: apt-get runs (with one update) only when something is missing.
set -eu

PKGS="build-essential cmake pkg-config
libopenblas-openmp-dev libdnnl-dev
libopenmpi-dev openmpi-bin
libyaml-dev libcjson-dev libmicrohttpd-dev libcairo2-dev
python3 python3-venv python3-pip python3-torch python3-numpy python3-yaml python3-requests python3-psutil"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all packages present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing

#!/usr/bin/env bash
# The README's demo command: install what the demo needs (only what is missing), then run it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "tools/demo.sh: run as root (the demo creates network namespaces)" >&2
    exit 1
fi
need=()
for cmd in ip iptables tcpdump ping nsenter wg; do command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd"); done
if [ "${#need[@]}" -gt 0 ] || ! python3 -m pip --version >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends iproute2 iptables tcpdump iputils-ping util-linux \
        wireguard-tools python3-pip
fi
if ! python3 -c "import ravenvpn, pyroute2, nacl, yaml" 2>/dev/null || ! command -v ravenvpn >/dev/null; then
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q -e .
fi
exec python3 -m tools.demo "$@"

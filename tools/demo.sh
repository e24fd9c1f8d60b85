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
/usr/bin/python3.11 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3.11-venv)
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends iproute2 iptables tcpdump iputils-ping util-linux \
        wireguard-tools python3.11 python3.11-venv
fi
# The same venv as the tests (.ci/run): Debian's python3.11, see tools/python-env.sh.
# shellcheck source=python-env.sh
. tools/python-env.sh
ravenvpn_python_env ''
exec python3 -m tools.demo "$@"

# Sourced by .ci/run and tools/demo.sh: the Python environment ravenvpn is tested, demonstrated and
# benchmarked in.
#
# ravenvpn's data path is pure Python, so its speed is the interpreter's. Debian's python3.11 is built
# with profile-guided optimisation and libpython linked into the executable; a CPython built the default
# way (./configure --enable-shared, no --enable-optimizations: pyenv's default, and this machine's first
# python3 on PATH) ran the same code 20-25 % slower, and tunnel throughput 10-16 % lower (measured:
# benchmarks/README.md). Production interpreters (Debian's, the official python:3.11 images) are the
# optimised kind, so everything here runs in a venv made from Debian's: what is tested is what is
# measured. RAVENVPN_PYTHON=/path/to/python3.11 picks another interpreter.
#
# usage: . tools/python-env.sh && ravenvpn_python_env EXTRAS [always]
#   EXTRAS: '[test]' or ''; 'always': pip install even if ravenvpn already imports (CI: setup.cfg may have
#   changed). Afterwards python3, ravenvpn and ravenvpn-wg are the venv's.

ravenvpn_python_env() {
    local extras="$1" always="${2:-}" venv="$PWD/.venv"
    local base="${RAVENVPN_PYTHON:-/usr/bin/python3.11}"
    if ! "$base" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        if [ -n "${RAVENVPN_PYTHON:-}" ]; then
            echo "ERROR: RAVENVPN_PYTHON=$base is not a Python with the venv module" >&2
            return 1
        fi
        echo "== installing Debian's python3.11 and its venv module"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3.11 python3.11-venv \
            || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                 python3.11 python3.11-venv; }
    fi
    "$base" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
        || { echo "ERROR: $base is not Python 3.11" >&2; return 1; }
    # A venv left by another interpreter, or a broken one (an interrupted `venv` leaves no pip), is made again.
    local made_from="" wanted
    [ -f "$venv/pyvenv.cfg" ] && made_from="$(sed -n 's/^executable = //p' "$venv/pyvenv.cfg" | head -n1)"
    wanted="$("$base" -c 'import os, sys; print(os.path.realpath(sys.executable))')"
    if [ ! -x "$venv/bin/python3" ] || [ "$(readlink -f "$made_from")" != "$wanted" ] \
            || ! "$venv/bin/python3" -m pip --version >/dev/null 2>&1; then
        echo "== creating $venv from $base"
        rm -rf "$venv"
        "$base" -m venv "$venv"
    fi
    export VIRTUAL_ENV="$venv"
    export PATH="$venv/bin:$PATH"
    hash -r
    # -P: the checkout in the current directory must not stand in for an installed ravenvpn.
    if [ "$always" = always ] || ! python3 -P -c 'import ravenvpn, pyroute2, nacl, yaml, cryptography' >/dev/null 2>&1 \
            || [ ! -x "$venv/bin/ravenvpn-wg" ]; then
        echo "== pip install -e '.$extras' into $venv"
        PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install -q -e ".$extras"
    fi
}

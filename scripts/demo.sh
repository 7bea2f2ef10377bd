#!/usr/bin/env bash
# The demo app with one command: bash scripts/demo.sh [IP:PORT]
#
# Builds cellar, prints a link to /demo for two users (alice and bob), and serves until
# ctrl-c: server.demo on, auth.mode = "jwt" with a secret made for this run (so the links of
# an earlier run no longer open), the databases and the folder store under ./cellar-data/demo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

listen=${1:-127.0.0.1:8080}
cargo build --release --quiet -p cellar-cli
cellar=target/release/cellar

export CELLAR_SERVER_DEMO=true
export CELLAR_AUTH_MODE=jwt
CELLAR_AUTH_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export CELLAR_AUTH_JWT_SECRET
export CELLAR_DATA_DIR=cellar-data/demo/local
export CELLAR_STORE_URL=file://cellar-data/demo/bucket

for user in alice bob; do
    echo "$user: http://$listen/demo#token=$("$cellar" token "$user")"
done
exec "$cellar" serve --listen "$listen"

#!/usr/bin/env bash
# The benchmark scenarios of docs/benchmarks.md, one command each:
#
#   scripts/bench.sh read-heavy     100 users, 95% reads (folder store)
#   scripts/bench.sh write-heavy    one user, 32 concurrent writers: uploads per write
#   scripts/bench.sh sync-check     reads with sync.version_check on vs off, folder and SeaweedFS
#   scripts/bench.sh upload-bytes   bytes uploaded per 1-row update at 1, 16 and 64 MiB
#   scripts/bench.sh cold-start     first request for a 256 MiB database vs a plain GET of it
#   scripts/bench.sh cold-chain     first request for 64 MiB, log after the snapshot empty vs 63 changes
#   scripts/bench.sh cold-small     first requests of 1 000 users of 128 KiB on a fresh server
#   scripts/bench.sh memory         server VmRSS after 10 000 distinct users were served
#   scripts/bench.sh history        restore and diff of 64 MiB with 100 changes in the log vs its
#                                   cold start; versions of a user with 10 000 versions
#   scripts/bench.sh all            every scenario above, in that order
#
# Each scenario builds the release binary (cargo build --release -p cellar-cli), starts
# `cellar serve` on 127.0.0.1 with fresh folders, drives it with `cellar bench`, prints a
# summary line per result (the JSON reports go to $BENCH_RESULTS, default
# target/bench-results), and kills everything it started. SeaweedFS comes from the venv
# that scripts/test.sh installs (or $CELLAR_VENV), started through the testkit.
# STORE=folder runs cold-start and cold-small on the folder store instead of SeaweedFS;
# cold-chain and history run on the folder store unless STORE=seaweedfs;
# SYNC_CHECK_STORES=folder runs sync-check on the folder store only.
# LINK_MIB_PER_S=N emulates a per-connection throughput limit like R2's: each connection to
# SeaweedFS goes through a proxy that paces it to N MiB/s; curl's plain GET goes through it too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target="${CARGO_TARGET_DIR:-$PWD/target}"
cellar="${CELLAR_BIN:-$target/release/cellar}" # CELLAR_BIN: another build, for A/B runs
results="${BENCH_RESULTS:-$target/bench-results}"
work=$(mktemp -d -t cellar-bench-XXXXXX)
pids=()
store_env=()

cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }

# wait_for_line FILE PATTERN PID: until FILE has a line matching PATTERN (2 min at most).
wait_for_line() {
    for _ in $(seq 1200); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# start_seaweedfs: SeaweedFS on free loopback ports, kept until this script exits; sets
# endpoint, bucket, region, access_key_id, secret_access_key (and direct_endpoint, the server's
# own, when LINK_MIB_PER_S puts a proxy at endpoint).
start_seaweedfs() {
    [[ -n "${endpoint:-}" ]] && return 0
    cargo build --release -q -p cellar-testkit --example s3_server
    mkfifo "$work/s3.in"
    local link=()
    if [[ -n "${LINK_MIB_PER_S:-}" ]]; then link=(--link-mib-per-s "$LINK_MIB_PER_S"); fi
    "$target/release/examples/s3_server" seaweedfs "${link[@]}" <"$work/s3.in" >"$work/s3.out" 2>"$work/s3.log" &
    pids+=("$!")
    exec 7>"$work/s3.in" # its stdin: the server lives while this stays open
    wait_for_line "$work/s3.out" '^ready$' "$!" || { cat "$work/s3.log" >&2; exit 1; }
    while IFS='=' read -r name value; do
        case $name in endpoint | direct_endpoint | bucket | region | access_key_id | secret_access_key) declare -g "$name=$value" ;; esac
    done <"$work/s3.out"
}

# use_store folder|seaweedfs: the store of the servers started next.
use_store() {
    case $1 in
    folder) store_env=(CELLAR_STORE_URL="file://$work/bucket") ;;
    seaweedfs)
        start_seaweedfs
        store_env=(CELLAR_STORE_URL="s3://$bucket/cellar-users" CELLAR_STORE_ENDPOINT="$endpoint"
            CELLAR_STORE_REGION="$region" CELLAR_STORE_ALLOW_HTTP=true
            AWS_ACCESS_KEY_ID="$access_key_id" AWS_SECRET_ACCESS_KEY="$secret_access_key")
        ;;
    *) say "unknown store $1" && exit 2 ;;
    esac
}

# start_server DATA [VAR=VALUE...]: `cellar serve` on a free port, local copies in
# $work/DATA (reused if it exists); sets url and server_pid.
start_server() {
    local data="$work/$1"
    shift
    mkdir -p "$data"
    env RUST_LOG=warn CELLAR_DATA_DIR="$data/local" "${store_env[@]}" "$@" \
        "$cellar" serve --listen 127.0.0.1:0 --json >"$data/serve.out" 2>>"$data/serve.log" &
    server_pid=$!
    pids+=("$server_pid")
    wait_for_line "$data/serve.out" listening "$server_pid" || { cat "$data/serve.log" >&2; exit 1; }
    url="http://$(jq -r .listening "$data/serve.out")"
}

stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" || true
}

# bench NAME ARGS...: `cellar bench --json` against $url; the report goes to
# $results/NAME.json and stays in $report.
bench() {
    local name=$1
    shift
    "$cellar" bench --json --url "$url" "$@" >"$results/$name.json"
    report="$results/$name.json"
    say "  $name: $(jq -c '{throughput, latency_ms, errors: .requests.errors, store}' "$report")"
}

read_heavy() {
    use_store folder
    start_server read-heavy
    bench read-heavy --users 100 --concurrency 16 --duration 20 --write-ratio 0.05
    jq -r '"read-heavy: \(.throughput | floor) requests/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, errors \(.requests.errors)"' "$report"
    stop_server
}

write_heavy() {
    use_store folder
    start_server write-heavy
    bench write-heavy --users 1 --concurrency 32 --duration 20 --write-ratio 1
    jq -r '"write-heavy: \(.throughput | floor) writes/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, uploads per write \(.store.uploads_per_write) (target <= 0.25)"' "$report"
    stop_server
}

sync_check() {
    local rounds=4
    for store in ${SYNC_CHECK_STORES:-folder seaweedfs}; do
        use_store "$store"
        local reports=()
        # Alternating on/off runs: a shared machine drifts, so single runs mislead. The
        # order flips every round (on first, then off first): the first run of a pair was
        # seen to be slower, whichever it was.
        for round in $(seq $rounds); do
            local order=(true false)
            ((round % 2 == 0)) && order=(false true)
            declare -A pair=()
            for check in "${order[@]}"; do
                # The same local copies for every run: with the check off, nothing is downloaded.
                start_server "sync-check-$store" CELLAR_SYNC_VERSION_CHECK="$check"
                bench "sync-check-$store-$check-$round" --users 100 --concurrency 16 --duration 10 --write-ratio 0
                pair[$check]=$report
                stop_server
            done
            reports+=("${pair[true]}" "${pair[false]}")
            unset pair
        done
        jq -rs --arg store "$store" '
            def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
            [range(0; length; 2) as $i | {on: .[$i].throughput, off: .[$i + 1].throughput}] as $rounds
            | "sync-check \($store): on \($rounds | map(.on) | median | floor) reads/s, off \($rounds | map(.off) | median | floor) reads/s, on/off \($rounds | map(.on / .off * 1000 | round / 1000) | tostring) median \($rounds | map(.on / .off) | median * 1000 | round / 1000) (target >= 0.8 on the folder store)"' \
            "${reports[@]}"
    done
}

upload_bytes() {
    use_store folder
    for mib in 1 16 64; do
        start_server "upload-$mib"
        bench "upload-bytes-${mib}MiB" --users 1 --concurrency 1 --requests 20 --write-ratio 1 --preload-bytes "${mib}MiB"
        jq -r --arg mib "$mib" '"upload-bytes \($mib) MiB: \(.store.upload_bytes_per_write | floor) bytes uploaded per 1-row update, p50 \(.latency_ms.p50) ms"' "$report"
        stop_server
    done
}

cold_start() {
    local store=${STORE:-seaweedfs}
    use_store "$store"
    start_server cold-writer
    bench cold-start-preload --users 1 --user-prefix cold --preload-bytes 256MiB --requests 0
    stop_server
    local object="cellar-users/cold-0/database.sqlite" runs=7 get stored hwm size
    : >"$work/pairs"
    for run in $(seq $runs); do
        start_server "cold-reader-$run" # a fresh data folder: the first request downloads
        sync # neither side starts while the previous run's files are still being written back
        # One measured request right after the first: a read, while the download's
        # SHA-256 and fsync may still run (they run off the user's lock).
        bench "cold-start-$run" --users 1 --user-prefix cold --preload-bytes 256MiB --requests 1
        hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$server_pid/status")
        stop_server
        sync
        if [[ $store == seaweedfs ]]; then
            get=$(curl -sf --aws-sigv4 "aws:amz:$region:s3" --user "$access_key_id:$secret_access_key" \
                -o /dev/null -w '%{time_total}' "$endpoint/$bucket/$object")
            sync
            # For comparison only: the same GET storing the object in a file, as a cold
            # start must (not the target's baseline, which is the plain GET above).
            stored=$(curl -sf --aws-sigv4 "aws:amz:$region:s3" --user "$access_key_id:$secret_access_key" \
                -o "$work/stored-copy" -w '%{time_total}' "$endpoint/$bucket/$object")
        else
            get=$({ TIMEFORMAT=%R; time cat "$work/bucket/$object" >/dev/null; } 2>&1)
            sync
            stored=$({ TIMEFORMAT=%R; time cat "$work/bucket/$object" >"$work/stored-copy"; } 2>&1)
        fi
        rm -f "$work/stored-copy"
        # Each cold start is paired with the GETs right after it, so that the machine's
        # drift between runs cancels out in the ratio.
        jq -c --argjson get "$get" --argjson stored "$stored" --argjson hwm "$hwm" \
            '{cold: (.setup.first_request_ms.max / 1000), second: (.latency_ms.max / 1000), get: $get, stored: $stored, peak_rss_kib: $hwm}' \
            "$results/cold-start-$run.json" >>"$work/pairs"
        size=$(stat -c %s "$work/cold-reader-$run/local/cold-0/database.sqlite")
        # This VM backs memory the guest never touched lazily, and a page cache page on
        # such memory costs several times a reused one: seven runs' files kept would make
        # each run slower than the last. Removing them keeps the runs alike.
        rm -rf "$work/cold-reader-$run"
    done
    say "  runs (seconds: cold start, second request, GET, GET to a file): $(jq -c '[.cold, .second, .get, .stored]' "$work/pairs" | tr '\n' ' ')"
    jq -rs --arg store "$store" --argjson size "$size" '
        def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        (map(.cold) | median) as $cold | (map(.get) | median) as $plain
        | (map(.get / .cold) | median) as $ratio
        | "cold-start \($store), \($size / 1048576 | floor) MiB: first request \($cold) s (\($size / 1048576 / $cold | floor) MiB/s), plain GET \($plain) s (\($size / 1048576 / $plain | floor) MiB/s), ratio \(($ratio * 1000 | round) / 1000) (target >= 0.8; median of \(length) paired runs, each between \(map(.get / .cold) | min * 100 | round / 100) and \(map(.get / .cold) | max * 100 | round / 100)); second request \(map(.second) | median) s; server peak RSS \(map(.peak_rss_kib) | max / 1024 | floor) MiB; against the same GET written to a file (\(map(.stored) | median) s): \((map(.stored / .cold) | median * 1000 | round) / 1000)"' \
        "$work/pairs"
}

# store_status USER: `cellar status USER --json` on the current store (snapshot_version,
# changes: the log after the snapshot).
store_status() {
    env "${store_env[@]}" "$cellar" status "$1" --json
}

# wait_for_changes USER N: until the log after USER's snapshot holds N changes (compaction
# runs in the background after a write; 2 min at most).
wait_for_changes() {
    for _ in $(seq 600); do
        [[ $(store_status "$1" | jq .changes) == "$2" ]] && return 0
        sleep 0.2
    done
    say "  $1: the log after the snapshot does not hold $2 changes: $(store_status "$1" | jq -c .)"
    exit 1
}

# wait_for_snapshot_past USER V: until USER's snapshot is past version V (compaction runs
# in the background after a write; 2 min at most).
wait_for_snapshot_past() {
    for _ in $(seq 600); do
        (($(store_status "$1" | jq .snapshot_version) > $2)) && return 0
        sleep 0.2
    done
    say "  $1: the snapshot is not past version $2: $(store_status "$1" | jq -c .)"
    exit 1
}

cold_chain() {
    local store=${STORE:-folder} runs=7 writes=63
    use_store "$store"
    # Two users holding the same 64 MiB database: flat-0, a snapshot with an empty log after
    # it, and chain-0, the same snapshot and 63 one-row updates in the log. The database is
    # a preloaded user's (seed-0), pulled and pushed to each: a user's first version is a
    # snapshot, so neither depends on compaction. The writer of the 63 folds only past 1000
    # changes, so they stay in the log.
    start_server chain-seed
    bench cold-chain-seed --users 1 --user-prefix seed --preload-bytes 64MiB --requests 0
    stop_server
    # (Their logs, such as the size warning, go to $work/push.log, shown if one fails.)
    env "${store_env[@]}" "$cellar" pull seed-0 --output "$work/seed.sqlite" --json >/dev/null 2>>"$work/push.log" ||
        { cat "$work/push.log" >&2; exit 1; }
    for variant in flat chain; do
        env "${store_env[@]}" "$cellar" push "$variant-0" "$work/seed.sqlite" --json >/dev/null 2>>"$work/push.log" ||
            { cat "$work/push.log" >&2; exit 1; }
    done
    rm -f "$work/seed.sqlite"
    start_server chain-writer CELLAR_SYNC_COMPACT_AFTER_VERSIONS=1000
    bench cold-chain-writes --users 1 --user-prefix chain --preload-bytes 64MiB --preload-writes "$writes" --requests 0
    stop_server
    wait_for_changes flat-0 0
    wait_for_changes chain-0 "$writes"
    say "  flat-0: $(store_status flat-0 | jq -c '{version, snapshot_version, changes, size_bytes}')"
    say "  chain-0: $(store_status chain-0 | jq -c '{version, snapshot_version, changes, size_bytes}')"
    : >"$work/chain-runs"
    for run in $(seq $runs); do
        # Alternating order: the first of a pair may be slower, whichever it is.
        local order=(flat chain)
        ((run % 2 == 0)) && order=(chain flat)
        for variant in "${order[@]}"; do
            start_server "chain-reader-$variant-$run" # a fresh data folder: the first request downloads
            sync
            # Reads only: the readers must not add to the log.
            bench "cold-chain-$variant-$run" --users 1 --user-prefix "$variant" --preload-bytes 64MiB --requests 1 --write-ratio 0
            local downloads download_bytes
            downloads=$(curl -sf "$url/metrics" | awk '$1 == "cellar_downloads_total" {print $2}')
            download_bytes=$(curl -sf "$url/metrics" | awk '$1 == "cellar_download_bytes_total" {print $2}')
            stop_server
            jq -c --arg variant "$variant" --argjson run "$run" \
                --argjson downloads "${downloads:-null}" --argjson download_bytes "${download_bytes:-null}" \
                '{variant: $variant, run: $run, first: (.setup.first_request_ms.max / 1000), second: (.latency_ms.max / 1000), downloads: $downloads, download_bytes: $download_bytes}' \
                "$results/cold-chain-$variant-$run.json" >>"$work/chain-runs"
            rm -rf "$work/chain-reader-$variant-$run"
            sync
        done
    done
    # The readers must have left the log as it was.
    wait_for_changes chain-0 "$writes"
    say "  runs (seconds, first request): flat $(jq -sc 'map(select(.variant == "flat") | .first)' "$work/chain-runs"), chain $(jq -sc 'map(select(.variant == "chain") | .first)' "$work/chain-runs")"
    say "  downloads per first request (count, bytes): flat $(jq -sc 'map(select(.variant == "flat") | [.downloads, .download_bytes]) | unique' "$work/chain-runs"), chain $(jq -sc 'map(select(.variant == "chain") | [.downloads, .download_bytes]) | unique' "$work/chain-runs")"
    jq -rs --arg store "$store" --argjson writes "$writes" '
        def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        (map(select(.variant == "flat")) | sort_by(.run)) as $a | (map(select(.variant == "chain")) | sort_by(.run)) as $b
        | ($a | map(.first) | median) as $ma | ($b | map(.first) | median) as $mb
        | ([range(0; $a | length) | $b[.].first / $a[.].first] | median) as $paired
        | "cold-chain \($store), 64 MiB: first request with an empty log \($ma) s, with \($writes) changes in the log \($mb) s, ratio b/a \(($mb / $ma * 1000 | round) / 1000) (median of \($a | length) runs each; median of the per-round ratios \(($paired * 1000 | round) / 1000); target <= 1.1); second request \($a | map(.second) | median) s / \($b | map(.second) | median) s"' \
        "$work/chain-runs"
}

cold_small() {
    local store=${STORE:-seaweedfs}
    use_store "$store"
    start_server small-writer
    bench cold-small-preload --users 1000 --user-prefix small --preload-bytes 128KiB --requests 0 --concurrency 16
    stop_server
    start_server small-reader # a fresh data folder: every user's first request downloads
    bench cold-small --users 1000 --user-prefix small --preload-bytes 128KiB --requests 0 --concurrency 16
    stop_server
    jq -r --arg store "$store" '"cold-small \($store): 1000 users of 128 KiB, 16 in flight: \(1000 / .setup.seconds | floor) first requests/s, p50 \(.setup.first_request_ms.p50) ms, p99 \(.setup.first_request_ms.p99) ms"' "$report"
}

# timed CURL-ARGS...: the seconds one request took (it must succeed).
timed() {
    curl -sf -o /dev/null -w '%{time_total}' "$@"
}

history() {
    local store=${STORE:-folder} runs=7 writes=100
    use_store "$store"
    # hist-0: 64 MiB, its first version the snapshot and 100 one-row updates in the log
    # after it (the writer folds only past 1000 changes). small-0: 10 000 versions.
    start_server history-writer CELLAR_SYNC_COMPACT_AFTER_VERSIONS=1000
    bench history-writes --users 1 --user-prefix hist --preload-bytes 64MiB --preload-writes "$writes" --requests 0
    bench history-many --users 1 --user-prefix small --preload-bytes 64KiB --preload-writes 10000 --requests 0
    stop_server
    # kept-0: 64 MiB and 60 one-row updates, folded after 50: its first version is kept
    # under snapshots/ (compressed), the versions after it rebuilt from that.
    start_server history-kept-writer CELLAR_SYNC_COMPACT_AFTER_VERSIONS=50
    bench history-kept --users 1 --user-prefix kept --preload-bytes 64MiB --preload-writes 60 --requests 0
    stop_server
    wait_for_snapshot_past kept-0 1
    wait_for_changes hist-0 "$writes"
    local newest oldest
    newest=$(store_status hist-0 | jq .version)
    oldest=$(store_status hist-0 | jq .snapshot_version) # the 64 MiB before the updates
    say "  hist-0: $(store_status hist-0 | jq -c '{version, snapshot_version, changes, size_bytes}')"
    : >"$work/history-runs"
    for run in $(seq $runs); do
        # A cold start of it: a fresh data folder, its first request.
        start_server "history-cold-$run" CELLAR_SYNC_COMPACT_AFTER_VERSIONS=1000
        sync
        local cold restore_old restore_mid diff versions
        cold=$(timed -H 'x-user-id: hist-0' "$url/v1/db")
        # The 100 updates, row by row: the version before them against the newest, which
        # this instance holds (only the older one is rebuilt from the bucket).
        diff=$(timed -H 'x-user-id: hist-0' "$url/v1/db/diff?from=$oldest&to=$newest")
        # A restore by the instance serving the user (its copy warm): of the version before
        # the updates (the snapshot's), then of one in the middle of the log; each makes a
        # new version (two more small changes in the log per run).
        restore_old=$(timed -X POST -H 'x-user-id: hist-0' -H 'content-type: application/json' \
            -d "{\"version\": $oldest}" "$url/v1/db/restore")
        restore_mid=$(timed -X POST -H 'x-user-id: hist-0' -H 'content-type: application/json' \
            -d "{\"version\": $(((oldest + newest) / 2))}" "$url/v1/db/restore")
        versions=$(timed -H 'x-user-id: small-0' "$url/v1/db/versions?limit=10000")
        stop_server
        # The same restore rebuilt from the snapshot (history.walk_back_changes = 0), what a
        # restore does when it cannot walk back from its copy; after that server's cold start.
        start_server "history-far-$run" CELLAR_SYNC_COMPACT_AFTER_VERSIONS=1000 CELLAR_HISTORY_WALK_BACK_CHANGES=0
        sync
        local far_cold far
        far_cold=$(timed -H 'x-user-id: hist-0' "$url/v1/db")
        sleep 1 # the download's install after the answer, as the first server's diff waits for it
        far=$(timed -X POST -H 'x-user-id: hist-0' -H 'content-type: application/json' \
            -d "{\"version\": $(((oldest + newest) / 2))}" "$url/v1/db/restore")
        # The same from a kept snapshot: 25 changes after kept-0's first version.
        local kept_cold kept
        kept_cold=$(timed -H 'x-user-id: kept-0' "$url/v1/db")
        sleep 1
        kept=$(timed -X POST -H 'x-user-id: kept-0' -H 'content-type: application/json' \
            -d '{"version": 26}' "$url/v1/db/restore")
        stop_server
        jq -nc --argjson cold "$cold" --argjson old "$restore_old" --argjson mid "$restore_mid" \
            --argjson diff "$diff" --argjson versions "$versions" --argjson far_cold "$far_cold" --argjson far "$far" \
            --argjson kept_cold "$kept_cold" --argjson kept "$kept" \
            '{cold: $cold, restore_old: $old, restore_mid: $mid, diff: $diff, versions: $versions, far_cold: $far_cold, far: $far, kept_cold: $kept_cold, kept: $kept}' >>"$work/history-runs"
        rm -rf "$work/history-cold-$run" "$work/history-far-$run"
    done
    say "  hist-0 after the runs: $(store_status hist-0 | jq -c '{version, snapshot_version, changes}')"
    # A version rebuilt from the bucket (what a restore does when it cannot walk back from
    # its copy): `cellar pull --version`, against `cellar pull` of the newest, 3 runs each.
    local pulls=()
    for run in 1 2 3; do
        for version in "$oldest" $(((oldest + newest) / 2)) ""; do
            local args=(pull hist-0 --output "$work/pulled.sqlite" --force --json)
            [[ -n $version ]] && args+=(--version "$version")
            pulls+=("${version:-newest}=$({ TIMEFORMAT=%R; time env "${store_env[@]}" "$cellar" "${args[@]}" >/dev/null 2>&1; } 2>&1)")
            rm -f "$work/pulled.sqlite"
        done
    done
    say "  cellar pull (seconds, version=time): ${pulls[*]}"
    local listed
    listed=$(env "${store_env[@]}" "$cellar" versions small-0 --json --limit 0 | jq '.versions | length')
    say "  runs (seconds: cold, restore old, restore mid, diff, versions, cold, restore mid from the snapshot, cold of kept-0, its restore from the kept snapshot): $(jq -c '[.cold, .restore_old, .restore_mid, .diff, .versions, .far_cold, .far, .kept_cold, .kept]' "$work/history-runs" | tr '\n' ' ')"
    jq -rs --arg store "$store" --argjson listed "$listed" '
        def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        (map(.cold) | median) as $cold
        | "history \($store), 64 MiB with 100 changes in the log (2 more per run): cold start \($cold) s; restore of the snapshot version \(map(.restore_old) | median) s (\((map(.restore_old) | median) / $cold * 100 | round / 100)x, target <= 2), of a version mid-log \(map(.restore_mid) | median) s (\((map(.restore_mid) | median) / $cold * 100 | round / 100)x), the same rebuilt from the snapshot \(map(.far) | median) s (\((map(.far / .far_cold) | median) * 100 | round / 100)x its server'"'"'s cold start), from a kept snapshot and 25 changes \(map(.kept) | median) s (\((map(.kept / .kept_cold) | median) * 100 | round / 100)x that user'"'"'s cold start); diff of 100 one-row updates \(map(.diff) | median) s (target < 1); GET /v1/db/versions of a user with \($listed) versions \(map(.versions) | median) s (target < 1) (median of \(length) runs)"' \
        "$work/history-runs"
}

memory() {
    use_store folder
    start_server memory
    bench memory --users 10000 --user-prefix mem --concurrency 16 --requests 10000 --write-ratio 0
    local rss hwm
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$server_pid/status")
    echo "memory: VmRSS $((rss / 1024)) MiB after 10000 distinct users (peak VmHWM $((hwm / 1024)) MiB) (target <= 150 MiB)"
    stop_server
}

scenario=${1:-}
case $scenario in
read-heavy | write-heavy | sync-check | upload-bytes | cold-start | cold-chain | cold-small | memory | history | all) ;;
*)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac
cargo build --release -q -p cellar-cli
mkdir -p "$results"
say "cellar bench on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -h | awk '/^Mem/ {print $2}') memory"
if [[ $scenario == all ]]; then
    for each in read_heavy write_heavy sync_check upload_bytes cold_start cold_chain cold_small memory history; do $each; done
else
    "${scenario//-/_}"
fi

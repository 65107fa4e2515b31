#!/usr/bin/env bash
# The benchmark harness: builds kmsfs (release), installs the peers if missing (Debian:
# gocryptfs, fio, bindfs), and runs bench/fsbench.py. Root only. See bench/fsbench.py for
# the knobs (BENCH_SIZE_MB, BENCH_REPEAT, BENCH_FILES, BENCH_TARGETS, ...).
set -euo pipefail
# Benchmarks measure the filesystem, not the keystore seal: no passphrase prompt.
export KMSFS_SEAL=${KMSFS_SEAL:-none}
cd "$(dirname "$0")/.."
missing=()
for t in gocryptfs fio bindfs; do command -v $t >/dev/null || missing+=($t); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --quiet
exec python3 bench/fsbench.py "$@"

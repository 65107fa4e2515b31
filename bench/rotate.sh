#!/usr/bin/env bash
# Measures `kmsfs rotate` (re-wrap every header under a new key version) on a tree of N
# small files, with the embedded KMS and its audit log on. Usage: bench/rotate.sh [N]
set -euo pipefail
# Benchmarks measure the filesystem, not the keystore seal: no passphrase prompt.
export KMSFS_SEAL=${KMSFS_SEAL:-none}
N=${1:-20000}
BIN=${KMSFS_BIN:-$(dirname "$0")/../target/release/kmsfs}
W=$(mktemp -d /tmp/kmsfs-rotate-bench.XXXXXX)
trap 'umount "$W/mnt" 2>/dev/null || true; rm -rf "$W"' EXIT
export KMSFS_KMS=local:$W/ks
mkdir "$W/mnt"
"$BIN" init "$W/back" >/dev/null
"$BIN" mount "$W/back" "$W/mnt"
python3 - "$W/mnt" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range(100):
    os.mkdir(f"{root}/d{d}")
for i in range(n):
    with open(f"{root}/d{i % 100}/f{i}", "wb") as f:
        f.write(b"x" * 100)
PY
"$BIN" umount "$W/mnt"
"$BIN" key rotate alias/kmsfs-default >/dev/null
echo "rotate of $N files (first run re-wraps all, second finds nothing to do):"
"$BIN" rotate "$W/back"
"$BIN" rotate "$W/back"
"$BIN" audit verify

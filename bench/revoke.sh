#!/usr/bin/env bash
# Measures the revoke of a share on a tree of N small files (default 20,000, in 100
# directories, plus one symlink per directory), with the embedded KMS: `kmsfs tree-key
# rotate` (a new tree key: every name, symlink record and file authentication re-sealed;
# what `share --revoke`, `keys remove` and `rotate --to` run), side by side with `kmsfs
# rotate` (re-wrap every header under a new key version) on the same tree in the same
# run. Usage: bench/revoke.sh [N]
set -euo pipefail
# Benchmarks measure the filesystem, not the keystore seal: no passphrase prompt.
export KMSFS_SEAL=${KMSFS_SEAL:-none}
N=${1:-20000}
BIN=${KMSFS_BIN:-$(dirname "$0")/../target/release/kmsfs}
W=$(mktemp -d /tmp/kmsfs-revoke-bench.XXXXXX)
trap 'umount "$W/mnt" 2>/dev/null || true; rm -rf "$W"' EXIT
export KMSFS_KMS=local:$W/ks KMSFS_KNOWN_TREES=$W/known_trees.json
mkdir "$W/mnt"
"$BIN" init "$W/back" >/dev/null
"$BIN" mount "$W/back" "$W/mnt"
python3 - "$W/mnt" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range(100):
    os.mkdir(f"{root}/d{d}")
    os.symlink(f"target-{d}", f"{root}/d{d}/link")
for i in range(n):
    with open(f"{root}/d{i % 100}/f{i}", "wb") as f:
        f.write(b"x" * 100)
PY
"$BIN" umount "$W/mnt"
sync
echo "== $N files: kmsfs tree-key rotate (revoke), 3 runs =="
for i in 1 2 3; do "$BIN" tree-key rotate "$W/back"; done
"$BIN" key rotate alias/kmsfs-default >/dev/null
echo "== the same tree: kmsfs rotate (re-wrap under a new key version), same run =="
"$BIN" rotate "$W/back"
"$BIN" fsck "$W/back"

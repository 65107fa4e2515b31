#!/usr/bin/env bash
# Measures `kmsfs rotate` (re-wrap every header under a new key version) on a tree of N
# small files, with the embedded KMS and its audit log on. Usage: bench/rotate.sh [N]
# (JOBS="32 64" [ROUNDS=2]: interleaved runs with those --jobs values instead;
# OLD_BIN=other/kmsfs [ROUNDS=2]: interleaved runs of this build and that one).
set -euo pipefail
# Benchmarks measure the filesystem, not the keystore seal: no passphrase prompt.
export KMSFS_SEAL=${KMSFS_SEAL:-none}
N=${1:-20000}
BIN=${KMSFS_BIN:-$(dirname "$0")/../target/release/kmsfs}
W=$(mktemp -d /tmp/kmsfs-rotate-bench.XXXXXX)
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
for i in range(n):
    with open(f"{root}/d{i % 100}/f{i}", "wb") as f:
        f.write(b"x" * 100)
PY
"$BIN" umount "$W/mnt"
if [ -n "${OLD_BIN:-}" ]; then
  # Interleaved rounds of this build and another (OLD_BIN=path/to/kmsfs), one tree.
  for r in $(seq "${ROUNDS:-2}"); do
    for b in "$BIN" "$OLD_BIN"; do
      "$BIN" key rotate alias/kmsfs-default >/dev/null
      echo "round $r, $b: $("$b" rotate "$W/back" 2>/dev/null)"
    done
  done
elif [ -n "${JOBS:-}" ]; then
  # Interleaved rounds over one tree: JOBS="32 64" ROUNDS=2 bench/rotate.sh N (each run
  # follows a key rotation; AWS allows 10 on-demand rotations of a key).
  for r in $(seq "${ROUNDS:-2}"); do
    for j in $JOBS; do
      "$BIN" key rotate alias/kmsfs-default >/dev/null
      echo "round $r, --jobs $j: $("$BIN" rotate "$W/back" --jobs "$j" 2>/dev/null)"
    done
  done
else
  "$BIN" key rotate alias/kmsfs-default >/dev/null
  echo "rotate of $N files (first run re-wraps all, second finds nothing to do):"
  "$BIN" rotate "$W/back"
  "$BIN" rotate "$W/back"
fi
"$BIN" audit verify

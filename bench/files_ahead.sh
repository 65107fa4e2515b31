#!/bin/bash
# Files made ahead on (the default) and off (--no-files-ahead), interleaved: an untar of
# the source tree fsbench uses (BENCH_DIR/tree.tar, made by bench/fsbench.py) and a burst
# of 5,000 creates of 4 KiB in one directory, each on a fresh tree, ROUNDS times.
# Usage: KMSFS_BIN=target/release/kmsfs bench/files_ahead.sh [ROUNDS]   (as root)
set -eu
ROUNDS=${1:-3}
BIN=${KMSFS_BIN:-$(dirname "$0")/../target/release/kmsfs}
TAR=${BENCH_DIR:-/var/tmp/kmsfs-bench}/tree.tar
W=$(mktemp -d /var/tmp/files-ahead.XXXXXX)
trap 'umount "$W/mnt" 2>/dev/null || true; rm -rf "$W"' EXIT
export KMSFS_SEAL=none
echo "| round | files ahead | untar s | one-directory burst files/s |"
echo "|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
  for mode in on off; do
    opt=(); [ "$mode" = off ] && opt=(--no-files-ahead)
    res=()
    for work in untar burst; do
      rm -rf "$W/back" "$W/mnt" "$W/ks" "$W/kt.json"; mkdir -p "$W/back" "$W/mnt"
      export KMSFS_KMS=local:$W/ks KMSFS_KNOWN_TREES=$W/kt.json
      "$BIN" init "$W/back" >/dev/null 2>&1
      "$BIN" mount "$W/back" "$W/mnt" "${opt[@]}"
      sync; sleep 2
      if [ "$work" = untar ]; then
        s=$(date +%s.%N); tar -xf "$TAR" -C "$W/mnt"; sync; e=$(date +%s.%N)
        res+=("$(printf "%.2f" "$(echo "$e - $s" | bc)")")
      else
        res+=("$(python3 - "$W/mnt" <<'P'
import os, sys, time
d = sys.argv[1] + "/one"; os.mkdir(d); p = os.urandom(4096)
t = time.time()
for i in range(5000):
    with open(f"{d}/f{i}", "wb") as f:
        f.write(p)
os.sync()
print(round(5000 / (time.time() - t)))
P
)")
      fi
      umount "$W/mnt"; sleep 0.5
    done
    echo "| $r | $mode | ${res[0]} | ${res[1]} |"
  done
done

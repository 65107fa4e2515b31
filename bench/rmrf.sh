#!/bin/bash
# `rm -rf` of a real source tree through the mount, cold: kmsfs (KMSFS_BIN), an older
# kmsfs build (KMSFS_OLD_BIN, optional) and gocryptfs, interleaved round by round so a
# slow spell of the disk falls on all of them. Each round: a fresh tree, TARBALL untarred
# into the mount, synced, caches dropped, then `rm -rf` of everything and a sync, timed.
#
# Usage (root): KMSFS_BIN=... [KMSFS_OLD_BIN=...] bench/rmrf.sh TARBALL [ROUNDS] [DIR]
# (fsbench.py leaves its tarball of the cargo registry in /var/tmp/kmsfs-bench/tree.tar)
set -euo pipefail
TARBALL=${1:?usage: bench/rmrf.sh TARBALL [ROUNDS] [DIR]}
ROUNDS=${2:-2}
D=${3:-/var/tmp/kmsfs-rmrf}
KMSFS_BIN=${KMSFS_BIN:-target/release/kmsfs}
targets=(kmsfs)
[ -n "${KMSFS_OLD_BIN:-}" ] && targets+=(kmsfs-old)
targets+=(gocryptfs)
entries=$(tar -tf "$TARBALL" | wc -l)
export KMSFS_SEAL=none

mount_target() { # name root
  local t=$1 r=$2
  mkdir -p "$r/mnt"
  case $t in
    gocryptfs)
      mkdir -p "$r/back"; echo benchmark-password > "$r/pw"
      gocryptfs -q -init -passfile "$r/pw" "$r/back"
      gocryptfs -q -nosyslog -passfile "$r/pw" "$r/back" "$r/mnt" ;;
    *)
      local bin=$KMSFS_BIN; [ "$t" = kmsfs-old ] && bin=$KMSFS_OLD_BIN
      export KMSFS_KMS="local:$r/ks" KMSFS_KNOWN_TREES="$r/kt.json"
      "$bin" init "$r/back" >/dev/null 2>&1
      "$bin" mount "$r/back" "$r/mnt" --log-file "$r/log" ;;
  esac
  mountpoint -q "$r/mnt"
}

echo "rm -rf of $entries entries (untarred from $TARBALL), cold, + sync; seconds; $(date -u '+%F %H:%M')"
echo
echo "| round |$(printf ' %s |' "${targets[@]}")"
echo "|---|$(printf -- '---|%.0s' "${targets[@]}")"
for round in $(seq 1 "$ROUNDS"); do
  row="| $round |"
  for t in "${targets[@]}"; do
    r=$D/$t
    rm -rf "$r"; mount_target "$t" "$r"
    tar -xf "$TARBALL" -C "$r/mnt"; sync; sleep 2
    echo 3 > /proc/sys/vm/drop_caches
    s=$(date +%s.%N); rm -rf "${r:?}/mnt/"*; sync; e=$(date +%s.%N)
    row="$row $(echo "$e - $s" | bc | xargs printf '%.2f') |"
    umount "$r/mnt"; sleep 0.5; rm -rf "$r"
  done
  echo "$row"
done
rm -rf "$D"

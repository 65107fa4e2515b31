#!/bin/bash
# A/B of two kmsfs binaries: both mounted at once, alternating 1 MiB-block sequential
# write (+fsync) and cold read of a 512 MiB file, 8 rounds; seconds per operation.
# Usage (root): bench/ab_seq.sh OLD_BIN NEW_BIN [new|old: which goes first, default old]
set -e
D=/var/tmp/kmsfs-ab; rm -rf $D; mkdir -p $D
export KMSFS_KNOWN_TREES=$D/known.json
for v in old new; do
  B=$([ $v = old ] && echo "$1" || echo "$2")
  mkdir -p $D/$v/b $D/$v/m
  KMSFS_KMS=local:$D/$v/ks $B init $D/$v/b >/dev/null 2>&1
  KMSFS_KMS=local:$D/$v/ks $B mount $D/$v/b $D/$v/m
done
for r in 1 2 3 4 5 6 7 8; do
  for v in $([ "${3:-old}" = new ] && echo new old || echo old new); do
    rm -f $D/$v/m/f; sync
    w=$( { /usr/bin/time -f "%e" dd if=/dev/zero of=$D/$v/m/f bs=1M count=512 conv=fsync status=none; } 2>&1 )
    sync; echo 3 > /proc/sys/vm/drop_caches
    rd=$( { /usr/bin/time -f "%e" dd if=$D/$v/m/f of=/dev/null bs=1M status=none; } 2>&1 )
    echo "$v write_s=$w read_s=$rd"
  done
done
for v in old new; do umount $D/$v/m; done

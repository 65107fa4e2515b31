#!/bin/bash
# daemon CPU seconds per cold read of a 512 MiB file, for binaries $@ (alternating, 5 rounds)
set -e
D=/var/tmp/kmsfs-cpu; rm -rf $D; mkdir -p $D
export KMSFS_KNOWN_TREES=$D/known.json KMSFS_SEAL=none
i=0
for B in "$@"; do i=$((i+1))
  mkdir -p $D/$i/b $D/$i/m
  KMSFS_KMS=local:$D/$i/ks $B init $D/$i/b >/dev/null 2>&1
  KMSFS_KMS=local:$D/$i/ks $B mount $D/$i/b $D/$i/m
  dd if=/dev/urandom of=$D/$i/m/f bs=1M count=512 conv=fsync status=none
done
tick=$(getconf CLK_TCK)
for r in 1 2 3 4 5; do
  i=0
  for B in "$@"; do i=$((i+1))
    pid=$(pgrep -f "mount $D/$i/b" | head -1)
    sync; echo 3 > /proc/sys/vm/drop_caches
    c0=$(awk '{print $14+$15}' /proc/$pid/stat); s0=$(date +%s.%N)
    dd if=$D/$i/m/f of=/dev/null bs=1M status=none
    c1=$(awk '{print $14+$15}' /proc/$pid/stat); s1=$(date +%s.%N)
    cached=$(grep ^Cached: /proc/meminfo | awk '{print int($2/1024)}')
    printf "%s cpu=%.2fs wall=%.2fs cached=%sMiB | " $(basename $B) $(echo "($c1-$c0)/$tick" | bc -l) $(echo "$s1-$s0" | bc -l) $cached
  done; echo
done
i=0; for B in "$@"; do i=$((i+1)); umount $D/$i/m; done

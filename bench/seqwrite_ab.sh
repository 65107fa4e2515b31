#!/usr/bin/env bash
# Sequential write, 1 GiB in 1 MiB writes + fsync (fio, as fsbench's), on plain ext4,
# gocryptfs and two kmsfs builds mounted side by side, the four in turn, the order
# reversed every other round: MiB/s per round. Rounds follow one another within seconds,
# so the VM's slow and fast spells (bench/folios.sh) fall on all four.
# Usage: KMSFS_BIN=new/kmsfs KMSFS_OLD_BIN=old/kmsfs bench/seqwrite_ab.sh [ROUNDS] [DIR]
set -euo pipefail
ROUNDS=${1:-6}; D=${2:-/var/tmp/kmsfs-seqwrite}
NEW=${KMSFS_BIN:?}; OLD=${KMSFS_OLD_BIN:?}
cleanup() { for t in new old gocryptfs; do umount "$D/$t/mnt" 2>/dev/null || true; done; rm -rf "$D"; }
trap cleanup EXIT
cleanup; mkdir -p "$D/plain/mnt" "$D/gocryptfs/mnt" "$D/gocryptfs/back"
for t in new old; do
  B=$NEW; [ $t = old ] && B=$OLD
  mkdir -p "$D/$t/mnt"
  export KMSFS_SEAL=none KMSFS_KMS=local:$D/$t/ks KMSFS_KNOWN_TREES=$D/$t/kt.json
  "$B" init "$D/$t/back" >/dev/null 2>&1
  "$B" mount "$D/$t/back" "$D/$t/mnt" --log-file "$D/$t/log"
done
echo benchmark-password > "$D/gocryptfs/pw"
gocryptfs -q -init -passfile "$D/gocryptfs/pw" "$D/gocryptfs/back"
gocryptfs -q -nosyslog -passfile "$D/gocryptfs/pw" "$D/gocryptfs/back" "$D/gocryptfs/mnt"
declare -A R
order="plain gocryptfs new old"
for r in $(seq "$ROUNDS"); do
  for t in $order; do
    f=$D/$t/mnt/big
    rm -f "$f"; sync; sleep 2
    s=$(date +%s.%N)
    fio --name=w --filename="$f" --rw=write --bs=1M --size=1024M --ioengine=psync --end_fsync=1 --output-format=json >/dev/null
    e=$(date +%s.%N)
    R[$t]="${R[$t]:-} $(printf '%.0f' "$(echo "1024 / ($e - $s)" | bc -l)")"
    rm -f "$f"
  done
  order=$(echo $order | tr ' ' '\n' | tac | tr '\n' ' ')
done
echo "Sequential write 1 GiB (1 MiB writes + fsync), $ROUNDS rounds, $(date '+%Y-%m-%d %H:%M'); kmsfs new = $NEW, old = $OLD"
echo
echo "| target | MiB/s per round |"
echo "|---|---|"
for t in plain gocryptfs new old; do echo "| $t |${R[$t]} |"; done

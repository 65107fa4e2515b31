#!/usr/bin/env bash
# How the size of one write(2) into a new file on the backing filesystem changes what
# it costs (seconds for 1 GiB written into the page cache, no fsync), several rounds
# interleaved. On a VM whose free memory goes back to the hypervisor, large folios can
# cost a host fault per page. Usage: bench/folios.sh [DIR] [ROUNDS]
set -euo pipefail
DIR=${1:-/var/tmp}; ROUNDS=${2:-3}
F=$DIR/folios.$$; trap 'rm -f "$F"' EXIT
SIZES="64k 128k 256k 512k 1M 2M"
declare -A T
for r in $(seq "$ROUNDS"); do
  for bs in $SIZES; do
    rm -f "$F"; sync; sleep 2
    s=$(date +%s.%N)
    fio --name=w --filename="$F" --rw=write --bs="$bs" --size=1024M --ioengine=psync --output-format=json >/dev/null
    e=$(date +%s.%N)
    T[$bs]="${T[$bs]:-} $(printf '%.2f' "$(echo "$e - $s" | bc -l)")"
  done
done
echo "1 GiB written into a new file on $(df --output=fstype "$DIR" | tail -1) ($DIR), $ROUNDS rounds, $(date '+%Y-%m-%d %H:%M'), kernel $(uname -r)"
echo
echo "| write size | seconds per round |"
echo "|---|---|"
for bs in $SIZES; do echo "| $bs |${T[$bs]} |"; done

#!/usr/bin/env bash
# The store engines side by side on this machine, one run: CreateKey latency as the store
# grows (bench/store.rs), audited operations per second in-process (bench/kms_ops.rs) and
# through 1, 2 and 3 servers over HTTP (bench/kms_load.rs), SQLite vs PostgreSQL, and the
# failover figure (a server killed under load). Starts its own PostgreSQL (Debian's
# postgresql, initdb in a temp dir as nobody, a free loopback port), stopped at the end.
# Usage: bench/store.sh [SIZES...]   (default 1000 10000 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-1000 10000 100000}")
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d)
chmod 755 "$work"
mkdir "$work/data" "$work/sock"
echo "pw-$$" > "$work/password"
run() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown nobody:nogroup "$work/data" "$work/sock" "$work/password"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work" && run "$bin/initdb" -D "$work/data" -U kmsfs -A scram-sha-256 --pwfile "$work/password" >/dev/null)
(cd "$work" && run "$bin/pg_ctl" -D "$work/data" -w -l "$work/sock/log" \
    -o "-p $port -k $work/sock -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null)
trap '(cd "$work" && run "$bin/pg_ctl" -D "$work/data" -m fast stop >/dev/null); rm -rf "$work"' EXIT
# a fresh database (called in $(...), so named by the clock, not a counter)
newdb() {
    local db="b$(date +%s%N)"
    PGPASSWORD=$(cat "$work/password") "$bin/psql" -q -h 127.0.0.1 -p "$port" -U kmsfs -d postgres \
        -c "CREATE DATABASE $db" >/dev/null
    echo "postgres://kmsfs@127.0.0.1:$port/$db"
}
export KMSFS_STORE_PASSWORD_FILE="$work/password" KMSFS_SEAL=none
cargo build --release --quiet
echo "# $(date -u +%FT%TZ) $(nproc) cores; PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on this machine's disk (fsync on)"
echo "## CreateKey latency as the store grows"
KMSFS_STORE= cargo bench --quiet --bench store -- ${sizes[*]} 2>/dev/null
KMSFS_STORE=$(newdb) cargo bench --quiet --bench store -- ${sizes[*]} 2>/dev/null
echo "## audited operations per second, in-process (16 threads)"
echo "sqlite:";     KMSFS_STORE= cargo bench --quiet --bench kms_ops -- 16 3 2>/dev/null
echo "postgresql:"; KMSFS_STORE=$(newdb) cargo bench --quiet --bench kms_ops -- 16 3 2>/dev/null
echo "## through the servers over HTTP (32 client threads)"
KMSFS_STORE= cargo bench --quiet --bench kms_load -- 32 5 1 2>/dev/null | grep -v "audit log OK"
for n in 1 2 3; do
    KMSFS_STORE=$(newdb) cargo bench --quiet --bench kms_load -- 32 6 "$n" 2>/dev/null
done

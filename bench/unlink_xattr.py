#!/usr/bin/env python3
"""What a kmsfs header costs an unlink on the backing filesystem itself, without FUSE:
N files of 4,124 bytes (a 4 KiB file's sealed size) in 100 directories, with and without
two xattrs the size of kmsfs's (a 247-byte header, a 36-byte authentication), each file's
values unique as kmsfs's are (ext4 shares a block between equal xattr sets, which would
hide the cost). Files are read back cold first (as fsbench's read step does), then
unlinked; the table gives microseconds per unlink.

Usage (root, drops caches): bench/unlink_xattr.py DIR [N] [ROUNDS]   (default 5000, 3)
DIR must be on the filesystem to measure; it is created and removed.
"""
import os
import shutil
import subprocess
import sys
import time

D = os.path.join(sys.argv[1], "unlink-xattr")
N = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def make(xattrs):
    shutil.rmtree(D, ignore_errors=True)
    os.makedirs(D)
    for i in range(100):
        os.mkdir(f"{D}/{i}")
    names = [f"{D}/{i % 100}/f{i}" for i in range(N)]
    payload = os.urandom(4124)
    for n in names:
        fd = os.open(n, os.O_CREAT | os.O_WRONLY, 0o600)
        if xattrs:
            os.setxattr(fd, "user.kmsfs.header", os.urandom(247))
            os.setxattr(fd, "user.kmsfs.auth", os.urandom(36))
        os.write(fd, payload)
        os.close(fd)
    drop_caches()
    for n in names:
        fd = os.open(n, os.O_RDONLY)
        if xattrs:
            os.getxattr(fd, "user.kmsfs.header")
        os.pread(fd, 8192, 0)
        os.close(fd)
    return names


def main():
    rows = []
    for _ in range(ROUNDS):
        row = []
        for xattrs in (False, True):
            names = make(xattrs)
            start = time.time()
            for n in names:
                os.unlink(n)
            row.append((time.time() - start) / N * 1e6)
        rows.append(row)
    shutil.rmtree(D, ignore_errors=True)
    fs = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "-T", sys.argv[1]],
                        capture_output=True, text=True).stdout.strip()
    print(f"{N} files, {ROUNDS} rounds, in {sys.argv[1]} ({fs})\n")
    print("| round | no xattr (µs per unlink) | header + auth xattrs | difference |")
    print("|---|---|---|---|")
    for i, (a, b) in enumerate(rows, 1):
        print(f"| {i} | {a:.0f} | {b:.0f} | +{b - a:.0f} |")


if __name__ == "__main__":
    main()

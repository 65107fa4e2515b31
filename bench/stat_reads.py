#!/usr/bin/env python3
"""A cold stat and what it reads from the disk: 5,000 files of 4 KiB created round-robin
in 100 directories of a mount (as fsbench's small files), synced, caches dropped, each
stat'ed once; prints files/s for the create and the stat, the disk reads (vda, from
/proc/diskstats) during the stat, and how the backing inodes lie (inode-table blocks
touched per directory, 16 inodes a block). Usage (root): bench/stat_reads.py MOUNT BACKING TAG
— a fresh, empty mount of a fresh tree each time (bench/results/2026-12-06-stat-reads.md).
"""
mnt, back, tag = sys.argv[1], sys.argv[2], sys.argv[3]
d = mnt + "/small"; os.mkdir(d)
for i in range(100): os.mkdir(f"{d}/{i}")
p = os.urandom(4096)
names = [f"{d}/{i%100}/f{i}" for i in range(5000)]
t = time.time()
for n in names:
    with open(n, "wb") as f: f.write(p)
os.sync()
cr = 5000 / (time.time() - t)
def reads():
    for l in open("/proc/diskstats"):
        x = l.split()
        if x[2] == "vda": return int(x[3]), int(x[5])
open("/proc/sys/vm/drop_caches", "w").write("3\n")
r0 = reads(); t = time.time()
for n in names: os.stat(n)
st = 5000 / (time.time() - t); r1 = reads()
# backing inode layout: distinct inode-table blocks per directory (16 inodes per block)
blocks = 0; inos = []
for root, dirs, files in os.walk(back):
    if root == back: continue
    fl = [f for f in files if not f.startswith("gocryptfs")]
    if len(fl) < 10: continue
    ii = [os.lstat(os.path.join(root, f)).st_ino for f in fl]
    inos += ii
    blocks += len({(i - 1) // 16 for i in ii})
print(f"{tag}: create {cr:.0f}/s stat {st:.0f}/s, disk reads {r1[0]-r0[0]} ({(r1[1]-r0[1])//2} KiB), inode-table blocks over dirs {blocks}, ino span {max(inos)-min(inos)}")

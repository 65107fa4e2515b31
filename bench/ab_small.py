"""A/B of two kmsfs binaries on small files: both mounted at once, rounds alternating
which goes first; create/stat/read/unlink of 5000 4 KB files per round (root; cold
stat after drop_caches). Usage: python3 bench/ab_small.py OLD_BIN NEW_BIN"""
import os as _os
_os.environ.setdefault("KMSFS_SEAL", "none")  # benchmarks measure the filesystem, not the seal
import os, subprocess, time, shutil, statistics
D="/var/tmp/kmsfs-ab2"; shutil.rmtree(D, ignore_errors=True); os.makedirs(D)
env=dict(os.environ, KMSFS_KNOWN_TREES=D+"/known.json")
import sys
bins={"old":sys.argv[1],"new":sys.argv[2]}
for v,b in bins.items():
    os.makedirs(f"{D}/{v}/b"); os.makedirs(f"{D}/{v}/m")
    e=dict(env, KMSFS_KMS=f"local:{D}/{v}/ks")
    subprocess.run([b,"init",f"{D}/{v}/b"],env=e,check=True,capture_output=True)
    subprocess.run([b,"mount",f"{D}/{v}/b",f"{D}/{v}/m"],env=e,check=True)
N=5000; res={(v,p):[] for v in bins for p in ("create","stat","read","unlink")}
data=os.urandom(4000)
def phase(v):
    d=f"{D}/{v}/m/w"; os.mkdir(d)
    t=time.perf_counter()
    for i in range(N):
        with open(f"{d}/f{i}","wb") as f: f.write(data)
    res[(v,"create")].append(N/(time.perf_counter()-t))
    subprocess.run(["sh","-c","sync; echo 3 > /proc/sys/vm/drop_caches"])
    t=time.perf_counter()
    for i in range(N): os.stat(f"{d}/f{i}")
    res[(v,"stat")].append(N/(time.perf_counter()-t))
    t=time.perf_counter()
    for i in range(N):
        with open(f"{d}/f{i}","rb") as f: f.read()
    res[(v,"read")].append(N/(time.perf_counter()-t))
    t=time.perf_counter()
    for i in range(N): os.unlink(f"{d}/f{i}")
    res[(v,"unlink")].append(N/(time.perf_counter()-t))
    os.rmdir(d)
for r in range(6):
    for v in (["old","new"] if r%2==0 else ["new","old"]): phase(v)
for p in ("create","stat","read","unlink"):
    o=statistics.median(res[("old",p)]); n=statistics.median(res[("new",p)])
    print(f"{p:7} old {o:9.0f}/s new {n:9.0f}/s new/old {n/o:.3f}   old {[round(x) for x in res[('old',p)]]} new {[round(x) for x in res[('new',p)]]}")
for v in bins: subprocess.run(["umount",f"{D}/{v}/m"])

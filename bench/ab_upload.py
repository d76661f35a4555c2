"""A/B of two builds of Cascade: the same 2 GiB upload (MP4 header + random bytes) through each,
alternating, RUNS times (default 3). The first build is taken to be one without accounts (no
credential is sent) unless OLD_AUTH=1, the second one with them (an admin and an API token are
made first).

    python3 bench/ab_upload.py OLD_BINARY NEW_BINARY

Used for #17: a build of 749607e (before accounts and the hardened upload path) against HEAD,
and 372c7cf (the first bounded body) against HEAD (OLD_AUTH=1).
Results: bench/results/2026-12-01-upload-ab.md."""
import os, subprocess, sys, tempfile, time, urllib.request, socket, shutil, statistics
OLD, NEW = sys.argv[1], sys.argv[2]
work = tempfile.mkdtemp(prefix="ab-")
big = os.path.join(work, "big.mp4")
size = 2048 << 20
with open(big, "wb") as f:
    f.write(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + (size - 24).to_bytes(4, "big") + b"mdat")
    block = os.urandom(64 << 20)
    left = size - 32
    while left:
        n = min(left, len(block)); f.write(block[:n]); left -= n
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def run(binary, auth):
    data = tempfile.mkdtemp(dir=work)
    hdr = []
    if auth:
        subprocess.run([binary, "user", "add", "ab", "--admin", "--password-stdin", "--data-dir", data], input="ab password 12\n", text=True, check=True, capture_output=True)
        tok = subprocess.run([binary, "token", "create", "ab", "--data-dir", data], capture_output=True, text=True, check=True).stdout.strip()
        hdr = ["-H", f"Authorization: Bearer {tok}"]
    p = port()
    env = dict(os.environ, CASCADE_BIND=f"127.0.0.1:{p}", CASCADE_RTMP_BIND="127.0.0.1:0", CASCADE_SRT_BIND="off", CASCADE_DATA_DIR=data, CASCADE_MIN_FREE_BYTES="0", CASCADE_LOG="warn",
               CASCADE_MAX_UPLOAD_BYTES=str(8 << 30))
    srv = subprocess.Popen([binary, "serve"], env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{p}/healthz", timeout=1); break
        except OSError:
            time.sleep(0.05)
    os.sync()
    t0 = time.monotonic()
    out = subprocess.run(["curl", "-sS", "-f", *hdr, "-F", f"file=@{big}", f"http://127.0.0.1:{p}/api/videos"], capture_output=True, text=True)
    dt = time.monotonic() - t0
    srv.terminate(); srv.wait(timeout=30)
    shutil.rmtree(data, ignore_errors=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return size / 1e6 / dt
old, new = [], []
for r in range(int(os.environ.get("RUNS", "3"))):
    old.append(run(OLD, os.environ.get("OLD_AUTH") == "1")); new.append(run(NEW, True))
    print(f"run {r}: old {old[-1]:.0f} MB/s, new (with a token) {new[-1]:.0f} MB/s", flush=True)
print(f"median: old {statistics.median(old):.0f} MB/s, new {statistics.median(new):.0f} MB/s, ratio x{statistics.median(new)/statistics.median(old):.2f}")
shutil.rmtree(work, ignore_errors=True)

"""Resumable uploads with tuspy, the tus project's Python client, against a real Cascade server:
a 512 MiB upload whose client is killed halfway (once the server holds half) and resumed, then one whose *server* is killed
(SIGKILL) halfway, restarted and resumed. Each time the server's file must be byte-identical to
the one sent, and the bytes the server received in all may exceed the file by one chunk at most
(what was in flight when the cut came).

Run by tests/tus/run.sh: python3 resume.py BIN WORKDIR. Prints `ok - …` per scenario; exits 1 on a
failure. Every wait is bounded.
"""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tusclient import client as tus_client
from tusclient.storage import filestorage

SIZE = 512 << 20
CHUNK = 32 << 20
PASSWORD = "tus password 1"


def log(*a):
    print(*a, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait(what, cond, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


class Server:
    def __init__(self, bin_, data, port, logfile):
        self.bin, self.data, self.port, self.logfile = bin_, data, port, logfile
        self.p = None

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self):
        env = dict(os.environ, CASCADE_BIND=f"127.0.0.1:{self.port}", CASCADE_RTMP_BIND="127.0.0.1:0", CASCADE_SRT_BIND="off", CASCADE_DATA_DIR=self.data,
                   CASCADE_MIN_FREE_BYTES="0", CASCADE_LOG="info,warp=warn")
        self.p = subprocess.Popen([self.bin, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=open(self.logfile, "a"))

        def healthy():
            try:
                return urllib.request.urlopen(self.url("/healthz"), timeout=2).status == 200
            except OSError:
                return False
        wait("the server to answer", healthy, 60)

    def kill9(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=30)

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()


def head_offset(url, token):
    req = urllib.request.Request(url, method="HEAD", headers={"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"})
    try:
        return int(urllib.request.urlopen(req, timeout=10).headers["Upload-Offset"])
    except OSError:
        return None


def stored_url(storage):
    try:
        with open(storage) as f:
            rows = list(json.load(f).get("_default", {}).values())
        return rows[0]["url"] if rows else None
    except (OSError, ValueError):
        return None


def uploader(url, token, path, storage):
    c = tus_client.TusClient(url, headers={"Authorization": f"Bearer {token}"})
    # Retries as every tus client makes them (tus-js-client by default): after an error, ask the
    # server its offset again and go on from there. A resume can race the server still ending
    # the cut chunk (409: the offset moved, or 423: that chunk still holds the upload).
    return c.uploader(path, chunk_size=CHUNK, metadata={"filename": "big.mp4", "title": "tuspy"},
                      store_url=True, url_storage=filestorage.FileStorage(storage), retries=5, retry_delay=1)


def received_by_server(logfile, vid):
    total = 0
    for line in open(logfile, errors="replace"):
        if "chunk received" in line and f"video_id={vid}" in line:
            total += int(re.search(r"received=(\d+)", line).group(1))
    return total


def start_client(server, token, path, storage):
    """The upload in another process, so that it can be killed like a closed laptop."""
    code = ("import sys; sys.path.insert(0, %r); import resume; "
            "resume.uploader(%r, %r, %r, %r).upload()") % (os.path.dirname(__file__), server.url("/api/uploads"), token, path, storage)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def check_file(server, vid, digest):
    source = os.path.join(server.data, "uploads", vid, "source")
    h = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    assert h.hexdigest() == digest, "the server's file differs from the one sent"


def cut_and_resume(bin_, work, path, digest, kill_server):
    name = "server killed" if kill_server else "client killed"
    data = os.path.join(work, f"data-{kill_server}")
    os.makedirs(data)
    logfile = os.path.join(work, f"server-{kill_server}.log")
    add = subprocess.run([bin_, "user", "add", "tus", "--password-stdin", "--data-dir", data], input=PASSWORD + "\n",
                         capture_output=True, text=True, timeout=60)
    assert add.returncode == 0, add.stderr
    token = subprocess.run([bin_, "token", "create", "tus", "--data-dir", data], capture_output=True, text=True,
                           timeout=60, check=True).stdout.strip()
    server = Server(bin_, data, free_port(), logfile)
    storage = os.path.join(work, f"urls-{kill_server}.json")
    child = None
    try:
        server.start()
        child = start_client(server, token, path, storage)
        url = wait("the client to create its upload", lambda: stored_url(storage), 60)
        vid = url.rstrip("/").rsplit("/", 1)[1]
        wait("half of the file on the server", lambda: (head_offset(url, token) or 0) >= SIZE // 2, 120)
        if kill_server:
            server.kill9()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if kill_server:
            on_disk = os.path.getsize(os.path.join(data, "uploads", vid, "source.part"))
            server.start()
            offset = head_offset(url, token)
            assert offset is not None and 0 < offset <= on_disk, f"HEAD says {offset}, the disk holds {on_disk}"
        resumed = uploader(server.url("/api/uploads"), token, path, storage)
        assert resumed.url == url and resumed.offset > 0, f"did not resume: {resumed.url} at {resumed.offset}"
        start = resumed.offset
        resumed.upload()
        assert head_offset(url, token) is None, "the finished upload still answers HEAD"
        check_file(server, vid, digest)
        received = received_by_server(logfile, vid)
        assert SIZE <= received <= SIZE + CHUNK, f"the server received {received} bytes for a {SIZE}-byte file"
        log(f"ok - tuspy, {name} at {start * 100 // SIZE} %: resumed, byte-identical, {received - SIZE} bytes sent twice")
        return True
    except Exception as e:  # an assertion, or the client giving up: the next scenario still runs
        log(f"not ok - tuspy, {name}: {type(e).__name__}: {e}")
        return False
    finally:
        if child and child.poll() is None:
            child.kill()
        server.stop()


def main():
    bin_, work = sys.argv[1], sys.argv[2]
    path = os.path.join(work, "big.mp4")
    h = hashlib.sha256()
    with open(path, "wb") as f:
        # An MP4 (ftyp, then an mdat to the end) so the server accepts it; random bytes after.
        head = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + (SIZE - 24).to_bytes(4, "big") + b"mdat"
        f.write(head)
        h.update(head)
        left = SIZE - len(head)
        while left:
            block = os.urandom(min(left, 8 << 20))
            f.write(block)
            h.update(block)
            left -= len(block)
    digest = h.hexdigest()
    results = [cut_and_resume(bin_, work, path, digest, kill) for kill in (False, True)]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Cascade benchmarks, side by side with what users would otherwise run, in one run.

Prints one Markdown table (median of BENCH_RUNS alternating runs, ratio to the baseline measured in
the same run) and writes it as Markdown and JSON under bench/results/. Not a test: nothing here
asserts a time. Run through bench/run.sh, which installs the tools and builds the release binary.

Environment: BENCH_RUNS (3), BENCH_SECONDS (60, source length), BENCH_UPLOAD_MB (2048),
BENCH_SKIP (comma list of: ladder,ttfp,noisy,pair,stream,upload,serve,metrics,live,lowlatency,uploadparts,scaled,storage), BENCH_LIVE_SECONDS (75,
length of each live broadcast), BENCH_LL_SECONDS (120, playback per low-latency player).
"""
import collections
import concurrent.futures
import datetime
import http.server
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "cascade")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "60"))
UPLOAD_MB = int(os.environ.get("BENCH_UPLOAD_MB", "2048"))
SKIP = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))
LADDER = tomllib.load(open(os.path.join(ROOT, "pipelines", "ladder.toml"), "rb"))
rows = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def timed(cmd, timeout=900, **kw):
    """Runs a command; returns (wall s, cpu s of it and its children, peak RSS MiB)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    deadline = t0 + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            raise RuntimeError(f"timeout: {cmd[:3]}")
        time.sleep(0.02)
    wall = time.monotonic() - t0
    if status != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {p.stderr.read().decode()[-2000:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


TARGET_TEXT = {"ratio_max": "≤ ×{v:.2f}", "ratio_min": "≥ ×{v:.2f}", "abs_max": "≤ {v:g} {unit}",
               "ratio_within": "×1 ± {p:.0f} %", "diff_min": "≥ baseline {v:+g} {unit}", "diff_max": "≤ baseline {v:+g} {unit}"}


def meets(target, cascade, baseline, ratio):
    kind, v = target
    return {"ratio_max": ratio <= v, "ratio_min": ratio >= v, "abs_max": cascade <= v,
            "ratio_within": abs(ratio - 1) <= v, "diff_min": cascade - baseline >= v, "diff_max": cascade - baseline <= v}[kind]


def row(section, metric, cascade, baseline, unit, baseline_name, better="lower", target=None):
    """One table row; `target` = (kind, value) is the goal the row is checked against (issue #8)."""
    ratio = cascade / baseline if baseline else float("nan")
    met = meets(target, cascade, baseline, ratio) if target else None
    goal = TARGET_TEXT[target[0]].format(v=target[1], p=target[1] * 100, unit=unit) if target else ""
    rows.append(dict(section=section, metric=metric, cascade=cascade, baseline=baseline, unit=unit,
                     baseline_name=baseline_name, ratio=ratio, better=better, target=goal, met=met))
    log(f"  {metric}: cascade {cascade:.3f} {unit} vs {baseline_name} {baseline:.3f} {unit} (×{ratio:.2f})"
        + (f" target {goal}: {'met' if met else 'NOT met'}" if target else ""))


def make_source(work):
    src = os.path.join(work, "source.mp4")
    log(f"generating a {SECONDS} s 1920x1080p30 source with motion and audio")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS),
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "16", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-b:a", "160k", src], check=True, timeout=900)
    return src


def ffmpeg_ladder_cmd(src, out):
    """The plain one-command ffmpeg ladder a user would write: split + var_stream_map HLS."""
    rungs = LADDER["rung"]
    v = LADDER["video"]
    a = LADDER["audio"]
    gop = LADDER["segment_seconds"] * 30
    n = len(rungs)
    graph = f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n))
    for i, r in enumerate(rungs):
        h = r["height"]
        w = round(1920 * h / 1080 / 2) * 2
        graph += f";[s{i}]scale={w}:{h}[v{i}]"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", src, "-filter_complex", graph]
    for i in range(n):
        cmd += ["-map", f"[v{i}]"]
    for i in range(n):
        cmd += ["-map", "0:a:0"]
    cmd += ["-c:v", "libx264", "-preset", v["preset"], "-profile:v", v["profile"], "-bf", str(v["bframes"]),
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    for i, r in enumerate(rungs):
        k = r["bitrate_kbps"]
        cmd += [f"-b:v:{i}", f"{k}k", f"-maxrate:v:{i}", f"{k}k", f"-bufsize:v:{i}", f"{k * 6 // 10}k"]
    cmd += ["-c:a", "aac", "-b:a", f"{a['bitrate_kbps']}k", "-ac", str(a["channels"]), "-ar", str(a["sample_rate"]),
            "-f", "hls", "-hls_time", str(LADDER["segment_seconds"]), "-hls_playlist_type", "vod",
            "-hls_segment_filename", os.path.join(out, "v%v", "seg%05d.ts"),
            "-var_stream_map", " ".join(f"v:{i},a:{i}" for i in range(n)),
            "-master_pl_name", "master.m3u8", os.path.join(out, "v%v", "index.m3u8")]
    return cmd


def video_kbps(playlist, extra=()):
    """Bit rate of the H.264 bitstream of a rendition (packet sizes summed by ffprobe over the
    playlist), so that container overhead (MPEG-TS muxers differ: ~47 kb/s here) and the
    encryption padding do not count as encoder rate."""
    out = subprocess.run(["ffprobe", "-v", "error", *extra, "-select_streams", "v:0", "-show_entries",
                          "packet=size,pts_time", "-of", "csv=p=0", playlist], capture_output=True, text=True, timeout=600)
    sizes, times = [], []
    for line in out.stdout.split("\n"):
        parts = [x for x in line.strip().split(",") if x]  # "pts_time,size," (+ side-data lines)
        if len(parts) >= 2 and parts[0] != "N/A":
            times.append(float(parts[0]))
            sizes.append(int(parts[1]))
    if len(sizes) < 2:
        return float("nan")
    duration = (max(times) - min(times)) * len(sizes) / (len(sizes) - 1)
    return sum(sizes) * 8 / duration / 1000


def psnr(playlist, src, w, h, extra=(), up=False):
    """PSNR of a rendition (first 20 s) against the source: the source downscaled to the rung's size
    with ffmpeg's bicubic, or (up=True) the rung upscaled to the source's size with the same
    bicubic for both back ends, which favours neither scaler."""
    # Frames are paired by index: psnr pairs by timestamp, and MPEG-TS's 90 kHz rounding (±1 tick
    # after x264enc's 1000 h offset) would pair a frame with its predecessor.
    if up:
        graph = "[0:v]settb=1/30,setpts=N,scale=1920:1080:flags=bicubic[d];[1:v]settb=1/30,setpts=N[ref];[d][ref]psnr"
    else:
        graph = f"[0:v]settb=1/30,setpts=N[d];[1:v]settb=1/30,setpts=N,scale={w}:{h}:flags=bicubic[ref];[d][ref]psnr"
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "info", *extra, "-i", playlist, "-i", src, "-t", "20", "-lavfi", graph,
                          "-f", "null", "-"], capture_output=True, text=True, timeout=600)
    m = re.search(r"PSNR .*average:([0-9.]+|inf)", out.stderr)
    return float(m.group(1)) if m else float("nan")


def bench_ladder(src, work):
    log("== ladder throughput")
    results = {"gst": [], "ffb": [], "ff": []}
    outs = {}
    for run in range(RUNS):
        for name in ["gst", "ff", "ffb"]:
            out = os.path.join(work, f"{name}{run}")
            shutil.rmtree(out, ignore_errors=True)
            if name == "ff":
                for i in range(len(LADDER["rung"])):
                    os.makedirs(os.path.join(out, f"v{i}"), exist_ok=True)
                cmd = ffmpeg_ladder_cmd(src, out)
            else:
                cmd = [BIN, "transcode", src, "--out", out, "--backend", "gstreamer" if name == "gst" else "ffmpeg"]
            r = timed(cmd, env=dict(os.environ, CASCADE_LOG="warn"))
            log(f"  run {run} {name}: wall {r[0]:.1f} s cpu {r[1]:.1f} s rss {r[2]:.0f} MiB")
            results[name].append(r)
            outs[name] = out
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in results.items()}
    row("ladder", "wall time, GStreamer back end", med["gst"][0], med["ff"][0], "s", "ffmpeg command", target=("ratio_max", 0.9))
    row("ladder", "CPU time, GStreamer back end", med["gst"][1], med["ff"][1], "s", "ffmpeg command")
    row("ladder", "wall time, FFmpeg back end", med["ffb"][0], med["ff"][0], "s", "ffmpeg command")
    row("ladder", "peak RSS, 1080p 4-rung transcode", med["gst"][2], med["ff"][2], "MiB", "ffmpeg command")
    # Comparable output: bitrate and PSNR per rung (first 20 s), from the last run of each.
    for i, r in enumerate(LADDER["rung"]):
        h = r["height"]
        w = round(1920 * h / 1080 / 2) * 2
        c_dir = os.path.join(outs["gst"], "hls", r["name"])
        f_dir = os.path.join(outs["ff"], f"v{i}")
        c_pl, f_pl = os.path.join(c_dir, "index.m3u8"), os.path.join(f_dir, "index.m3u8")
        ext = ("-allowed_extensions", "ALL")
        row("quality", f"{r['name']} video bitrate", video_kbps(c_pl, ext), video_kbps(f_pl), "kb/s", "ffmpeg command", "equal",
            target=("ratio_within", 0.05))
        # Neutral: each rung upscaled back to the source size with the same filter, against the source.
        row("quality", f"{r['name']} PSNR vs source (rung upscaled)", psnr(c_pl, src, w, h, ext, up=True), psnr(f_pl, src, w, h, up=True),
            "dB", "ffmpeg command", "higher", target=("diff_min", -0.5))
        # Against the source downscaled with ffmpeg's own bicubic: the baseline's scaler, so it favours ffmpeg.
        row("quality", f"{r['name']} PSNR vs bicubic-downscaled source", psnr(c_pl, src, w, h, ext), psnr(f_pl, src, w, h),
            "dB", "ffmpeg command", "higher")


class Server:
    def __init__(self, work, data=None, **env):
        self.port = free_port()
        self.data = data or tempfile.mkdtemp(dir=work)
        os.chmod(self.data, 0o755)
        # An admin and an API token, made before the server opens the database (the same one:
        # CASCADE_DATABASE_URL goes to the commands too).
        cli_env = dict(os.environ, **{k: v for k, v in env.items() if k == "CASCADE_DATABASE_URL"})
        add = subprocess.run([BIN, "user", "add", "bench", "--admin", "--password-stdin", "--data-dir", self.data],
                             input="bench password 1\n", capture_output=True, text=True, timeout=60, env=cli_env)
        if add.returncode and "is taken" not in add.stderr:
            raise RuntimeError(add.stderr)
        self.token = subprocess.run([BIN, "token", "create", "bench", "--data-dir", self.data],
                                    capture_output=True, text=True, timeout=60, check=True, env=cli_env).stdout.strip()
        self.auth = ["-H", f"Authorization: Bearer {self.token}"]
        e = dict(os.environ, CASCADE_BIND=f"127.0.0.1:{self.port}", CASCADE_RTMP_BIND="127.0.0.1:0", CASCADE_SRT_BIND="off", CASCADE_DATA_DIR=self.data,
                 CASCADE_PUBLIC_URL=f"http://127.0.0.1:{self.port}", CASCADE_MIN_FREE_BYTES="0", CASCADE_LOG="warn")
        e.update(env)
        self.log = open(os.path.join(work, f"server{self.port}.log"), "w")
        self.p = subprocess.Popen([BIN, "serve"], cwd=ROOT, env=e, stdout=self.log, stderr=self.log)
        for _ in range(200):
            try:
                urllib.request.urlopen(self.url("/healthz"), timeout=1)
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, path, method="GET"):
        return urllib.request.Request(self.url(path), method=method, headers={"Authorization": f"Bearer {self.token}"})

    def get(self, path):
        return json.load(urllib.request.urlopen(self.request(path), timeout=10))

    def post_json(self, path, body):
        req = urllib.request.Request(self.url(path), method="POST", data=json.dumps(body).encode(), headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        return json.load(urllib.request.urlopen(req, timeout=30))

    def text(self, url):
        return urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"}),
                                      timeout=10).read().decode()

    def cpu_s(self):
        """CPU seconds (user + system) the server has used so far."""
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def login(self):
        """Logs in as the bench admin; returns the curl headers of that session."""
        req = urllib.request.Request(self.url("/api/session"), method="POST", data=json.dumps(
            {"username": "bench", "password": "bench password 1"}).encode(), headers={"Content-Type": "application/json"})
        cookie = urllib.request.urlopen(req, timeout=30).headers["Set-Cookie"].split(";")[0]
        return ["-H", f"Cookie: {cookie}", "-H", f"Origin: {self.url('')}"]

    def upload(self, path, auth=None):
        out = subprocess.run(["curl", "-sS", "-f", *(auth or self.auth), "-F", f"file=@{path}", self.url("/api/videos")],
                             capture_output=True, text=True, timeout=1200)
        if out.returncode:
            raise RuntimeError(out.stderr)
        return json.loads(out.stdout)

    def tus_create(self, size):
        req = urllib.request.Request(self.url("/api/uploads"), method="POST", headers={
            "Authorization": f"Bearer {self.token}", "Tus-Resumable": "1.0.0", "Upload-Length": str(size)})
        return self.url(urllib.request.urlopen(req, timeout=30).headers["Location"].replace(self.url(""), ""))

    def tus_offset(self, url):
        req = urllib.request.Request(url, method="HEAD", headers={"Authorization": f"Bearer {self.token}", "Tus-Resumable": "1.0.0"})
        try:
            return int(urllib.request.urlopen(req, timeout=30).headers["Upload-Offset"])
        except urllib.error.HTTPError:
            return None

    def tus_patch(self, url, path, offset, sent=None, conn_box=None):
        """One PATCH of the file from `offset` to its end (http.client, 1 MiB blocks); `sent`
        counts the bytes handed to the socket, `conn_box` receives the connection (to cut it)."""
        import http.client
        size = os.path.getsize(path)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600, blocksize=1 << 20)
        if conn_box is not None:
            conn_box.append(conn)

        class Counting:
            def __init__(self, f):
                self.f = f

            def read(self, n=-1):
                b = self.f.read(n)
                if sent is not None:
                    sent[0] += len(b)
                return b
        with open(path, "rb") as f:
            f.seek(offset)
            conn.request("PATCH", url.replace(self.url(""), ""), body=Counting(f), headers={
                "Authorization": f"Bearer {self.token}", "Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream", "Content-Length": str(size - offset)})
            r = conn.getresponse()
            r.read()
        conn.close()
        if r.status != 204:
            raise RuntimeError(f"PATCH: {r.status}")

    def peak_rss_mib(self):
        return status_mib(self.p.pid, "VmHWM")

    def stop(self, keep_data=False):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
        if not keep_data:
            shutil.rmtree(self.data, ignore_errors=True)


def timed_together(cmds, timeout=1800, **kw):
    """Runs commands at the same time; returns (wall s until the last ends, cpu s of all)."""
    t0 = time.monotonic()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw) for c in cmds]
    cpu, left = 0.0, {p.pid: p for p in procs}
    while left:
        if time.monotonic() > t0 + timeout:
            for p in left.values():
                p.kill()
            raise RuntimeError("timeout: concurrent ladders")
        pid, status, ru = os.wait4(-1, os.WNOHANG)
        if not pid:
            time.sleep(0.02)
            continue
        p = left.pop(pid, None)
        if p is None:
            continue
        if status != 0:
            raise RuntimeError(f"{p.args[:3]} failed: {p.stderr.read().decode()[-2000:]}")
        cpu += ru.ru_utime + ru.ru_stime
    return time.monotonic() - t0, cpu


def bench_pair(src, work):
    """#18: two 60 s ladders at once against one after the other, Cascade's GStreamer back end
    and the plain ffmpeg command; what a second worker gives on this machine's cores."""
    log(f"== two ladders at once ({os.cpu_count()} cores)")
    res = {k: [] for k in ["gst together", "gst in turn", "ff together", "ff in turn"]}

    def cmds(name, run):
        out = []
        for j in range(2):
            o = os.path.join(work, f"pair-{name}{run}{j}")
            shutil.rmtree(o, ignore_errors=True)
            if name == "ff":
                for i in range(len(LADDER["rung"])):
                    os.makedirs(os.path.join(o, f"v{i}"), exist_ok=True)
                out.append(ffmpeg_ladder_cmd(src, o))
            else:
                out.append([BIN, "transcode", src, "--out", o, "--backend", "gstreamer"])
        return out

    env = dict(os.environ, CASCADE_LOG="warn")
    for run in range(RUNS):
        for name in ["gst", "ff"]:
            res[f"{name} together"].append(timed_together(cmds(name, run), env=env))
            a, b = cmds(name, run)
            one, two = timed(a, env=env), timed(b, env=env)
            res[f"{name} in turn"].append((one[0] + two[0], one[1] + two[1]))
            log(f"  run {run} {name}: together {res[f'{name} together'][-1][0]:.1f} s, in turn {res[f'{name} in turn'][-1][0]:.1f} s")
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in res.items()}
    row("pair", "two 60 s ladders at once: total wall, GStreamer back end", med["gst together"][0], med["ff together"][0], "s",
        "two ffmpeg commands at once")
    row("pair", "two 60 s ladders at once: total CPU, GStreamer back end", med["gst together"][1], med["ff together"][1], "s",
        "two ffmpeg commands at once")
    row("pair", "Cascade: two at once vs one after the other (total wall)", med["gst together"][0], med["gst in turn"][0], "s",
        "the same two, one after the other")
    row("pair", "ffmpeg: two at once vs one after the other (total wall)", med["ff together"][0], med["ff in turn"][0], "s",
        "the same two, one after the other")


def make_noisy_source(work):
    """Issue #18's hard case: 30 s of 1080p30 with film-grain-like noise (a new noise field every
    frame), at 8 Mb/s, as phones and cameras produce."""
    src = os.path.join(work, "noisy.mp4")
    log("generating a 30 s 1920x1080p30 source with heavy temporal noise at 8 Mb/s")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "30",
                    "-vf", "noise=alls=12:allf=t", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "8M", "-maxrate", "8M",
                    "-bufsize", "16M", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "160k", src],
                   check=True, timeout=900)
    return src


# The job's trace: log lines of one upload, in order, from "upload complete" to "recorded playable".
TRACE_EVENTS = [("probed", "probed"), ("pipeline playing", "GStreamer pipeline playing"),
                ("first frame encoded (last rung)", "first frame encoded"), ("first segment (last track)", "first segment"),
                ("manifests published", "playable: every track"), ("record says playable", "recorded playable")]
LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def job_trace(log_path, video_id):
    """Seconds from the upload's "upload complete" line to the last line of each trace event
    before "recorded playable". One upload runs at a time, so the lines in between are its own
    (GStreamer's threads log without the job's span)."""
    t0, last = None, {}
    with open(log_path, errors="replace") as f:
        for line in f:
            m = LOG_TS.match(line)
            if not m:
                continue
            t = datetime.datetime.fromisoformat(m.group(1)[:26]).timestamp()
            if t0 is None:
                if "upload complete" in line and video_id in line:
                    t0 = t
                continue
            for name, text in TRACE_EVENTS:
                if text in line:
                    last[name] = t
            if "recorded playable" in line:
                break
    return {name: last[name] - t0 for name, _ in TRACE_EVENTS if t0 is not None and name in last}


def bench_ttfp(src, work):
    """Upload end → playable, on the clean source and on a noisy one, three alternating runs each,
    against a plain ffmpeg ladder's first segment of every rung; with the job's trace (#18)."""
    sources = [("clean", src)]
    if "noisy" not in SKIP:
        sources.append(("noisy", make_noisy_source(work)))
    log("== time to first playable")
    cascade = {k: [] for k, _ in sources}
    plain = {k: [] for k, _ in sources}
    traces = {k: [] for k, _ in sources}
    server = Server(work, CASCADE_LOG="info")
    try:
        for run in range(RUNS):
            for kind, path in sources:
                v = server.upload(path)
                t_end = time.monotonic()
                vid = v["id"]
                while True:
                    rec = server.get(f"/api/videos/{vid}")
                    if rec["playable"] or rec["status"] in ("ready", "failed"):
                        break
                    time.sleep(0.02)
                cascade[kind].append(time.monotonic() - t_end)
                req = server.request(f"/api/videos/{vid}", method="DELETE")
                urllib.request.urlopen(req, timeout=30)
                server.log.flush()
                traces[kind].append(job_trace(server.log.name, vid))
                log(f"  run {run} {kind} cascade: {cascade[kind][-1]:.2f} s (status {rec['status']}); trace: "
                    + ", ".join(f"{n} {t:.2f}" for n, t in traces[kind][-1].items()))

                out = os.path.join(work, f"ttfp{run}{kind}")
                shutil.rmtree(out, ignore_errors=True)
                n = len(LADDER["rung"])
                for i in range(n):
                    os.makedirs(os.path.join(out, f"v{i}"))
                t0 = time.monotonic()
                p = subprocess.Popen(ffmpeg_ladder_cmd(path, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                while not all(os.path.exists(os.path.join(out, f"v{i}", "seg00001.ts")) or
                              os.path.exists(os.path.join(out, f"v{i}", "index.m3u8")) for i in range(n)):
                    if p.poll() is not None:
                        break
                    time.sleep(0.02)
                plain[kind].append(time.monotonic() - t0)
                p.kill()
                p.wait()
                log(f"  run {run} {kind} ffmpeg: {plain[kind][-1]:.2f} s")
    finally:
        server.stop()
    for kind, _ in sources:
        label = "" if kind == "clean" else " — noisy 30 s 1080p30 8 Mb/s source"
        row("latency", f"time to first playable (all rungs){label}", statistics.median(cascade[kind]), statistics.median(plain[kind]), "s",
            "ffmpeg: start → first segment of every rung", target=("abs_max", 1.5 if kind == "noisy" else 2.0))
        for name, _ in TRACE_EVENTS:
            times = [t[name] for t in traces[kind] if name in t]
            if times:
                row("latency", f"  trace ({kind}): upload complete → {name}", statistics.median(times), statistics.median(cascade[kind]), "s",
                    "Cascade's time to first playable (share of it)")


def bench_stream(src, work):
    """A throttled upload of a Matroska file: from upload start to playable, streamed vs not."""
    log("== streaming ingest (throttled upload)")
    mkv = os.path.join(work, "source.mkv")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", src, "-c", "copy", mkv], check=True, timeout=300)
    size = os.path.getsize(mkv)
    rate = max(size // 12, 100_000)  # about 12 s of upload (long enough to show the difference)
    results = {}
    for label, env in [("streamed", {}), ("not streamed", {"CASCADE_STREAM_INGEST": "false"})]:
        times, rss = [], []
        for run in range(RUNS):
            server = Server(work, **env)
            try:
                t0 = time.monotonic()
                p = subprocess.Popen(["curl", "-sS", "-f", *server.auth, "--limit-rate", str(rate), "-F", "title=bench", "-F", f"file=@{mkv}",
                                      server.url("/api/videos")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                playable = None
                while playable is None and time.monotonic() - t0 < 600:
                    vids = server.get("/api/videos")["videos"]
                    if vids and vids[0]["playable"]:
                        playable = time.monotonic() - t0
                    time.sleep(0.05)
                p.wait(timeout=600)
                times.append(playable)
                rss.append(server.peak_rss_mib())
                log(f"  run {run} {label}: playable after {playable:.1f} s (upload {size / rate:.0f} s), server peak RSS {rss[-1]:.0f} MiB")
            finally:
                server.stop()
        results[label] = (statistics.median(times), max(rss))
    row("ingest", f"upload start → playable, {size / rate:.0f} s throttled MKV upload", results["streamed"][0],
        results["not streamed"][0], "s", "same server, CASCADE_STREAM_INGEST=false")
    row("ingest", "server peak RSS during a streamed upload", results["streamed"][1], results["not streamed"][1], "MiB",
        "not streamed")


def bench_upload(work):
    log("== upload")
    big = os.path.join(work, "big.bin")
    small = os.path.join(work, "small.bin")
    # Random bytes behind an MP4 header (ftyp, then an mdat to the end): the server accepts only
    # media containers, by content. The big file repeats the small one's bytes (real blocks, not a
    # sparse file cp could skip).
    def mp4_head(size):
        return b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + min(size - 24, 0xFFFFFFFF).to_bytes(4, "big") + b"mdat"
    small_size = max(UPLOAD_MB // 10, 16) << 20
    chunk = mp4_head(small_size) + os.urandom(small_size - 32)
    with open(small, "wb") as f:
        f.write(chunk)
    with open(big, "wb") as f:
        f.write(mp4_head(UPLOAD_MB << 20))
        written = 32
        body = chunk[32:]
        while written < UPLOAD_MB << 20:
            part = body[: (UPLOAD_MB << 20) - written]
            f.write(part)
            written += len(part)
    size_mb = os.path.getsize(big) / 1e6
    up, cp, session_up, tus_up = [], [], [], []
    rss = {}
    for run in range(RUNS):
        for label, path in [("small", small), ("big", big), ("session", big), ("tus", big)]:
            if label == "small" and run > 0:
                continue
            server = Server(work)
            try:
                os.sync()  # start from no dirty pages, as cp does below: both end with their own sync
                t0 = time.monotonic()
                # "session": what a browser does, a login (Argon2id) and the upload with its cookie;
                # "tus": a resumable upload (creation, one PATCH of the whole file); the others send
                # an API token with a multipart form.
                if label == "tus":
                    server.tus_patch(server.tus_create(os.path.getsize(path)), path, 0)
                else:
                    server.upload(path, server.login() if label == "session" else None)
                dt = time.monotonic() - t0
                if label != "session":
                    rss[label] = max(rss.get(label, 0), server.peak_rss_mib())
            finally:
                server.stop()
            if label == "big":
                up.append(size_mb / dt)
            elif label == "session":
                session_up.append(size_mb / dt)
            elif label == "tus":
                tus_up.append(size_mb / dt)
        dst = os.path.join(work, "copy.bin")
        os.sync()
        t0 = time.monotonic()
        subprocess.run(["cp", big, dst], check=True)
        os.sync()
        cp.append(size_mb / (time.monotonic() - t0))
        os.remove(dst)
        log(f"  run {run}: upload {up[-1]:.0f} MB/s (login + session upload {session_up[-1]:.0f} MB/s, tus {tus_up[-1]:.0f} MB/s), cp {cp[-1]:.0f} MB/s")
    row("upload", f"upload throughput ({UPLOAD_MB} MiB)", statistics.median(up), statistics.median(cp), "MB/s", "cp", "higher",
        target=("ratio_min", 0.8))
    row("upload", f"resumable (tus) upload throughput ({UPLOAD_MB} MiB, one PATCH)", statistics.median(tus_up), statistics.median(cp),
        "MB/s", "cp", "higher", target=("ratio_min", 0.8))
    row("upload", f"resumable (tus) vs multipart upload throughput ({UPLOAD_MB} MiB)", statistics.median(tus_up), statistics.median(up),
        "MB/s", "multipart upload", "higher")
    row("upload", f"server peak RSS, {UPLOAD_MB} MiB tus vs multipart upload", rss["tus"], rss["big"], "MiB", "multipart upload",
        "equal", target=("diff_max", 8))
    bench_tus_cut(work, big)
    # Accounts cost a login and one store lookup per request: nothing a large upload could show.
    row("accounts", f"login + upload with the session cookie vs upload with an API token ({UPLOAD_MB} MiB)",
        statistics.median(session_up), statistics.median(up), "MB/s", "same upload, API token", "higher",
        target=("ratio_min", 0.95))
    row("upload", f"server peak RSS, {UPLOAD_MB} MiB vs {os.path.getsize(small) >> 20} MiB upload",
        # "Does not grow with the file": 10x the bytes may cost a few MiB of allocator noise and
        # write batches (1 MiB), not a share of the file (±10 % of a 20 MiB process was too tight).
        rss["big"], rss["small"], "MiB", "same server, small upload", "equal", target=("diff_max", 8))
    os.remove(big)


def bench_tus_cut(work, big):
    """A resumable upload whose connection is cut at 50 %, then resumed (HEAD, PATCH the rest, as
    a client does; again if the server has not yet stored the cut), against an uncut one in the
    same run: bytes sent twice (what was in flight beyond the durable offset) and seconds lost."""
    import threading
    size = os.path.getsize(big)
    twice, lost, uncut = [], [], []
    for run in range(RUNS):
        server = Server(work)
        try:
            t0 = time.monotonic()
            server.tus_patch(server.tus_create(size), big, 0)
            whole = time.monotonic() - t0
            url = server.tus_create(size)
            sent, box = [0], []
            t0 = time.monotonic()
            t = threading.Thread(target=lambda: _ignore(server.tus_patch, url, big, 0, sent, box))
            t.start()
            while sent[0] < size // 2 and t.is_alive():
                time.sleep(0.005)
            box[0].sock.shutdown(socket.SHUT_RDWR)  # the network drops
            t.join()
            at_cut = sent[0]
            offset = None
            for _attempt in range(20):
                offset = server.tus_offset(url)
                try:
                    server.tus_patch(url, big, offset)
                    break
                except (OSError, RuntimeError):
                    time.sleep(0.1)  # the server had not stored the cut yet: ask again
            total = time.monotonic() - t0
            twice.append(max(at_cut - offset, 0) / 2**20)
            lost.append(total - whole)
            uncut.append(whole)
            log(f"  tus cut at {at_cut * 100 // size} %: kept {offset}, {twice[-1]:.1f} MiB sent twice, {lost[-1]:.2f} s lost ({whole:.2f} s uncut)")
        finally:
            server.stop()
    row("upload", "resumable upload cut at 50 %: MiB sent twice (vs one 64 MiB chunk of the upload page)", statistics.median(twice), 64,
        "MiB", "one chunk", "lower", target=("ratio_max", 1.0))
    row("upload", "resumable upload cut at 50 % and resumed: time vs an uncut one", statistics.median(uncut) + statistics.median(lost),
        statistics.median(uncut), "s", "uncut tus upload", "lower")


def _ignore(f, *a):
    try:
        f(*a)
    except OSError:
        pass
    except RuntimeError:
        pass


def wrk(url, headers=()):
    extra = [a for h in headers for a in ("-H", h)]
    out = subprocess.run(["wrk", "-t2", "-c32", "-d4s", "--latency", *extra, url], capture_output=True, text=True, timeout=60).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    m = re.search(r"99%\s+([0-9.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
    return rps, p99


def bench_serve(src, work):
    log("== serving")
    server = Server(work)
    nginx = None
    try:
        v = server.upload(src)
        vid = v["id"]
        while True:
            rec = server.get(f"/api/videos/{vid}")
            if rec["status"] in ("ready", "failed"):
                break
            time.sleep(0.5)
        # A public video's record, read anonymously and with an API token (the token's digest and
        # its user looked up in the store on every request).
        api_url = server.url(f"/api/videos/{vid}")
        anon, token = [], []
        for _ in range(RUNS):
            token.append(wrk(api_url, [f"Authorization: Bearer {server.token}"]))
            anon.append(wrk(api_url))
        row("accounts", "GET /api/videos/{id} per second, with an API token vs anonymous", statistics.median(x[0] for x in token),
            statistics.median(x[0] for x in anon), "req/s", "same request, anonymous", "higher", target=("ratio_min", 0.8))
        media = os.path.join(server.data, "media", vid)
        nport = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 2; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; types {{ video/mp2t ts; }} server {{ listen 127.0.0.1:{nport}; root {media}; }} }}
""")
        nginx = subprocess.Popen(["nginx", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        # With startup segments on, 00000 and 00001 are short and 00002 is the first full one.
        startup = LADDER.get("startup_segment_seconds", 0) > 0
        kinds = [("seg00002.ts", "full segment"), ("seg00000.ts", "startup segment")] if startup else [("seg00001.ts", "full segment")]
        segments = []
        for name, label in kinds:
            seg = rec["playback"]["hls"].replace("master.m3u8", f"720p/{name}")
            nurl = f"http://127.0.0.1:{nport}/hls/720p/{name}"
            # Both must really serve the same bytes, or the comparison means nothing.
            a = urllib.request.urlopen(seg, timeout=10).read()
            b = urllib.request.urlopen(nurl, timeout=10).read()
            if a != b or not a:
                raise RuntimeError(f"Cascade and nginx serve different bytes ({len(a)} vs {len(b)})")
            log(f"  {label}: {len(a)} bytes")
            c, n = [], []
            for _ in range(RUNS):
                c.append(wrk(seg))
                n.append(wrk(nurl))
            what = f"720p {label}, {len(a) / 1e6:.2f} MB"
            row("serving", f"GETs per second ({what})", statistics.median(x[0] for x in c), statistics.median(x[0] for x in n),
                "req/s", "nginx", "higher", target=("ratio_min", 0.8))
            row("serving", f"p99 latency ({what})", statistics.median(x[1] for x in c), statistics.median(x[1] for x in n), "ms", "nginx")
            segments.append((seg, nurl, what))
        # The same GETs with Cascade's segment cache off: every request opens and reads the file,
        # as nginx does (no target: shown so the cache's share of the figures above is visible).
        old_base = server.url("")
        server.stop(keep_data=True)
        server = Server(work, data=server.data, CASCADE_SEGMENT_CACHE_MB="0")
        for seg, nurl, what in segments:
            seg = seg.replace(old_base, server.url(""), 1)
            if urllib.request.urlopen(seg, timeout=10).read() != urllib.request.urlopen(nurl, timeout=10).read():
                raise RuntimeError("Cascade (cache off) and nginx serve different bytes")
            c, n = [], []
            for _ in range(RUNS):
                c.append(wrk(seg))
                n.append(wrk(nurl))
            row("serving", f"GETs per second ({what}), segment cache off", statistics.median(x[0] for x in c),
                statistics.median(x[0] for x in n), "req/s", "nginx", "higher")
    finally:
        if nginx:
            nginx.terminate()
            nginx.wait()
        server.stop()


def scrape_ms(server, n=20):
    """Median time of a whole `/metrics` scrape (admin token), in ms."""
    took = []
    for _ in range(n):
        t0 = time.monotonic()
        body = urllib.request.urlopen(server.request("/metrics"), timeout=60).read()
        took.append((time.monotonic() - t0) * 1000)
        if b"cascade_videos" not in body:
            raise RuntimeError("not a Cascade scrape")
    return statistics.median(took)


def bench_metrics(src, work):
    """#22: what counting costs the segment path, and a scrape with many videos."""
    log("== metrics")
    on = Server(work)
    off = None
    try:
        v = on.upload(src)
        vid = v["id"]
        while (rec := on.get(f"/api/videos/{vid}"))["status"] not in ("ready", "failed"):
            time.sleep(0.5)
        name = "seg00002.ts" if LADDER.get("startup_segment_seconds", 0) > 0 else "seg00001.ts"
        # The same data on a second server that does not count requests (sled allows one process
        # per data dir: a copy, made while the first is stopped).
        on.stop(keep_data=True)
        copy = tempfile.mkdtemp(dir=work)
        shutil.rmtree(copy)
        shutil.copytree(on.data, copy)
        on = Server(work, data=on.data)
        off = Server(work, data=copy, CASCADE_METRICS="false")
        urls = []
        for s in (on, off):
            r = s.get(f"/api/videos/{vid}")
            urls.append(r["playback"]["hls"].replace("master.m3u8", f"720p/{name}"))
        a, b = (urllib.request.urlopen(u, timeout=10).read() for u in urls)
        if a != b or not a:
            raise RuntimeError("the two servers serve different bytes")
        # Alternating which goes first: with "on" always first, one run gave x0.86 and a re-run
        # of the same builds with the order alternating x1.03; the order weighed more than counting.
        c, n = [], []
        for i in range(max(RUNS, 2) * 2):
            pair = [(urls[0], c), (urls[1], n)]
            for url, acc in (pair if i % 2 == 0 else pair[::-1]):
                acc.append(wrk(url))
        row("api", f"segment GETs per second with request metrics on vs off (720p, {len(a) / 1e6:.2f} MB)",
            statistics.median(x[0] for x in c), statistics.median(x[0] for x in n), "req/s", "metrics off", "higher",
            target=("ratio_min", 0.95))
        off.stop()
        off = None
        # A scrape with 1 video, then with 10,000 (records made by tus creation: a record each,
        # no bytes), through the same server.
        few = scrape_ms(on)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: on.tus_create(1 << 20), range(9999)))
        if on.get("/api/me") is None:
            raise RuntimeError("server gone")
        many = scrape_ms(on)
        row("api", "/metrics scrape with 10,000 videos vs 1 video", many, few, "ms", "1 video", "lower")
    finally:
        if off:
            off.stop()
        on.stop()
    bench_webhook_latency(work)


LIVE_SECONDS = int(os.environ.get("BENCH_LIVE_SECONDS", "75"))


def playlist_segments(text):
    """(start s, duration s) of every segment of a media playlist."""
    out, t = [], 0.0
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            d = float(line[8:].split(",")[0])
            out.append((t, d))
            t += d
    return out


class Lister:
    """Polls media playlists every 50 ms; records when each segment (by index) is first listed in
    every one of them (the wall time of the slowest rung)."""

    def __init__(self, fetchers):
        self.fetchers = fetchers  # one callable per rung returning the playlist text (or None)
        self.first = [dict() for _ in fetchers]  # per rung: index -> (wall time, start s)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            for i, fetch in enumerate(self.fetchers):
                try:
                    text = fetch()
                except Exception:
                    text = None
                if text:
                    now = time.time()
                    for n, (start, _) in enumerate(playlist_segments(text)):
                        self.first[i].setdefault(n, (now, start))
            time.sleep(0.05)

    def listed(self):
        """index -> (wall time listed in every rung, start s)."""
        self.stop.set()
        self.t.join(timeout=5)
        common = set.intersection(*(set(f) for f in self.first)) if self.first else set()
        return {n: (max(f[n][0] for f in self.first), self.first[0][n][1]) for n in sorted(common)}


def live_anchor_cmd(udp_port, out):
    """A plain ffmpeg live ladder: MPEG-TS from UDP, the ladder's rungs at the live settings (x264
    preset and tune, GOP = keyframe_seconds), HLS with segments of the live length."""
    live = LADDER["live"]
    seg = live["segment_seconds"]
    gop = str(round(30 * live.get("keyframe_seconds", seg)))
    rungs = LADDER["rung"]
    n = len(rungs)
    split = f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n)) + ";" + ";".join(
        f"[s{i}]scale=-2:{r['height']}[v{i}]" for i, r in enumerate(rungs))
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", f"udp://127.0.0.1:{udp_port}?fifo_size=1000000&overrun_nonfatal=1",
           "-filter_complex", split]
    for i, r in enumerate(rungs):
        os.makedirs(os.path.join(out, f"v{i}"), exist_ok=True)
        cmd += ["-map", f"[v{i}]", "-map", "0:a", "-c:v", "libx264", "-preset", live["preset"], "-tune", live.get("tune", "zerolatency"),
                "-b:v", f"{r['bitrate_kbps']}k", "-g", gop, "-keyint_min", gop, "-sc_threshold", "0", "-bf", "0",
                "-c:a", "aac", "-b:a", f"{LADDER['audio']['bitrate_kbps']}k", "-f", "hls", "-hls_time", str(seg), "-hls_list_size", "0",
                "-hls_playlist_type", "event", "-hls_segment_filename", os.path.join(out, f"v{i}", "seg%05d.ts"),
                os.path.join(out, f"v{i}", "index.m3u8")]
    return cmd


def read_file(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def latencies(listed, t0, until):
    """Per segment listed before `until`: when it was listed minus when its first frame was sent."""
    return [when - (t0 + start) for n, (when, start) in listed.items() if when <= until]


def publish_cmd(src, target, fmt):
    """The publisher: the pre-encoded broadcast sent in real time, stream-copied (no encoder load)."""
    return ["ffmpeg", "-nostdin", "-v", "error", "-re", "-i", src, "-c", "copy", "-f", fmt, target]


def wait4(p, timeout):
    """Waits for a child; returns its CPU seconds (user + system)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, _, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = 0
            return ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            p.kill()
        time.sleep(0.05)


def live_anchor(src, work):
    """The anchor: the same broadcast through a UDP relay (which notes its first packet) into a
    plain ffmpeg HLS ladder. Returns (latencies, CPU cores, publish → first segment of every rung)."""
    seg = LADDER["live"]["segment_seconds"]
    relay_in, anchor_port = free_port(), free_port()
    out = os.path.join(work, "live-anchor")
    anchor = subprocess.Popen(live_anchor_cmd(anchor_port, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = []
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", relay_in))
    rx.settimeout(1)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    done = threading.Event()

    def relay():
        while not done.is_set():
            try:
                data = rx.recv(65536)
            except socket.timeout:
                continue
            if not first:
                first.append(time.time())
            tx.sendto(data, ("127.0.0.1", anchor_port))
    t = threading.Thread(target=relay, daemon=True)
    t.start()
    time.sleep(1)  # the anchor's socket is open before the first packet
    lister = Lister([lambda i=i: read_file(os.path.join(out, f"v{i}", "index.m3u8")) for i in range(len(LADDER["rung"]))])
    pub_start = time.time()
    publisher = subprocess.Popen(publish_cmd(src, f"udp://127.0.0.1:{relay_in}?pkt_size=1316", "mpegts"),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    publisher.wait(timeout=LIVE_SECONDS + 60)
    stopped = time.time()
    time.sleep(seg + 2)  # its last segments
    done.set()
    anchor.send_signal(signal.SIGINT)
    cpu = wait4(anchor, 30) / (stopped - pub_start)
    listed = lister.listed()
    if not first or not listed:
        raise RuntimeError(f"the ffmpeg anchor produced nothing: {anchor.stderr.read().decode()[-1000:]}")
    return latencies(listed, first[0], stopped), cpu, listed[0][0] - pub_start


def wait_playable(server, stream_id, seconds=60, after=None):
    """The video record of stream `stream_id`'s broadcast once it is playable (a broadcast other
    than video `after`, when given), polled every 50 ms; None after `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        s = server.get(f"/api/live/{stream_id}")
        if s.get("video_id") and s["video_id"] != after:
            rec = server.get(f"/api/videos/{s['video_id']}")
            if rec["playable"]:
                return rec
        time.sleep(0.05)
    return None


def bench_live(work):
    """Live (#19): the same 1080p30 broadcast published in real time to Cascade over RTMP, over
    SRT, and (one after the other, so each has the machine) to a plain ffmpeg HLS ladder: the
    glass-to-glass latency of every segment, the ladder's CPU and speed, publish → first
    playable, publisher stop → ready."""
    log(f"== live: a {LIVE_SECONDS} s 1080p30 broadcast over RTMP, over SRT, and into an ffmpeg -f hls ladder")
    seg = LADDER["live"]["segment_seconds"]
    window = 2
    src = os.path.join(work, "live-source.ts")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(LIVE_SECONDS),
                    "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6M", "-g", str(30 * seg), "-bf", "0", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-b:a", "128k", src], check=True, timeout=900)
    anchor_lat, anchor_cpu, anchor_ttfp = live_anchor(src, work)
    log(f"  ffmpeg: {len(anchor_lat)} segments, p50 {percentile(anchor_lat, 50):.2f} s, {anchor_cpu:.2f} cores")
    for proto in ("rtmp", "srt"):
        srt_port = free_port()
        server = Server(work, CASCADE_RTMP_BIND=f"127.0.0.1:{free_port()}", CASCADE_SRT_BIND=f"127.0.0.1:{srt_port}",
                        CASCADE_LIVE_RECONNECT_S=str(window))
        publisher = None
        try:
            stream = server.post_json("/api/live", {"title": f"bench {proto}"})
            key = stream["key"]
            cmd = publish_cmd(src, f"{stream['rtmp_url']}/{key}", "flv") if proto == "rtmp" else \
                publish_cmd(src, f"srt://127.0.0.1:{srt_port}?streamid={key}&mode=caller", "mpegts")
            cpu0 = server.cpu_s()
            pub_start = time.time()
            publisher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            rec = wait_playable(server, stream["id"], 60 - (time.time() - pub_start))
            if not rec:
                raise RuntimeError(f"{proto}: the broadcast did not become playable")
            vid = rec["id"]
            ttfp = time.time() - pub_start
            absolute = lambda u: server.url(u) if u.startswith("/") else u
            # The publisher's first media reached Cascade at the live MPD's availabilityStartTime
            # plus one segment (see packaging); read it while the broadcast is live.
            ast = re.search(r'availabilityStartTime="([^"]+)"', server.text(absolute(rec["playback"]["dash"]))).group(1)
            t0 = datetime.datetime.fromisoformat(ast.replace("Z", "+00:00")).timestamp() + seg
            master_url = absolute(rec["playback"]["hls"])
            base = master_url.rsplit("/", 1)[0]
            uris = [l for l in server.text(master_url).splitlines() if l and not l.startswith("#")]
            lister = Lister([lambda u=u: server.text(f"{base}/{u}") for u in uris])
            speeds, looked = [], 0.0
            while publisher.poll() is None:
                if time.time() - looked >= 1:
                    looked = time.time()
                    sp = server.get(f"/api/live/{stream['id']}").get("encoder_speed")
                    if sp:
                        speeds.append(sp)
                time.sleep(0.05)
            stopped = time.time()
            cpu = (server.cpu_s() - cpu0) / (stopped - pub_start)
            if publisher.returncode:
                raise RuntimeError(f"{proto} publisher failed: {publisher.stderr.read().decode()[-1000:]}")
            while True:
                r = server.get(f"/api/videos/{vid}")
                if r["status"] in ("ready", "failed"):
                    break
                time.sleep(0.05)
            to_ready = time.time() - stopped
            if r["status"] != "ready":
                raise RuntimeError(f"{proto}: the broadcast ended {r['status']}: {r.get('error')}")
            dropped = server.get(f"/api/live/{stream['id']}").get("dropped_renditions")
            mine = latencies(lister.listed(), t0, stopped)
            if not mine:
                raise RuntimeError(f"{proto}: no segments measured")
            log(f"  {proto}: {len(mine)} segments over {len(uris)} rungs; dropped renditions: {dropped or 'none'}")
            for p in (50, 95):
                row("live", f"{proto.upper()} glass-to-glass latency p{p} (segment listed in every rung − its first frame sent)",
                    percentile(mine, p), percentile(anchor_lat, p), "s", "ffmpeg -f hls ladder, same broadcast",
                    target=("abs_max", seg + 1.5))
            row("live", f"{proto.upper()} 1080p30 live ladder CPU (cores)", cpu, anchor_cpu, "cores", "ffmpeg -f hls ladder, same broadcast")
            row("live", f"{proto.upper()} encoder speed (× real time, median of the stream's figure)",
                statistics.median(speeds) if speeds else float("nan"), 1.0, "×", "real time", better="higher")
            row("live", f"{proto.upper()} publish → first playable (every rung)", ttfp, anchor_ttfp, "s",
                "ffmpeg: publish → first segment of every rung")
            # An SRT broadcast ends when its caller leaves (no reconnect window on 1.22's srtsrc).
            wait = window if proto == "rtmp" else 0
            row("live", f"{proto.upper()} publisher stop → ready ({wait} s reconnect window included)", to_ready, float(wait), "s",
                "the reconnect window alone")
        finally:
            if publisher and publisher.poll() is None:
                publisher.kill()
                publisher.wait()
            server.stop()


LL_PLAY_SECONDS = int(os.environ.get("BENCH_LL_SECONDS", "120"))


def held_requests(port, path, n, answered):
    """`n` GETs of `path` sent at once (the server holds them: blocking playlist reload); each
    answer's (time, status) is appended to `answered`."""
    import asyncio

    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await w.drain()
        head = (await r.readline()).split()
        answered.append((time.time(), head[1].decode() if len(head) > 1 else "?"))
        await r.read()
        w.close()

    async def run():
        await asyncio.gather(*[one() for _ in range(n)])
    asyncio.run(run())


def status_mib(pid, field):
    """A size field of /proc/PID/status (`VmRSS`, `VmHWM`) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid):
    return status_mib(pid, "VmRSS")


def bench_lowlatency(work):
    """Low latency (#20): one 720p30 broadcast over RTMP (low latency is on by default), played in
    Chromium for BENCH_LL_SECONDS each by hls.js in low-latency mode (LL-HLS), by dash.js in
    low-latency mode (LL-DASH) and by dash.js on the standard MPD (the live issue's path); each
    player reports its own glass-to-glass latency every half second (PROGRAM-DATE-TIME / the MPD's
    wall-clock mapping against the clock) and its stalls. Then 1,000 blocking playlist requests
    held at once: the server's extra memory while they wait, and how long one part's arrival
    takes to answer them all (with the CPU it costs)."""
    log(f"== low latency: a 720p30 broadcast over RTMP, {LL_PLAY_SECONDS} s in each player; 1,000 blocked playlist requests")
    src = os.path.join(work, "ll-source.ts")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "60",
                    "-c:v", "libx264", "-preset", "veryfast", "-b:v", "3M", "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-b:a", "128k", src], check=True, timeout=900)
    server = Server(work, CASCADE_LIVE_RECONNECT_S="1")
    publisher = None
    try:
        stream = server.post_json("/api/live", {"title": "bench low latency"})
        # The source looped, in real time, for as long as the players need.
        publisher = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i", src, "-c", "copy",
                                      "-f", "flv", f"{stream['rtmp_url']}/{stream['key']}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        rec = wait_playable(server, stream["id"])
        if not rec or not rec["playback"].get("hls_low_latency"):
            raise RuntimeError(f"the low-latency broadcast did not become playable: {rec}")
        results = {}
        for name, query in (("LL-HLS (hls.js low-latency mode)", ""), ("LL-DASH (dash.js low-latency mode)", "?player=lldash"),
                            ("standard DASH (dash.js, live issue's MPD)", "?player=dash")):
            out = subprocess.run(["node", os.path.join(ROOT, "bench", "player_latency.mjs"), server.url(""), rec["id"], query,
                                  str(LL_PLAY_SECONDS)], capture_output=True, text=True, timeout=LL_PLAY_SECONDS + 180)
            got = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {"samples": [], "stalls": [], "errors": [out.stderr[-500:]]}
            results[name] = got
            log(f"  {name}: {got.get('kind')}, {len(got['samples'])} samples, stalls {got['stalls'][:5]}, errors {got['errors'][:3]}")
        s = server.get(f"/api/live/{stream['id']}")
        log(f"  the broadcast: encoder speed {s.get('encoder_speed')}, dropped renditions {s.get('dropped_renditions') or 'none'}")
        base = results["standard DASH (dash.js, live issue's MPD)"]["samples"]
        for name, got in results.items():
            if not got["samples"]:
                continue
            for p, goal in ((50, 2.0), (95, 3.0)):
                row("lowlatency", f"{name} glass-to-glass latency p{p}, in the player", percentile(got["samples"], p),
                    percentile(base, p) if base else float("nan"), "s", "standard DASH in the same run",
                    target=("abs_max", goal) if name.startswith("LL-") else None)
            row("lowlatency", f"{name} stalls in {LL_PLAY_SECONDS} s", float(len(got["stalls"])), 0.0, "", "none",
                target=("abs_max", 0) if name.startswith("LL-") else None)

        # 1,000 blocking requests for a part two segments ahead, held until it lands.
        ll = rec["playback"]["hls_low_latency"]
        master = server.text(ll)
        rung = [l for l in master.splitlines() if l and not l.startswith("#")][0]
        media = ll.rsplit("/", 1)[0] + "/" + rung
        last = max(int(m) for m in re.findall(r"seg(\d{5})\.\d+\.m4s", server.text(media)))
        path = media.replace(server.url(""), "") + f"?_HLS_msn={last + 2}&_HLS_part=0"
        before = []
        for _ in range(60):
            before.append(rss_mib(server.p.pid))
            time.sleep(0.05)
        answered, n = [], 1000
        sent = time.time()
        cpu0 = server.cpu_s()
        t = threading.Thread(target=held_requests, args=(server.port, path, n, answered))
        t.start()
        held = []
        while t.is_alive():
            if not answered:
                held.append(rss_mib(server.p.pid))
            time.sleep(0.02)
        cpu = server.cpu_s() - cpu0
        ok = sum(1 for _, st in answered if st == "200")
        times = sorted(a for a, _ in answered)
        log(f"  held {n}: {ok} answered 200 after {times[0] - sent:.2f}–{times[-1] - sent:.2f} s; RSS {max(before):.0f} → {max(held):.0f} MiB")
        row("lowlatency", f"{n} blocked playlist requests: extra server memory while held", max(held) - max(before), 50.0, "MiB",
            "the issue's limit", target=("abs_max", 50))
        row("lowlatency", f"{n} blocked playlist requests: first → last answer when the part lands", (times[-1] - times[0]) * 1000, 0.0, "ms",
            "instant", better="lower")
        row("lowlatency", f"{n} blocked playlist requests: server CPU from sending them to the last answer (ladder included)", cpu,
            times[-1] - sent, "core·s", "the same time on one core")
        if ok != n:
            raise RuntimeError(f"only {ok} of {n} held requests were answered 200: {collections.Counter(st for _, st in answered)}")

        # WHIP → LL-HLS: the same stream, now from Chromium's fake camera over WebRTC.
        publisher.kill()
        publisher.wait()
        first_video = rec["id"]
        for _ in range(1200):
            if server.get(f"/api/live/{stream['id']}")["status"] == "idle":
                break
            time.sleep(0.1)
        whip = subprocess.Popen(["node", os.path.join(ROOT, "bench", "whip_publish.mjs"), server.url(""), stream["id"], stream["key"],
                                 str(LL_PLAY_SECONDS + 60)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wrec = wait_playable(server, stream["id"], after=first_video)
            if not wrec:
                raise RuntimeError(f"the WHIP broadcast did not become playable: {wrec}; {whip.stderr.read() if whip.poll() is not None else ''}")
            out = subprocess.run(["node", os.path.join(ROOT, "bench", "player_latency.mjs"), server.url(""), wrec["id"], "",
                                  str(LL_PLAY_SECONDS)], capture_output=True, text=True, timeout=LL_PLAY_SECONDS + 180)
            got = json.loads(out.stdout.strip().splitlines()[-1])
            log(f"  WHIP → LL-HLS: {got.get('kind')}, {len(got['samples'])} samples, stalls {got['stalls'][:5]}, errors {got['errors'][:3]}; "
                f"source {wrec.get('source')}")
            if got["samples"]:
                for p, goal in ((50, 2.0), (95, 3.0)):
                    row("lowlatency", f"WHIP (Chromium, 640x360) → LL-HLS glass-to-glass latency p{p}, in the player", percentile(got["samples"], p),
                        percentile(base, p) if base else float("nan"), "s", "standard DASH of the RTMP broadcast", target=("abs_max", goal))
                row("lowlatency", f"WHIP → LL-HLS stalls in {LL_PLAY_SECONDS} s", float(len(got["stalls"])), 0.0, "", "none", target=("abs_max", 0))
        finally:
            if whip.poll() is None:
                whip.kill()
    finally:
        if publisher and publisher.poll() is None:
            publisher.kill()
        server.stop()


def bench_upload_parts(src, work):
    """What the low-latency parts of uploads being processed cost (#20): the same source uploaded
    to a server with CASCADE_UPLOAD_LOW_LATENCY on and to one with it off, alternating, BENCH_RUNS
    times: upload end → playable, → ready, and the server's CPU seconds for the job."""
    log("== LL-HLS parts of uploads: cost, CASCADE_UPLOAD_LOW_LATENCY on against off")
    servers = {on: Server(work, CASCADE_UPLOAD_LOW_LATENCY="true" if on else "false") for on in (True, False)}
    got = {on: [] for on in servers}
    try:
        for run in range(RUNS):
            for on, server in servers.items():
                cpu0 = server.cpu_s()
                v = server.upload(src)
                t_end = time.monotonic()
                playable = None
                while (rec := server.get(f"/api/videos/{v['id']}"))["status"] not in ("ready", "failed"):
                    if playable is None and rec["playable"]:
                        playable = time.monotonic() - t_end
                    time.sleep(0.02)
                ready = time.monotonic() - t_end
                if rec["status"] != "ready":
                    raise RuntimeError(f"upload failed: {rec}")
                cpu = server.cpu_s() - cpu0
                got[on].append((playable if playable is not None else ready, ready, cpu))
                log(f"  run {run} parts {'on' if on else 'off'}: playable {got[on][-1][0]:.2f} s, ready {ready:.1f} s, cpu {cpu:.1f} s")
                urllib.request.urlopen(server.request(f"/api/videos/{v['id']}", method="DELETE"), timeout=30)
    finally:
        for server in servers.values():
            server.stop()
    med = {on: [statistics.median(x[i] for x in v) for i in range(3)] for on, v in got.items()}
    base = "the same upload with CASCADE_UPLOAD_LOW_LATENCY=false"
    row("lowlatency", "upload with LL-HLS parts: upload end → playable", med[True][0], med[False][0], "s", base)
    row("lowlatency", "upload with LL-HLS parts: upload end → ready", med[True][1], med[False][1], "s", base)
    row("lowlatency", "upload with LL-HLS parts: server CPU for the job", med[True][2], med[False][2], "core·s", base)


POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")


def bench_scaled(src, work):
    """The records in PostgreSQL against sled (#23): the same upload and transcode on a server of
    each configuration, alternating, BENCH_RUNS times (upload end → ready), and reads of a video's
    record through the API (wrk, with an API token) on each."""
    log("== scaled configuration: records in PostgreSQL against sled")
    db = f"cascade_bench_{os.getpid()}"
    servers = {"postgres": Server(work, CASCADE_DATABASE_URL=f"{POSTGRES}/{db}"), "sled": Server(work)}
    got = {k: [] for k in servers}
    reads = {k: [] for k in servers}
    try:
        for run in range(RUNS):
            for name, server in servers.items():
                v = server.upload(src)
                t_end = time.monotonic()
                while (rec := server.get(f"/api/videos/{v['id']}"))["status"] not in ("ready", "failed"):
                    time.sleep(0.02)
                if rec["status"] != "ready":
                    raise RuntimeError(f"{name}: upload failed: {rec}")
                got[name].append(time.monotonic() - t_end)
                reads[name].append(wrk(server.url(f"/api/videos/{v['id']}"), [f"Authorization: Bearer {server.token}"]))
                log(f"  run {run} {name}: ready {got[name][-1]:.1f} s after the upload, {reads[name][-1][0]:.0f} record reads/s")
                urllib.request.urlopen(server.request(f"/api/videos/{v['id']}", method="DELETE"), timeout=30)
    finally:
        for server in servers.values():
            server.stop()
        subprocess.run(["psql", f"{POSTGRES}/postgres", "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], timeout=60)
    base = "the same on sled (embedded)"
    row("scale-out", "upload end → ready, records in PostgreSQL", statistics.median(got["postgres"]), statistics.median(got["sled"]), "s",
        base, target=("ratio_max", 1.10))
    row("scale-out", "GET /api/videos/{id} per second (API token), records in PostgreSQL",
        statistics.median(x[0] for x in reads["postgres"]), statistics.median(x[0] for x in reads["sled"]), "req/s", base, "higher")
    row("scale-out", "p99 latency of GET /api/videos/{id}, records in PostgreSQL",
        statistics.median(x[1] for x in reads["postgres"]), statistics.median(x[1] for x in reads["sled"]), "ms", base)


def s3_server():
    """The tests' S3-compatible server (tests/s3: moto's standalone server, a process of its own):
    (process, the AWS_* settings that point Cascade at it). It stops when its stdin closes."""
    p = subprocess.Popen([os.path.join(ROOT, "tests", "s3", "run.sh")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    j = json.loads(p.stdout.readline())
    return p, {"AWS_ENDPOINT_URL": j["endpoint"], "AWS_REGION": j["region"], "AWS_ACCESS_KEY_ID": j["key"],
               "AWS_SECRET_ACCESS_KEY": j["secret"], "AWS_ALLOW_HTTP": "true"}


class Worker:
    """A `cascade worker` process with its own data dir; its log (info) says when it claims a job."""

    def __init__(self, work, **env):
        self.data = tempfile.mkdtemp(dir=work)
        self.log_path = os.path.join(work, f"worker-{os.path.basename(self.data)}.log")
        self.log = open(self.log_path, "w")
        e = dict(os.environ, CASCADE_DATA_DIR=self.data, CASCADE_MIN_FREE_BYTES="0", CASCADE_LOG="info", CASCADE_WORKERS="1")
        e.update(env)
        self.p = subprocess.Popen([BIN, "worker"], cwd=ROOT, env=e, stdout=self.log, stderr=self.log)

    def wait_started(self, timeout=60):
        deadline = time.monotonic() + timeout
        while "Cascade worker started" not in open(self.log_path).read():
            if time.monotonic() > deadline or self.p.poll() is not None:
                raise RuntimeError(f"worker did not start: {open(self.log_path).read()}")
            time.sleep(0.05)
        return self

    def waited_ms(self, video_id):
        """How long the job waited in the queue before this worker claimed it (its log line)."""
        for line in open(self.log_path):
            if "claimed a job" in line and video_id in line:
                return float(re.search(r"waited_ms=(\d+)", line).group(1))
        return None

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=60)


def wait_ready(server, vid, timeout=1200):
    deadline = time.monotonic() + timeout
    while (rec := server.get(f"/api/videos/{vid}"))["status"] not in ("ready", "failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{vid} not final after {timeout} s")
        time.sleep(0.02)
    if rec["status"] != "ready":
        raise RuntimeError(f"upload failed: {rec}")
    return rec


def bench_storage(src, work):
    """Media in S3-compatible storage (#23), through the tests' S3 server (moto, a Python server:
    its own speed is in every figure here): the same upload and transcode in the scaled
    configuration (PostgreSQL + S3) and the embedded one, alternating; segment GETs through a
    second API node from the bucket, with its segment cache on and off, against the data dir;
    job pickup (queued → claimed by an idle worker process) with LISTEN/NOTIFY and with polling;
    and a queue of 8 short videos run by 1 and by 2 worker processes."""
    log("== scaled configuration: PostgreSQL + S3 against sled + the data dir")
    s3p, aws = s3_server()
    db = f"cascade_bench_s3_{os.getpid()}"
    scaled = dict(CASCADE_DATABASE_URL=f"{POSTGRES}/{db}", CASCADE_STORAGE_URL=f"s3://cascade-test/bench{os.getpid()}", **aws)
    started = []
    try:
        a = Server(work, **scaled)
        embedded = Server(work)
        started += [a, embedded]
        got = {"scaled": [], "embedded": []}
        ids = {}
        for run in range(RUNS):
            for name, server in (("scaled", a), ("embedded", embedded)):
                v = server.upload(src)
                t_end = time.monotonic()
                wait_ready(server, v["id"])
                got[name].append(time.monotonic() - t_end)
                ids[name] = v["id"]
                log(f"  run {run} {name}: ready {got[name][-1]:.1f} s after the upload")
        row("scale-out", "upload end → ready, PostgreSQL + S3 (moto)", statistics.median(got["scaled"]), statistics.median(got["embedded"]), "s",
            "the same on sled + the data dir (embedded)", target=("ratio_max", 1.10))
        a.stop()
        started.remove(a)

        # Segment GETs through node B (no workers, nothing on its disk): from the bucket.
        b = Server(work, CASCADE_NO_WORKERS="true", **scaled)
        b_off = Server(work, CASCADE_NO_WORKERS="true", CASCADE_SEGMENT_CACHE_MB="0", **scaled)
        started += [b, b_off]

        def segment(server, vid):
            hls = server.get(f"/api/videos/{vid}")["playback"]["hls"]
            return hls.rsplit("/", 1)[0] + "/720p/seg00002.ts"
        local = wrk(segment(embedded, ids["embedded"]))
        on = wrk(segment(b, ids["scaled"]))
        off = wrk(segment(b_off, ids["scaled"]))
        base = "the same segment from the data dir (embedded, cache on)"
        row("scale-out", "segment GETs/s through node B from S3, segment cache on", on[0], local[0], "req/s", base, "higher")
        row("scale-out", "segment GETs/s through node B from S3, segment cache off", off[0], local[0], "req/s", base, "higher")
        b_off.stop()
        started.remove(b_off)

        # Pickup: one short video at a time, so the worker is idle when each is queued.
        short = os.path.join(work, "pickup.mp4")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-i", "sine",
                        "-t", "2", "-c:v", "libx264", "-g", "50", "-c:a", "aac", short], check=True, timeout=120)
        waits = {}
        for mode, listen in (("notify", "true"), ("polling", "false")):
            w = Worker(work, CASCADE_DATABASE_LISTEN=listen, **scaled).wait_started()
            try:
                waits[mode] = []
                # One more than counted: the first may come before the worker's LISTEN is set up.
                for i in range(10 * RUNS + 1):
                    vid = b.upload(short)["id"]
                    wait_ready(b, vid)
                    if i > 0:
                        waits[mode].append(w.waited_ms(vid))
            finally:
                w.stop()
            log(f"  pickup with {mode}: {sorted(waits[mode])}")
        for p in (50, 95):
            row("scale-out", f"job pickup p{p} (queued → claimed by an idle worker), LISTEN/NOTIFY", percentile(waits["notify"], p),
                percentile(waits["polling"], p), "ms", "the same with CASCADE_DATABASE_LISTEN=false (1 s polling)")

        # A queue of 8 short videos, uploaded at once, with 1 and with 2 worker processes.
        clip = os.path.join(work, "queue8.mp4")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine",
                        "-t", "10", "-c:v", "libx264", "-g", "60", "-c:a", "aac", clip], check=True, timeout=300)
        took = {1: [], 2: []}
        for run in range(RUNS):
            for n in (1, 2):
                workers = [Worker(work, **scaled).wait_started() for _ in range(n)]
                try:
                    t0 = time.monotonic()
                    vids = [b.upload(clip)["id"] for _ in range(8)]
                    for vid in vids:
                        wait_ready(b, vid)
                    took[n].append(time.monotonic() - t0)
                finally:
                    for w in workers:
                        w.stop()
                log(f"  run {run}: 8 videos with {n} worker process(es): {took[n][-1]:.1f} s")
        row("scale-out", "8 × 10 s 720p videos through the queue, 2 worker processes (2 cores)", statistics.median(took[2]),
            statistics.median(took[1]), "s", "the same with 1 worker process")
    finally:
        for server in started:
            server.stop()
        s3p.stdin.close()
        s3p.wait(timeout=60)
        subprocess.run(["psql", f"{POSTGRES}/postgres", "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], timeout=60)


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bench_webhook_latency(work, n=50):
    """Event (its `created_at`) to the endpoint's receipt, one event at a time; the baseline is a
    plain POST from here to the same endpoint (send to receipt)."""
    got = queue.Queue()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.put((time.time(), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    server = Server(work, CASCADE_WEBHOOK_ALLOW_PRIVATE="true")
    try:
        req = urllib.request.Request(server.url("/api/webhooks"), method="POST", data=json.dumps({"url": url, "events": ["video.created"]}).encode(),
                                     headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
        cascade, plain = [], []
        for _ in range(n):
            server.tus_create(1 << 20)
            at, body = got.get(timeout=60)
            event = datetime.datetime.fromisoformat(json.loads(body)["created_at"].replace("Z", "+00:00")).timestamp()
            cascade.append((at - event) * 1000)
            t0 = time.time()
            urllib.request.urlopen(urllib.request.Request(url, method="POST", data=body, headers={"Content-Type": "application/json"}), timeout=30).read()
            at, _ = got.get(timeout=60)
            plain.append((at - t0) * 1000)
        for p in (50, 95):
            row("api", f"webhook delivery latency p{p} (event → received)", percentile(cascade, p), percentile(plain, p), "ms",
                "a plain POST to the same endpoint")
    finally:
        server.stop()
        receiver.shutdown()


def machine():
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        pass
    gst = subprocess.run(["gst-inspect-1.0", "--version"], capture_output=True, text=True).stdout.split("\n")[1:2]
    ff = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    return f"{os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, " \
           f"{platform.platform()}, {' '.join(gst)}, {ff}"


def main():
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: run bench/run.sh")
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="cascade-bench-")
    os.chmod(work, 0o755)  # nginx workers run as www-data
    try:
        src = make_source(work)
        if "ladder" not in SKIP:
            bench_ladder(src, work)
        if "ttfp" not in SKIP:
            bench_ttfp(src, work)
        if "pair" not in SKIP:
            bench_pair(src, work)
        if "stream" not in SKIP:
            bench_stream(src, work)
        if "upload" not in SKIP:
            bench_upload(work)
        if "serve" not in SKIP:
            bench_serve(src, work)
        if "metrics" not in SKIP:
            bench_metrics(src, work)
        if "live" not in SKIP:
            bench_live(work)
        if "lowlatency" not in SKIP:
            bench_lowlatency(work)
        if "uploadparts" not in SKIP:
            bench_upload_parts(src, work)
        if "scaled" not in SKIP:
            bench_scaled(src, work)
        if "storage" not in SKIP:
            bench_storage(src, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [f"# Cascade benchmarks, {now:%Y-%m-%d %H:%M} UTC", "",
             f"Machine: {machine()}", "",
             f"Source: {SECONDS} s 1920x1080p30 testsrc2 + AAC; ladder from pipelines/ladder.toml; "
             f"median of {RUNS} alternating runs; total bench time {time.monotonic() - started:.0f} s.", "",
             "| section | metric | Cascade | baseline | ratio | baseline is | target |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = "" if r["met"] is None else f"{r['target']}: {'met' if r['met'] else '**not met**'}"
        lines.append(f"| {r['section']} | {r['metric']} | {r['cascade']:.2f} {r['unit']} | {r['baseline']:.2f} {r['unit']} | "
                     f"×{r['ratio']:.2f} ({r['better']} is better) | {r['baseline_name']} | {verdict} |")
    checked = [r for r in rows if r["met"] is not None]
    lines += ["", f"Targets met: {sum(1 for r in checked if r['met'])} of {len(checked)}."]
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    stem = os.path.join(ROOT, "bench", "results", f"{now:%Y-%m-%d}")
    with open(stem + ".md", "w") as f:
        f.write(table + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"date": now.isoformat(), "machine": machine(), "runs": RUNS, "seconds": SECONDS, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

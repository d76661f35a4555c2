//! The FFmpeg back end: one `ffmpeg` process per job. One decode, `split` into a scaler per rung
//! (from the source, or from a larger rung's frames where the ladder says `scale_from`),
//! libx264 with the ladder's settings, one AAC encode, and the `tee` muxer feeding one `hls`
//! slave per rung (MPEG-TS, AES-128 via `hls_key_info_file`) and one `dash` slave (CMAF) — every
//! stream encoded once. FFmpeg's own playlists and MPD are written into a hidden work dir and only
//! read to learn which segments are finished; Cascade's packaging writes the published manifests,
//! so both back ends publish the same shape.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{EventSink, TranscodeError, TranscodeEvent, TranscodeRequest, Transcoder, Watchdog};
use crate::packaging::{images, Track, AUDIO_REP, DASH_INIT};

/// The FFmpeg back end.
#[derive(Debug, Default, Clone, Copy)]
pub struct FfmpegTranscoder;

/// Name of the work dir inside the output dir (hidden: the media routes never serve it).
pub const WORK_DIR: &str = ".ffmpeg";

/// Everything needed to run and follow one ffmpeg process.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub args: Vec<String>,
    /// (rung, playlist ffmpeg writes for it).
    pub hls_playlists: Vec<(String, PathBuf)>,
    /// Where ffmpeg writes the DASH output.
    pub dash_dir: PathBuf,
    /// DASH representation names by ffmpeg stream index (rungs, then `audio`).
    pub dash_reps: Vec<String>,
}

fn s(v: impl Into<String>) -> String {
    v.into()
}

/// Builds the ffmpeg arguments (never through a shell). Pure: unit-tested below. The input is
/// read with the demuxer `input_format` (from the container allowlist) and may open local files
/// and pipes only: FFmpeg never guesses a format that follows URLs (hls, dash, concat).
pub fn plan(req: &TranscodeRequest, input_format: &str, work: &Path, key_info: Option<&Path>) -> Plan {
    let n = req.renditions.len();
    let has_audio = req.media.audio.is_some();
    let graph = filter_graph(req);
    let mut args: Vec<String> = vec![
        s("-hide_banner"),
        s("-nostdin"),
        s("-y"),
        s("-loglevel"),
        s("error"),
        s("-nostats"),
        s("-progress"),
        s("pipe:1"),
        s("-protocol_whitelist"),
        s("file,pipe"),
        s("-f"),
        s(input_format),
        s("-i"),
        req.input.to_string_lossy().to_string(),
        s("-filter_complex"),
        graph,
    ];
    for i in 0..n {
        args.extend([s("-map"), format!("[v{i}]")]);
    }
    if has_audio {
        args.extend([s("-map"), s("0:a:0")]);
    }
    args.extend(encoder_args(req));
    let (slaves, hls_playlists, dash_dir) = tee_outputs(req, work, key_info);
    args.extend([s("-f"), s("tee"), slaves]);
    args.extend(image_outputs(req));
    let mut dash_reps: Vec<String> = req.renditions.iter().map(|r| r.name.clone()).collect();
    if has_audio {
        dash_reps.push(AUDIO_REP.to_string());
    }
    Plan { args, hls_playlists, dash_dir, dash_reps }
}

/// The `-filter_complex` graph: the source at the output rate, split into one scaler per rung
/// (or a larger rung's frames, see `scale_parent`) labelled `[v{i}]`, and the image filters.
fn filter_graph(req: &TranscodeRequest) -> String {
    let (fn_, fd) = req.fps();
    let n = req.renditions.len();
    // A rung with `scale_from` is scaled from that rung's frames (as in the GStreamer back end),
    // the others from the source: parent[i] is the index of rung i's input rung, if any.
    let parent: Vec<Option<usize>> = (0..n).map(|i| req.scale_parent(i)).collect();
    let from_source: Vec<usize> = (0..n).filter(|&i| parent[i].is_none()).collect();
    // Three more outputs of the source's split feed the poster, the thumbnail and the storyboard.
    let mut graph = format!("[0:v:0]fps={fn_}/{fd},format=yuv420p,split={}", from_source.len() + 3);
    for i in &from_source {
        graph.push_str(&format!("[s{i}]"));
    }
    graph.push_str("[sp][st][ss]");
    // ffmpeg's DASH muxer refuses rungs of different display aspect in one adaptation set, and
    // even sizes rarely keep it exactly (854x480 is not 16:9): every rung gets the source's.
    let (dw, dh) = req
        .media
        .video
        .as_ref()
        .map(|v| (v.display_width.max(1), v.display_height.max(1)))
        .unwrap_or((req.renditions[0].width, req.renditions[0].height));
    for (i, r) in req.renditions.iter().enumerate() {
        let input = match parent[i] {
            Some(p) => format!("c{p}_{i}"),
            None => format!("s{i}"),
        };
        // libswscale's Lanczos for the rungs that name one, its bicubic for every other scaler.
        let lanczos = [crate::ladder::SWSCALE_LANCZOS, "lanczos"].contains(&req.ladder.scaler(&r.name).0);
        let flags = if lanczos { "lanczos" } else { "bicubic" };
        graph.push_str(&format!(";[{input}]scale={}:{}:flags={flags},setdar={dw}/{dh}", r.width, r.height));
        let kids: Vec<usize> = (0..n).filter(|&c| parent[c] == Some(i)).collect();
        if kids.is_empty() {
            graph.push_str(&format!("[v{i}]"));
        } else {
            graph.push_str(&format!(",split={}[v{i}]", kids.len() + 1));
            for c in kids {
                graph.push_str(&format!("[c{i}_{c}]"));
            }
        }
    }
    graph.push_str(&image_filters(req));
    graph
}

/// Poster, thumbnail and storyboard filters on the source's last three split outputs
/// (`[sp][st][ss]`), labelled `[poster]`, `[thumb]` and `[sprite]`.
fn image_filters(req: &TranscodeRequest) -> String {
    let top = &req.renditions[0];
    let poster_at = req.media.duration_s * 0.1;
    let (pw, ph) = images::fit_width(top.width, top.height, images::POSTER_MAX_WIDTH);
    let (tw, th) = images::fit_width(top.width, top.height, images::THUMB_WIDTH);
    let (sw, sh) = images::fit_width(top.width, top.height, images::TILE_WIDTH);
    let (interval, count) = images::storyboard_plan(req.media.duration_s);
    let (cols, rows) = (count.clamp(1, images::COLUMNS), count.div_ceil(images::COLUMNS).max(1));
    format!(
        ";[sp]trim=start={poster_at:.3},trim=end_frame=1,scale={pw}:{ph}:flags=bicubic,setsar=1[poster]\
         ;[st]trim=start={poster_at:.3},trim=end_frame=1,scale={tw}:{th}:flags=bicubic,setsar=1[thumb]\
         ;[ss]fps=1/{interval},scale={sw}:{sh}:flags=bicubic,setsar=1,tile={cols}x{rows}[sprite]"
    )
}

/// Codec arguments: libx264 for every rung (one bitrate per output stream), AAC for the audio.
fn encoder_args(req: &TranscodeRequest) -> Vec<String> {
    let (fn_, fd) = req.fps();
    let gop = req.ladder.gop_frames(fn_, fd);
    let has_audio = req.media.audio.is_some();
    let v = &req.ladder.video;
    let a = &req.ladder.audio;
    let mut args = Vec::new();
    // x264 exactly as the GStreamer back end configures x264enc: fixed GOP, no scene-cut
    // keyframes, closed GOPs, CBR-like VBV with a 600 ms buffer (x264enc's default).
    args.extend([
        s("-c:v"),
        s("libx264"),
        s("-preset"),
        v.preset.clone(),
        s("-profile:v"),
        v.profile.clone(),
        s("-bf"),
        v.bframes.to_string(),
        s("-g"),
        gop.to_string(),
        s("-keyint_min"),
        gop.to_string(),
        s("-sc_threshold"),
        s("0"),
        s("-x264-params"),
        s("open-gop=0"),
    ]);
    for (i, r) in req.renditions.iter().enumerate() {
        if let Some(extra) = req.ladder.x264_options(&r.name) {
            // The stream's own -x264-params replace the general ones for it: repeat open-gop.
            args.extend([format!("-x264-params:v:{i}"), format!("open-gop=0:{extra}")]);
        }
        let k = r.bitrate_kbps;
        args.extend([
            format!("-b:v:{i}"),
            format!("{k}k"),
            format!("-maxrate:v:{i}"),
            format!("{k}k"),
            format!("-bufsize:v:{i}"),
            format!("{}k", k * 6 / 10),
        ]);
    }
    if has_audio {
        args.extend([
            s("-c:a"),
            s("aac"),
            s("-b:a"),
            format!("{}k", a.bitrate_kbps),
            s("-ac"),
            a.channels.to_string(),
            s("-ar"),
            a.sample_rate.to_string(),
        ]);
    }
    args
}

/// The `tee` muxer's slaves: one `hls` per rung (playlists into the work dir), one `dash` for all.
/// Returns (the slaves joined for `-f tee`, each rung's playlist, the DASH dir).
fn tee_outputs(req: &TranscodeRequest, work: &Path, key_info: Option<&Path>) -> (String, Vec<(String, PathBuf)>, PathBuf) {
    let n = req.renditions.len();
    let has_audio = req.media.audio.is_some();
    let mut slaves = Vec::new();
    let mut hls_playlists = Vec::new();
    for (i, r) in req.renditions.iter().enumerate() {
        // Stream indices, not `v:0` specifiers: ':' separates the tee slave's options.
        let select = if has_audio { format!("{i},{n}") } else { i.to_string() };
        let seg = req.out_dir.join("hls").join(&r.name).join("seg%05d.ts");
        let playlist = work.join(format!("{}.m3u8", r.name));
        let mut opts = format!(
            "f=hls:select={select}:hls_time={}:hls_list_size=0:hls_playlist_type=event:hls_flags=temp_file+independent_segments:hls_segment_filename={}",
            req.ladder.segment_seconds,
            seg.display()
        );
        if let Some(k) = key_info {
            opts.push_str(&format!(":hls_key_info_file={}", k.display()));
        }
        slaves.push(format!("[{opts}]{}", playlist.display()));
        hls_playlists.push((r.name.clone(), playlist));
    }
    let dash_dir = work.join("dash");
    let sets = if has_audio { "id=0,streams=v id=1,streams=a" } else { "id=0,streams=v" };
    slaves.push(format!(
        "[f=dash:seg_duration={}:use_template=1:use_timeline=1:window_size=0:remove_at_exit=0:dash_segment_type=mp4:adaptation_sets={sets}:init_seg_name=init-$RepresentationID$.m4s:media_seg_name=seg-$RepresentationID$-$Number%05d$.m4s]{}",
        req.ladder.segment_seconds,
        dash_dir.join("manifest.mpd").display()
    ));
    (slaves.join("|"), hls_playlists, dash_dir)
}

/// One image output per still and the sprite, each its filter's single frame.
fn image_outputs(req: &TranscodeRequest) -> Vec<String> {
    let mut args = Vec::new();
    let img = req.out_dir.join(images::DIR);
    for (label, name) in [("[poster]", images::POSTER), ("[thumb]", images::THUMBNAIL), ("[sprite]", images::SPRITE)] {
        args.extend([
            s("-map"),
            s(label),
            s("-frames:v"),
            s("1"),
            s("-q:v"),
            s("3"),
            s("-update"),
            s("1"),
            img.join(name).to_string_lossy().to_string(),
        ]);
    }
    args
}

/// RFC 6381 codecs string from the `avcC` box of an init segment (`avc1.PPCCLL`).
pub fn avc_codecs_from_init(data: &[u8]) -> Option<String> {
    let pos = data.windows(4).position(|w| w == b"avcC")?;
    let b = data.get(pos + 5..pos + 8)?;
    Some(format!("avc1.{:02X}{:02X}{:02X}", b[0], b[1], b[2]))
}

/// Kills the process if the job ends any other way than by its exit.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What has been reported so far, per track.
#[derive(Default)]
struct Seen {
    hls: HashMap<String, usize>,
    dash: HashMap<usize, usize>,
}

fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(_) => {
            std::fs::copy(from, to)?;
            std::fs::remove_file(from)
        }
    }
}

/// Reports segments ffmpeg has finished since the last call.
fn scan(req: &TranscodeRequest, plan: &Plan, seen: &mut Seen, events: &mut EventSink<'_>) -> Result<(), TranscodeError> {
    let pkg = |e: String| TranscodeError::Packaging(e);
    for (rung, playlist) in &plan.hls_playlists {
        let Ok(text) = std::fs::read(playlist) else { continue };
        let Ok(m3u8_rs::Playlist::MediaPlaylist(pl)) = m3u8_rs::parse_playlist_res(&text) else { continue };
        let done = seen.hls.entry(rung.clone()).or_default();
        for seg in pl.segments.iter().skip(*done) {
            let name = Path::new(&seg.uri).file_name().map(|n| n.to_owned()).unwrap_or_default();
            let path = req.out_dir.join("hls").join(rung).join(name);
            events(TranscodeEvent::Segment { track: Track::Hls(rung.clone()), path, duration: seg.duration as f64 }).map_err(pkg)?;
            *done += 1;
        }
    }
    let Ok(text) = std::fs::read_to_string(plan.dash_dir.join("manifest.mpd")) else { return Ok(()) };
    let mpd = match parse_ffmpeg_mpd(&text) {
        Ok(m) => m,
        Err(e) => {
            debug!(error = %e, "ffmpeg's MPD does not parse yet");
            return Ok(());
        }
    };
    for set in mpd.periods.iter().flat_map(|p| p.adaptations.iter()) {
        for rep in &set.representations {
            let Some(idx) = rep.id.as_deref().and_then(|i| i.parse::<usize>().ok()) else { continue };
            let Some(name) = plan.dash_reps.get(idx) else { continue };
            let Some(tmpl) = rep.SegmentTemplate.as_ref().or(set.SegmentTemplate.as_ref()) else { continue };
            let timescale = tmpl.timescale.unwrap_or(1).max(1) as f64;
            let mut number = tmpl.startNumber.unwrap_or(1);
            let mut list = Vec::new();
            for s in tmpl.SegmentTimeline.iter().flat_map(|t| t.segments.iter()) {
                for _ in 0..=s.r.unwrap_or(0).max(0) {
                    list.push((number, s.d as f64 / timescale));
                    number += 1;
                }
            }
            let done = seen.dash.entry(idx).or_default();
            let dir = req.out_dir.join("dash").join(name);
            for (num, dur) in list.iter().skip(*done) {
                if *done == 0 {
                    let init = plan.dash_dir.join(format!("init-{idx}.m4s"));
                    let data = std::fs::read(&init).map_err(|e| pkg(format!("{}: {e}", init.display())))?;
                    crate::packaging::write_atomic(&dir.join(DASH_INIT), &data).map_err(|e| pkg(e.to_string()))?;
                    if name != AUDIO_REP {
                        if let Some(codecs) = avc_codecs_from_init(&data) {
                            events(TranscodeEvent::VideoCodec { rung: name.clone(), codecs }).map_err(pkg)?;
                        }
                    }
                }
                let from = plan.dash_dir.join(format!("seg-{idx}-{num:05}.m4s"));
                let to = dir.join(format!("seg{num:05}.m4s"));
                move_file(&from, &to).map_err(|e| pkg(format!("{}: {e}", from.display())))?;
                events(TranscodeEvent::Segment { track: Track::Dash(name.clone()), path: to, duration: *dur }).map_err(pkg)?;
                *done += 1;
            }
        }
    }
    Ok(())
}

/// Announces the images ffmpeg wrote and adds the storyboard's WebVTT map.
fn report_images(req: &TranscodeRequest, events: &mut EventSink<'_>) -> Result<(), TranscodeError> {
    let dir = req.out_dir.join(images::DIR);
    for name in [images::POSTER, images::THUMBNAIL, images::SPRITE] {
        if !dir.join(name).is_file() {
            warn!(%name, "ffmpeg wrote no image");
            continue;
        }
        if name == images::SPRITE {
            let top = &req.renditions[0];
            let (interval, count) = images::storyboard_plan(req.media.duration_s);
            let (w, h) = images::fit_width(top.width, top.height, images::TILE_WIDTH);
            let vtt = images::storyboard_vtt(count, interval, req.media.duration_s, w, h);
            crate::packaging::write_atomic(&dir.join(images::VTT), vtt.as_bytes()).map_err(|e| TranscodeError::Packaging(e.to_string()))?;
        }
        events(TranscodeEvent::Image(name.to_string())).map_err(TranscodeError::Packaging)?;
    }
    Ok(())
}

/// Parses the MPD ffmpeg writes (its empty `ServiceDescription`/`ProgramInformation` are dropped
/// first: dash-mpd rejects them).
fn parse_ffmpeg_mpd(text: &str) -> Result<dash_mpd::MPD, String> {
    dash_mpd::parse(text).map_err(|e| e.to_string())
}

fn stderr_tail(buf: &Mutex<String>) -> String {
    let t = buf.lock().map(|s| s.clone()).unwrap_or_default();
    let t = t.trim();
    if t.is_empty() {
        "ffmpeg failed without a message".into()
    } else {
        t.to_string()
    }
}

impl Transcoder for FfmpegTranscoder {
    fn name(&self) -> &'static str {
        "ffmpeg"
    }

    fn run(&self, req: &TranscodeRequest, events: &mut EventSink<'_>, cancel: &AtomicBool) -> Result<(), TranscodeError> {
        if req.renditions.is_empty() {
            return Err(TranscodeError::Runtime("no renditions to produce".into()));
        }
        if req.growing.is_some() {
            return Err(TranscodeError::Build("streaming ingest is GStreamer-only".into()));
        }
        let work = req.out_dir.join(WORK_DIR);
        std::fs::create_dir_all(work.join("dash")).map_err(|e| TranscodeError::Packaging(e.to_string()))?;
        std::fs::create_dir_all(req.out_dir.join(images::DIR)).map_err(|e| TranscodeError::Packaging(e.to_string()))?;
        // The key file ffmpeg reads sits in the job's private scratch dir, never in the media tree.
        let key_info = match &req.key {
            Some(k) => {
                std::fs::create_dir_all(&req.scratch_dir).map_err(|e| TranscodeError::Packaging(e.to_string()))?;
                let key_path = req.scratch_dir.join("hls.key");
                let info_path = req.scratch_dir.join("hls.keyinfo");
                std::fs::write(&key_path, k.key).map_err(|e| TranscodeError::Packaging(e.to_string()))?;
                let info = format!("{}\n{}\n{}\n", crate::packaging::KEY_URI, key_path.display(), hex::encode(k.iv));
                std::fs::write(&info_path, info).map_err(|e| TranscodeError::Packaging(e.to_string()))?;
                Some(info_path)
            }
            None => None,
        };
        let result = self.run_process(req, &work, key_info.as_deref(), events, cancel);
        if key_info.is_some() {
            let _ = std::fs::remove_file(req.scratch_dir.join("hls.key"));
            let _ = std::fs::remove_file(req.scratch_dir.join("hls.keyinfo"));
        }
        if result.is_ok() && !req.keep_work {
            let _ = std::fs::remove_dir_all(&work);
        }
        result
    }
}

/// Reads ffmpeg's `-progress` output on a thread: the positions (seconds) it reaches.
fn read_progress(stdout: std::process::ChildStdout) -> mpsc::Receiver<f64> {
    let (tx, rx) = mpsc::channel::<f64>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(us) = line.strip_prefix("out_time_us=").and_then(|v| v.trim().parse::<i64>().ok()) {
                if us >= 0 && tx.send(us as f64 / 1e6).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

/// Reads ffmpeg's stderr on a thread, keeping its last 4000 bytes for the error message.
fn keep_tail(mut stderr: std::process::ChildStderr) -> Arc<Mutex<String>> {
    let tail = Arc::new(Mutex::new(String::new()));
    let tail2 = tail.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut t) = tail2.lock() {
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
                if t.len() > 4000 {
                    let cut = t.len() - 4000;
                    let cut = (cut..t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(t.len());
                    t.drain(..cut);
                }
            }
        }
    });
    tail
}

impl FfmpegTranscoder {
    fn run_process(
        &self,
        req: &TranscodeRequest,
        work: &Path,
        key_info: Option<&Path>,
        events: &mut EventSink<'_>,
        cancel: &AtomicBool,
    ) -> Result<(), TranscodeError> {
        let input_format =
            crate::probe::accepted_container(&req.input).map_err(|e| TranscodeError::Runtime(e.to_string()))?.ffmpeg_format();
        let plan = plan(req, input_format, work, key_info);
        debug!(args = ?plan.args, "ffmpeg");
        let child = Command::new("ffmpeg")
            .args(&plan.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| TranscodeError::Build(format!("cannot run ffmpeg: {e}")))?;
        let mut child = KillOnDrop(child);
        info!(renditions = req.renditions.len(), "ffmpeg running");

        let stdout = child.0.stdout.take().ok_or_else(|| TranscodeError::Build("no stdout".into()))?;
        let rx = read_progress(stdout);
        let stderr = child.0.stderr.take().ok_or_else(|| TranscodeError::Build("no stderr".into()))?;
        let tail = keep_tail(stderr);

        let mut watchdog = Watchdog::new(req, cancel);
        let mut position = -1.0f64;
        let mut seen = Seen::default();
        loop {
            watchdog.check()?;
            let mut newest = None;
            while let Ok(p) = rx.try_recv() {
                newest = Some(p);
            }
            if let Some(p) = newest {
                if p > position + 0.001 {
                    position = p;
                    watchdog.progressed();
                    events(TranscodeEvent::Position(p)).map_err(TranscodeError::Packaging)?;
                }
            }
            let exited = child.0.try_wait().map_err(|e| TranscodeError::Runtime(e.to_string()))?;
            scan(req, &plan, &mut seen, events)?;
            match exited {
                Some(status) if status.success() => {
                    info!(elapsed_s = watchdog.elapsed_s(), "ffmpeg finished");
                    report_images(req, events)?;
                    return Ok(());
                }
                Some(status) if std::os::unix::process::ExitStatusExt::signal(&status).is_some() => {
                    warn!(%status, "ffmpeg was killed");
                    return Err(TranscodeError::Killed(format!("ffmpeg ended by {status}")));
                }
                Some(status) => {
                    let msg = stderr_tail(&tail);
                    warn!(%status, %msg, "ffmpeg failed");
                    return Err(TranscodeError::Runtime(format!("ffmpeg exited with {status}: {msg}")));
                }
                None => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::test_support::request;

    fn value_after<'a>(args: &'a [String], flag: &str) -> &'a str {
        let i = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} missing in {args:?}"));
        &args[i + 1]
    }

    #[test]
    fn three_rung_ladder_arguments() {
        let req = request(true);
        let p = plan(&req, "mov", Path::new("/out/.ffmpeg"), Some(Path::new("/scratch/hls.keyinfo")));
        let a = &p.args;
        assert_eq!(value_after(a, "-i"), "/in/source");
        assert_eq!(value_after(a, "-protocol_whitelist"), "file,pipe");
        assert_eq!(value_after(a, "-f"), "mov", "the demuxer is named before the input");
        assert_eq!(value_after(a, "-progress"), "pipe:1");
        assert_eq!(
            value_after(a, "-filter_complex"),
            // 480p (Lanczos) and 360p are scaled from the 720p rung's frames (`scale_from`).
            "[0:v:0]fps=30/1,format=yuv420p,split=4[s0][sp][st][ss];\
             [s0]scale=1280:720:flags=bicubic,setdar=1280/720,split=3[v0][c0_1][c0_2];\
             [c0_1]scale=854:480:flags=lanczos,setdar=1280/720[v1];[c0_2]scale=640:360:flags=bicubic,setdar=1280/720[v2]\
             ;[sp]trim=start=1.000,trim=end_frame=1,scale=1280:720:flags=bicubic,setsar=1[poster]\
             ;[st]trim=start=1.000,trim=end_frame=1,scale=320:180:flags=bicubic,setsar=1[thumb]\
             ;[ss]fps=1/1,scale=160:90:flags=bicubic,setsar=1,tile=10x1[sprite]"
        );
        let maps: Vec<&str> = a.windows(2).filter(|w| w[0] == "-map").map(|w| w[1].as_str()).collect();
        assert_eq!(maps, vec!["[v0]", "[v1]", "[v2]", "0:a:0", "[poster]", "[thumb]", "[sprite]"]);
        assert_eq!(a.last().unwrap(), "/out/images/storyboard.jpg");
        assert_eq!(value_after(a, "-c:v"), "libx264");
        assert_eq!(value_after(a, "-preset"), "veryfast");
        assert_eq!(value_after(a, "-g"), "120");
        assert_eq!(value_after(a, "-keyint_min"), "120");
        assert_eq!(value_after(a, "-sc_threshold"), "0");
        assert_eq!(value_after(a, "-bf"), "0");
        assert_eq!(value_after(a, "-b:v:0"), "2800k");
        assert_eq!(value_after(a, "-b:v:1"), "1400k");
        assert_eq!(value_after(a, "-b:v:2"), "800k");
        assert_eq!(value_after(a, "-bufsize:v:2"), "480k");
        // The ladder's x264_threads are for the GStreamer back end only (see ladder.toml).
        assert!(!a.iter().any(|x| x.starts_with("-threads")));
        assert_eq!(value_after(a, "-b:a"), "128k");
        assert_eq!(value_after(a, "-ar"), "48000");
        assert!(a.windows(2).any(|w| w[0] == "-f" && w[1] == "tee"), "{a:?}");
        let slaves: Vec<&str> = value_after(a, "tee").split('|').collect();
        assert_eq!(slaves.len(), 4);
        assert_eq!(
            slaves[0],
            "[f=hls:select=0,3:hls_time=4:hls_list_size=0:hls_playlist_type=event:hls_flags=temp_file+independent_segments:\
             hls_segment_filename=/out/hls/720p/seg%05d.ts:hls_key_info_file=/scratch/hls.keyinfo]/out/.ffmpeg/720p.m3u8"
        );
        assert!(slaves[2].contains("select=2,3") && slaves[2].contains("/out/hls/360p/seg%05d.ts"));
        assert!(slaves[3].starts_with("[f=dash:seg_duration=4:") && slaves[3].contains("adaptation_sets=id=0,streams=v id=1,streams=a"));
        assert!(slaves[3].ends_with("]/out/.ffmpeg/dash/manifest.mpd"));
        assert_eq!(p.dash_reps, vec!["720p", "480p", "360p", "audio"]);
        assert_eq!(p.hls_playlists[1], ("480p".to_string(), PathBuf::from("/out/.ffmpeg/480p.m3u8")));
        // Never a shell: no argument is a command line.
        assert!(!a.iter().any(|x| x == "sh" || x == "-c"));
    }

    #[test]
    fn a_rungs_own_x264_options_apply_to_its_stream_only() {
        let mut req = request(true);
        let toml = include_str!("../../pipelines/ladder.toml").replacen(
            "name = \"480p\"\n",
            "name = \"480p\"\nx264_options = \"subme=6:ref=3\"\n",
            1,
        );
        req.ladder = crate::ladder::Ladder::parse(&toml).unwrap();
        let p = plan(&req, "mov", Path::new("/w"), None);
        assert_eq!(value_after(&p.args, "-x264-params"), "open-gop=0");
        assert_eq!(value_after(&p.args, "-x264-params:v:1"), "open-gop=0:subme=6:ref=3", "480p is the second video stream");
        assert!(!p.args.iter().any(|x| x == "-x264-params:v:0" || x == "-x264-params:v:2"));
    }

    #[test]
    fn no_audio_and_no_key() {
        let p = plan(&request(false), "matroska", Path::new("/w"), None);
        assert!(!p.args.iter().any(|x| x == "0:a:0" || x == "-c:a"));
        let slaves = value_after(&p.args, "tee");
        assert!(slaves.contains("select=0:") && !slaves.contains("hls_key_info_file"));
        assert!(slaves.contains("adaptation_sets=id=0,streams=v:"));
        assert_eq!(p.dash_reps, vec!["720p", "480p", "360p"]);
    }

    #[test]
    fn ffmpeg_mpd_parses() {
        let mpd = parse_ffmpeg_mpd(include_str!("testdata/ffmpeg-5.1.mpd")).expect("parse");
        let reps: Vec<_> = mpd.periods[0].adaptations.iter().flat_map(|a| a.representations.iter()).collect();
        assert_eq!(reps.len(), 3);
    }

    #[test]
    fn codecs_from_avcc() {
        let mut init = b"....ftypcmfc....avcC".to_vec();
        init.extend([1, 0x64, 0x00, 0x1F, 0xFF]);
        assert_eq!(avc_codecs_from_init(&init).as_deref(), Some("avc1.64001F"));
        assert_eq!(avc_codecs_from_init(b"nothing"), None);
    }
}

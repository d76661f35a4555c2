//! Scale-out with no shared filesystem: two API nodes and two worker processes, each with a data
//! dir of its own, sharing only one PostgreSQL database and one S3 bucket (the tests' S3 server,
//! a separate process). Every server and command of this test binary runs in that configuration,
//! whatever `TEST_STORE` and `TEST_STORAGE` say.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const LEASE: u64 = 4;

/// A `cascade worker` process on `data_dir` (the site's database and bucket), and its log.
struct Worker {
    child: tokio::process::Child,
    log: std::path::PathBuf,
}

impl Worker {
    fn start(data_dir: &Path) -> Worker {
        let log = data_dir.with_extension("worker.log");
        let child = spawn_worker(data_dir, &log, &[("CASCADE_JOB_LEASE", &LEASE.to_string()), ("CASCADE_WORKERS", "1")]);
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its id as a job holder, from its start-up line.
    async fn node(&self) -> String {
        wait_some(Duration::from_secs(30), "the worker's start-up line", || async {
            let log = self.log();
            let rest = log.split(" node=").nth(1)?;
            Some(rest.split_whitespace().next()?.to_string())
        })
        .await
    }
}

/// Every segment a media playlist lists is served by `server` (200, the bytes the bucket has).
async fn every_listed_segment_is_served(server: &Server, hls: &str) -> usize {
    let m = master(server, hls).await;
    let mut n = 0;
    for var in &m.variants {
        let (pl, _) = media_playlist(server, &sibling(hls, &var.uri)).await;
        for seg in &pl.segments {
            let u = sibling(&sibling(hls, &var.uri), &seg.uri);
            let (status, _) = server.get_text(&u).await;
            assert_eq!(status, 200, "{u}");
            n += 1;
        }
    }
    n
}

/// Polls a video's media playlists (and the last segment each lists) through `client` until
/// `stop`, as players on them do. Every answer must be 200, and no playlist may list fewer
/// segments than it did before (a player on it would lose its place). Returns what went wrong
/// and the number of rounds.
async fn watch_playlists(client: reqwest::Client, urls: Vec<String>, stop: Arc<AtomicBool>) -> (Vec<String>, usize) {
    let (mut listed, mut problems, mut rounds) = (vec![0usize; urls.len()], Vec::new(), 0);
    while !stop.load(Ordering::Acquire) {
        for (i, url) in urls.iter().enumerate() {
            let name = url.rsplit('/').take(2).collect::<Vec<_>>().join(" of ");
            let answer = match client.get(url).send().await {
                Ok(r) if r.status() == 200 => r.text().await.map_err(|e| e.to_string()),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            let text = match answer {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let Ok(pl) = m3u8_rs::parse_media_playlist_res(text.as_bytes()) else {
                problems.push(format!("{name}: not a media playlist: {text}"));
                continue;
            };
            if pl.segments.len() < listed[i] {
                problems.push(format!("{name} went from {} segments to {}", listed[i], pl.segments.len()));
            }
            listed[i] = listed[i].max(pl.segments.len());
            if let Some(last) = pl.segments.last() {
                match client.get(sibling(url, &last.uri)).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => problems.push(format!("{name}: its last segment {}: HTTP {}", last.uri, r.status())),
                    Err(e) => problems.push(format!("{name}: its last segment {}: {e}", last.uri)),
                }
            }
        }
        rounds += 1;
        // The poll interval of a player reloading its playlist, faster.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (problems, rounds)
}

/// Restarts the machine's PostgreSQL (the cluster the tests use) and waits until it answers.
async fn restart_postgres() {
    let version =
        std::fs::read_dir("/etc/postgresql").unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).next().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("pg_ctlcluster").args(["--skip-systemctl-redirect", &version, "main", "restart"]).output(),
    )
    .await
    .expect("pg_ctlcluster restart within 120 s")
    .unwrap();
    assert!(out.status.success(), "pg_ctlcluster restart: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_nodes_and_workers_share_only_the_database_and_the_bucket() {
    // The only test of this binary: every process it starts is in the scaled configuration.
    std::env::set_var("TEST_STORE", "postgres");
    std::env::set_var("TEST_STORAGE", "s3");
    let site = tempfile::tempdir().unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    for d in &dirs {
        share_site(d.path(), site.path());
    }
    let url = database_url(site.path()).unwrap();
    // API nodes run no workers; uploads go through the queue, not streamed where they arrive.
    let api_env = [("CASCADE_NO_WORKERS", "true"), ("CASCADE_STREAM_INGEST", "false"), ("CASCADE_JOB_LEASE", "4")];
    let a = Server::start_in(dirs[0].path(), &api_env).await;
    let b = Server::start_in(dirs[1].path(), &api_env).await;
    let mut workers = [Worker::start(dirs[2].path()), Worker::start(dirs[3].path())];
    let nodes = [workers[0].node().await, workers[1].node().await];
    assert_ne!(nodes[0], nodes[1]);

    // Uploaded through A, seen through B.
    let src = clip_720p("scale_s3_30.mp4", 30.0).await;
    let id = a.upload_ok(&src, "through A").await;
    assert_eq!(b.get_video(&id).await["title"], "through A");
    let first = wait_some(Duration::from_secs(60), "a worker to claim the job", || holder(&url, &id)).await;
    let victim = nodes.iter().position(|n| *n == first).expect("the holder is one of the workers");
    let survivor = 1 - victim;

    // Watched through B while the worker encodes: B has no file of it, and every segment its
    // playlists list comes from the bucket.
    let v = b.wait_for(&id, Duration::from_secs(300), |v| v["playable"] == true).await;
    let hls_b = v["playback"]["hls"].as_str().unwrap().to_string();
    assert_eq!(v["status"], "processing", "a 30 s ladder is still encoding when its first segments are out: {v}");
    assert!(every_listed_segment_is_served(&b, &hls_b).await > 0);
    assert!(files_under(&dirs[1].path().join("media")).is_empty(), "node B keeps media files");

    // Players on B go on through what follows: the kill, the take-over, the database restart.
    let urls = master(&b, &hls_b).await.variants.iter().map(|var| sibling(&hls_b, &var.uri)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_playlists(b.client.clone(), urls, stop.clone()));

    // The worker holding the job is killed: the other takes it over once the lease ran out.
    workers[victim].child.start_kill().unwrap();
    let killed_at = Instant::now();
    workers[victim].child.wait().await.unwrap();
    wait_some(Duration::from_secs(LEASE + 10), "the other worker to take the job over", || async {
        holder(&url, &id).await.filter(|h| *h == nodes[survivor])
    })
    .await;
    eprintln!("taken over {:?} after the kill", killed_at.elapsed());

    // An upload acknowledged through B, then the database restarts under every process.
    let short = clip("scale_s3_short.mp4", "testsrc2=size=640x360:rate=25", Some("sine"), 6.0, &[]).await;
    let second = b.upload_ok(&short, "through B").await;
    restart_postgres().await;

    for (server, vid) in [(&a, &id), (&b, &second)] {
        let v = server.wait_final(vid, Duration::from_secs(400)).await;
        assert_eq!(v["status"], "ready", "{v}\n{}", workers[survivor].log());
    }
    // Nothing went missing or back for the players on B: the earlier run's output stayed in
    // the bucket until the new run's replaced it.
    stop.store(true, Ordering::Release);
    let (problems, rounds) = watcher.await.unwrap();
    let b_log: String = b.log().lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect::<Vec<_>>().join("\n");
    assert!(problems.is_empty(), "seen through B across the take-over ({rounds} rounds): {problems:#?}\nB's warnings and errors:\n{b_log}");
    assert!(rounds > 10, "{rounds} rounds");
    let v = b.get_video(&id).await;
    assert!(v["attempts"].as_u64().unwrap() >= 2, "{v}");
    assert!(workers[survivor].log().contains("took over a job whose holder's lease expired"), "{}", workers[survivor].log());

    // Exactly one complete set of outputs in the bucket: each rendition holds the segments its
    // playlist lists and nothing else (nothing left of the killed run), served through B.
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let stored = b.media_files(&id).await;
    for (name, _) in &stored {
        assert!(!name.ends_with(".tmp") && !name.ends_with(".part") && !name.contains(".fetch"), "leftover {name}");
    }
    let m = master(&b, &hls).await;
    assert_eq!(m.variants.len(), 3);
    for var in &m.variants {
        let (pl, text) = media_playlist(&b, &sibling(&hls, &var.uri)).await;
        assert!(pl.end_list, "{text}");
        let rendition = var.uri.split('/').next().unwrap();
        let listed: BTreeSet<String> = pl.segments.iter().map(|s| s.uri.clone()).collect();
        let dir = format!("hls/{rendition}/");
        let kept: BTreeSet<String> =
            stored.iter().filter_map(|(n, _)| n.strip_prefix(&dir)).filter(|n| n.ends_with(".ts")).map(str::to_string).collect();
        assert_eq!(listed, kept, "{rendition}: segments listed vs in the bucket");
    }
    assert!(every_listed_segment_is_served(&b, &hls).await > 0);
    ffmpeg_decode(&hls).await.unwrap_or_else(|e| panic!("HLS decode through B: {e}"));
    let d = ffprobe_duration(&hls).await;
    assert!((d - 30.0).abs() <= 0.5, "duration {d}");
    let dash = v["playback"]["dash"].as_str().unwrap().to_string();
    ffmpeg_decode(&dash).await.unwrap_or_else(|e| panic!("DASH decode through B: {e}"));

    // No live process keeps media of a ready video on its disk: the bucket is the only copy.
    // (The killed worker's partial output stays on its disk, where nothing serves it from.)
    for (i, d) in dirs.iter().enumerate().filter(|(i, _)| *i != 2 + victim) {
        assert!(files_under(&d.path().join("media")).is_empty(), "process {i} keeps media files in {}", d.path().display());
    }
    workers[survivor].child.start_kill().unwrap();
    workers[survivor].child.wait().await.unwrap();
}

/// A resumable upload's bytes so far are on the API node that received them: a chunk sent to
/// another node is answered `409` saying so (tus clients then ask for the offset again and
/// retry, which a load balancer routing uploads by URL sends to the right node), nothing of it
/// is kept, and the upload goes on through its node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_upload_sent_to_another_node_is_sent_back() {
    std::env::set_var("TEST_STORE", "postgres");
    std::env::set_var("TEST_STORAGE", "s3");
    let site = tempfile::tempdir().unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for d in &dirs {
        share_site(d.path(), site.path());
    }
    let env = [("CASCADE_STREAM_INGEST", "false")];
    let a = Server::start_in(dirs[0].path(), &env).await;
    let b = Server::start_in(dirs[1].path(), &env).await;
    let src = clip("scale_s3_tus.mp4", "testsrc2=size=320x240:rate=25", Some("sine"), 3.0, &[]).await;
    let data = std::fs::read(&src).unwrap();
    let half = data.len() / 2;
    let r = a.client.post(a.url("/api/uploads")).header("Tus-Resumable", "1.0.0").header("Upload-Length", data.len()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.headers()["cascade-video-id"].to_str().unwrap().to_string();
    let path = format!("/api/uploads/{id}");
    let patch = |server: &Server, offset: usize, bytes: &[u8]| {
        server
            .client
            .patch(server.url(&path))
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset)
            .body(bytes.to_vec())
            .send()
    };
    let offset = |server: &Server| server.client.head(server.url(&path)).header("Tus-Resumable", "1.0.0").send();
    let upload_offset = |r: &reqwest::Response| r.headers()["upload-offset"].to_str().unwrap().parse::<usize>().unwrap();

    let r = patch(&a, 0, &data[..half]).await.unwrap();
    assert_eq!((r.status().as_u16(), upload_offset(&r)), (204, half));
    let r = patch(&b, half, &data[half..]).await.unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "conflict", "{body}");
    assert!(body["message"].as_str().unwrap().contains("on the Cascade node that received them"), "{body}");
    let r = offset(&b).await.unwrap();
    assert_eq!((r.status().as_u16(), upload_offset(&r)), (200, half), "nothing of the refused chunk is kept");
    let r = patch(&a, half, &data[half..]).await.unwrap();
    assert_eq!((r.status().as_u16(), upload_offset(&r)), (204, data.len()));
    let v = b.wait_final(&id, Duration::from_secs(300)).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", a.log());
}

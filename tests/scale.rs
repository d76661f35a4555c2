//! Scale-out: several Cascade processes on one PostgreSQL database (and, until media goes to S3
//! storage, one shared data dir, as a shared filesystem would give them). These tests run in the
//! scaled configuration whatever `TEST_STORE` says.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::live::*;
use common::*;
use serde_json::Value;

/// A server's id as a job holder, from its start-up line.
fn node_of(server: &Server) -> String {
    let log = server.log();
    let rest = log.split(" node=").nth(1).unwrap_or_else(|| panic!("no node id in the log:\n{log}"));
    rest.split_whitespace().next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_process_is_killed_is_finished_by_another() {
    // Every server and command of this test binary runs on PostgreSQL (one test in it).
    std::env::set_var("TEST_STORE", "postgres");
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path()).unwrap();
    const LEASE: u64 = 4;
    // Uploads go through the queue (not streamed on the node that receives them), so either
    // node may claim the job.
    let env = [("CASCADE_JOB_LEASE", "4"), ("CASCADE_STREAM_INGEST", "false")];
    let mut nodes = [Server::start_in(dir.path(), &env).await, Server::start_in(dir.path(), &env).await];
    let ids: Vec<String> = nodes.iter().map(node_of).collect();
    assert_ne!(ids[0], ids[1]);

    let src = clip_720p("scale20.mp4", 20.0).await;
    let id = nodes[0].upload_ok(&src, "killed mid-job").await;
    // Node B sees node A's upload: one database.
    assert_eq!(nodes[1].get_video(&id).await["title"], "killed mid-job");
    let first = wait_some(Duration::from_secs(60), "a node to claim the job", || holder(&url, &id)).await;
    let victim = ids.iter().position(|n| *n == first).expect("the holder is one of the nodes");
    let survivor = 1 - victim;
    nodes[victim].child.start_kill().unwrap();
    let killed_at = Instant::now();
    nodes[victim].child.wait().await.unwrap();
    // The survivor takes the job over once the dead node's lease has run out.
    let taken = wait_some(Duration::from_secs(LEASE + 10), "the other node to take the job over", || async {
        holder(&url, &id).await.filter(|h| *h == ids[survivor])
    })
    .await;
    assert_eq!(taken, ids[survivor]);
    eprintln!("taken over {:?} after the kill", killed_at.elapsed());

    let v = nodes[survivor].wait_final(&id, Duration::from_secs(300)).await;
    assert_eq!(v["status"], "ready", "{v}\n{}", nodes[survivor].log());
    assert_eq!(v["attempts"], 2, "{v}");
    assert!(nodes[survivor].log().contains("took over a job whose holder's lease expired"), "{}", nodes[survivor].log());

    // Exactly one complete set of outputs: each rendition's directory holds the segments its
    // playlist lists and nothing else (nothing left of the killed run), and every one is served.
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let m = master(&nodes[survivor], &hls).await;
    assert_eq!(m.variants.len(), 3);
    for var in &m.variants {
        let (pl, text) = media_playlist(&nodes[survivor], &sibling(&hls, &var.uri)).await;
        assert!(pl.end_list, "{text}");
        let rendition = var.uri.split('/').next().unwrap();
        let listed: BTreeSet<String> =
            pl.segments.iter().map(|s| s.uri.rsplit('/').next().unwrap().split('?').next().unwrap().to_string()).collect();
        let dir = format!("hls/{rendition}/");
        let stored: BTreeSet<String> = nodes[survivor]
            .media_files(&id)
            .await
            .into_iter()
            .filter_map(|(n, _)| n.strip_prefix(&dir).map(str::to_string))
            .filter(|n| n.ends_with(".ts"))
            .collect();
        assert_eq!(listed, stored, "{rendition}: segments listed vs stored");
        for seg in &pl.segments {
            let u = sibling(&sibling(&hls, &var.uri), &seg.uri);
            let (status, _) = nodes[survivor].get_text(&u).await;
            assert_eq!(status, 200, "{u}");
        }
    }
    ffmpeg_decode(&hls).await.unwrap_or_else(|e| panic!("HLS decode: {e}"));
    let d = ffprobe_duration(&hls).await;
    assert!((d - 20.0).abs() <= 0.5, "duration {d}");
}

/// A `cascade serve` node without workers (`CASCADE_NO_WORKERS`) queues what it receives; a
/// `cascade worker` process (no HTTP) on the same database and data dir runs it, and a watcher
/// of the serve node's event stream sees the worker's progress as it happens (NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_runs_what_a_serve_node_without_workers_queued() {
    use futures_util::StreamExt;
    std::env::set_var("TEST_STORE", "postgres");
    let dir = tempfile::tempdir().unwrap();
    let api = Server::start_in(dir.path(), &[("CASCADE_NO_WORKERS", "true"), ("CASCADE_STREAM_INGEST", "false")]).await;
    let src = clip_720p("worker12.mp4", 12.0).await;
    let id = api.upload_ok(&src, "for the worker").await;
    // No process runs the queue yet.
    assert_eq!(api.get_video(&id).await["status"], "queued");
    assert!(!api.log().contains("worker started"), "{}", api.log());

    // Follow the serve node's event stream until the video is final.
    let (client, events_url) = (api.client.clone(), api.url(&format!("/api/videos/{id}/events")));
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let mut first_tx = Some(first_tx);
    let sse = tokio::spawn(async move {
        let r = client.get(&events_url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut body = r.bytes_stream();
        let (mut text, mut seen) = (String::new(), Vec::<Value>::new());
        let deadline = Instant::now() + Duration::from_secs(300);
        // Until the end, the deadline, or the client's time limit on a silent stream.
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline.into(), body.next()).await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let event = text[..end].to_string();
                text = text[end + 2..].to_string();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) {
                    seen.push(serde_json::from_str(data.trim()).unwrap());
                    if let Some(tx) = first_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            if seen.last().is_some_and(|v| v["status"] == "ready" || v["status"] == "failed") {
                break;
            }
        }
        seen
    });

    // The watcher is connected (its first event came) before a worker exists.
    tokio::time::timeout(Duration::from_secs(30), first_rx).await.expect("the first event within 30 s").unwrap();
    let log = dir.path().with_extension("worker.log");
    // The serve node's database and media storage (in the S3 configuration the bucket is what
    // they share).
    let mut worker = spawn_worker(dir.path(), &log, &[]);
    let v = api.wait_final(&id, Duration::from_secs(300)).await;
    let worker_log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(v["status"], "ready", "{v}\n{worker_log}");
    assert!(worker_log.contains("Cascade worker started"), "{worker_log}");
    ffmpeg_decode(v["playback"]["hls"].as_str().unwrap()).await.unwrap_or_else(|e| panic!("HLS decode: {e}"));

    // The watcher of the serve node saw the worker's run: processing with progress, then ready.
    let seen = tokio::time::timeout(Duration::from_secs(60), sse).await.expect("the event stream ends at ready").unwrap();
    let statuses: Vec<&str> = seen.iter().map(|v| v["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.first(), Some(&"queued"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"ready"), "{statuses:?}");
    assert!(
        seen.iter().any(|v| v["status"] == "processing" && v["progress"].as_f64().is_some_and(|p| p > 0.0 && p < 1.0)),
        "no progress of the worker's run reached the serve node's watcher: {statuses:?}"
    );
    worker.start_kill().unwrap();
    worker.wait().await.unwrap();
}

/// Without a shared database there is no queue for a worker to share, and no one to leave it to.
#[test]
fn roles_without_a_database_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env) in [(vec!["worker"], vec![]), (vec!["serve"], vec![("CASCADE_NO_WORKERS", "true")])] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(&args)
            .current_dir(repo())
            .env_remove("CASCADE_DATABASE_URL")
            .env("CASCADE_DATA_DIR", dir.path())
            .envs(env)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("set CASCADE_DATABASE_URL"), "{args:?}: {err}");
    }
}

/// The seconds of media a (live) media playlist lists now.
async fn listed_seconds(server: &Server, url: &str) -> f64 {
    let (_, text) = server.get_text(url).await;
    m3u8_rs::parse_media_playlist_res(text.as_bytes()).map_or(0.0, |p| p.segments.iter().map(|s| s.duration as f64).sum())
}

/// Serve nodes on one database: a node that starts leaves the broadcasts on air in other nodes
/// alone (it used to fail every broadcast on air, as if it were the only process), and fails the
/// broadcast of a node that died once that node's lease on it has run out, so its stream can go
/// live again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_leaves_the_others_broadcasts_on_air_and_fails_a_dead_nodes() {
    std::env::set_var("TEST_STORE", "postgres");
    let dir = tempfile::tempdir().unwrap();
    const LEASE: u64 = 4;
    let env = [("CASCADE_JOB_LEASE", "4")];
    let mut a = Server::start_in(dir.path(), &env).await;
    let stream = new_stream(&a, "on air in A").await;
    let sid = stream["id"].as_str().unwrap().to_string();
    let _publisher = publish(&publish_url(&stream), 300, H264, true);
    let vid = wait_on_air(&a, &sid).await;

    // B starts on the same database while A's broadcast is on air.
    let b = Server::start_in(dir.path(), &env).await;
    assert_eq!(get_stream(&b, &sid).await["status"], "live", "{}", b.log());
    assert_eq!(b.get_video(&vid).await["status"], "processing", "{}", b.log());
    // B looks for broadcasts left on air every lease: after two more leases of the broadcast (its
    // playlist grew by that much), it is still on air.
    let hls = b.get_video(&vid).await["playback"]["hls"].as_str().unwrap().to_string();
    let rendition = sibling(&hls, &master(&b, &hls).await.variants[0].uri);
    let at_start = listed_seconds(&b, &rendition).await;
    let went_on = wait_until(T, async || listed_seconds(&b, &rendition).await >= at_start + 2.0 * LEASE as f64).await;
    assert!(went_on, "the broadcast did not go on\n{}", a.log());
    assert_eq!(b.get_video(&vid).await["status"], "processing", "{}", b.log());
    assert_eq!(get_stream(&b, &sid).await["status"], "live");

    // A dies: B fails its broadcast once A's lease on it has run out (then at its next look).
    a.kill9().await;
    let killed = Instant::now();
    let failed = wait_until(Duration::from_secs(2 * LEASE + 10), async || b.get_video(&vid).await["status"] == "failed").await;
    assert!(failed, "{}\n{}", b.get_video(&vid).await, b.log());
    eprintln!("failed {:?} after the kill", killed.elapsed());
    let v = b.get_video(&vid).await;
    assert_eq!(v["error"]["code"], "broadcast_interrupted", "{v}");
    assert_eq!(get_stream(&b, &sid).await["status"], "idle");
    // B did it (its log line follows the record's change).
    let said =
        wait_until(Duration::from_secs(10), async || b.log().contains("broadcasts a stopped process left on air were marked failed")).await;
    assert!(said, "{}", b.log());
}

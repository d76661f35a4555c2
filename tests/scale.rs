//! Scale-out: several Cascade processes on one PostgreSQL database (and, until media goes to S3
//! storage, one shared data dir, as a shared filesystem would give them). These tests run in the
//! scaled configuration whatever `TEST_STORE` says.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The holder of a video's job, read from the database (`None`: no job, or not running).
async fn holder(url: &str, id: &str) -> Option<String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let v: Option<Vec<u8>> = sqlx::query_scalar("SELECT v FROM cascade_kv WHERE tree = 'jobs' AND k = $1")
        .bind(id.as_bytes())
        .fetch_optional(&mut c)
        .await
        .unwrap();
    let job: Value = serde_json::from_slice(&v?).unwrap();
    job["holder"].as_str().map(String::from)
}

/// A server's id as a job holder, from its start-up line.
fn node_of(server: &Server) -> String {
    let log = server.log();
    let rest = log.split(" node=").nth(1).unwrap_or_else(|| panic!("no node id in the log:\n{log}"));
    rest.split_whitespace().next().unwrap().to_string()
}

/// Waits until `f` gives `Some`, at most `timeout`.
async fn wait_some<T, F: std::future::Future<Output = Option<T>>>(timeout: Duration, what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        let on_disk: BTreeSet<String> = std::fs::read_dir(dir.path().join("media").join(&id).join("hls").join(rendition))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".ts"))
            .collect();
        assert_eq!(listed, on_disk, "{rendition}: segments listed vs on disk");
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

//! Cascade: upload a video, get an adaptive HLS (AES-128) + DASH ladder, playable while encoding.

mod app;
mod auth;
mod config;
mod error;
mod http;
mod jobs;
mod ladder;
mod model;
mod packaging;
mod probe;
mod store;
mod transcode;
mod upload;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tracing::{info, warn};

const USAGE: &str = "usage:
  cascade serve [--bind ADDR] [--data-dir DIR] [--web-dir DIR] [--ladder FILE] [--workers N] ...
      (every CASCADE_* setting also works as a flag: CASCADE_MAX_UPLOAD_BYTES → --max-upload-bytes)
  cascade transcode INPUT --out DIR [--backend gstreamer] [--ladder FILE] [--clear]
  cascade probe INPUT";

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CASCADE_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("transcode") => transcode_cmd(&args[1..]),
        Some("probe") => probe_cmd(&args[1..]),
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("cascade: {e:#}");
        std::process::exit(1);
    }
}

fn probe_cmd(args: &[String]) -> anyhow::Result<()> {
    let input = args.first().ok_or_else(|| anyhow!("{USAGE}"))?;
    let media = probe::probe_any(PathBuf::from(input).as_path(), 30).map_err(|e| anyhow!("{}: {e}", e.code()))?;
    println!("{}", serde_json::to_string_pretty(&media)?);
    Ok(())
}

fn transcode_cmd(args: &[String]) -> anyhow::Result<()> {
    let mut input = None;
    let mut out = None;
    let mut ladder_path = std::env::var_os("CASCADE_LADDER").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("pipelines/ladder.toml"));
    let mut backend = config::BackendChoice::Gstreamer;
    let mut encrypt = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(it.next().ok_or_else(|| anyhow!("--out needs a value"))?)),
            "--ladder" => ladder_path = PathBuf::from(it.next().ok_or_else(|| anyhow!("--ladder needs a value"))?),
            "--backend" => {
                backend = it.next().ok_or_else(|| anyhow!("--backend needs a value"))?.parse().map_err(|e: String| anyhow!(e))?
            }
            "--clear" => encrypt = false,
            _ if input.is_none() && !a.starts_with("--") => input = Some(PathBuf::from(a)),
            other => bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let (Some(input), Some(out)) = (input, out) else { bail!("{USAGE}") };
    let limits = jobs::runner::Limits::from_config(&config::Config::default());
    run_transcode(input, out, ladder_path, backend, encrypt, limits, false)
}

/// `cascade transcode`: the server's job runner on one file, without a server or a store.
fn run_transcode(
    input: PathBuf,
    out: PathBuf,
    ladder_path: PathBuf,
    backend: config::BackendChoice,
    encrypt: bool,
    limits: jobs::runner::Limits,
    keep_work: bool,
) -> anyhow::Result<()> {
    if out.exists() && std::fs::read_dir(&out)?.next().is_some() {
        bail!("{} is not empty", out.display());
    }
    let spec = jobs::runner::JobSpec {
        input,
        growing: None,
        out_dir: out.clone(),
        scratch_dir: tempfile_dir()?,
        ladder: ladder::Ladder::load(&ladder_path)?,
        key: encrypt.then(model::KeyMaterial::generate),
        backend,
        limits,
        keep_work,
        utc_timing_url: "/api/time".into(),
    };
    let media = jobs::runner::probe(&spec).map_err(|e| anyhow!("{}: {e}", e.code()))?;
    let t0 = Instant::now();
    let outcome = jobs::runner::transcode_with_fallback(
        &spec,
        &media,
        &mut |p| match p {
            jobs::runner::JobProgress::Playable { .. } => info!(seconds = t0.elapsed().as_secs_f64(), "playable"),
            jobs::runner::JobProgress::Fraction(f) => tracing::debug!(progress = f),
            jobs::runner::JobProgress::Image(name) => info!(seconds = t0.elapsed().as_secs_f64(), %name, "image ready"),
        },
        &AtomicBool::new(false),
    );
    let _ = std::fs::remove_dir_all(&spec.scratch_dir);
    for failure in &outcome.earlier_failures {
        warn!(%failure, "back end failed");
    }
    let out_info = outcome.result.map_err(|e| anyhow!("{}: {}: {e}", outcome.backend, e.code()))?;
    // Debug output is not served: the key sits beside the playlists so local players can read it
    // (`ffplay -allowed_extensions ALL OUT/hls/master.m3u8`).
    if let Some(k) = &spec.key {
        std::fs::write(out.join("hls").join("key"), k.key)?;
    }
    let summary = serde_json::json!({
        "backend": outcome.backend,
        "seconds": t0.elapsed().as_secs_f64(),
        "duration_s": out_info.duration_s,
        "renditions": out_info.renditions,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// A private scratch dir for one CLI run (removed at exit by the OS's tmp cleaning or the next run).
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("cascade-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn serve(args: &[String]) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = config::Config::from_sources(&env, args).map_err(|e| anyhow!(e))?;
    let ladder = ladder::Ladder::load(&config.ladder_path)?;
    if let Err(e) = probe::init_gstreamer() {
        warn!(error = %e, "GStreamer is unavailable; jobs will use the fallback back end where configured");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(run_server(config, ladder));
    // Everything that matters is flushed by now; a transcode thread still unwinding must not
    // keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}

async fn run_server(config: config::Config, ladder: ladder::Ladder) -> anyhow::Result<()> {
    let bind = config.bind;
    let grace = config.shutdown_grace;
    let app = {
        let (c, l) = (config.clone(), ladder.clone());
        Arc::new(tokio::task::spawn_blocking(move || app::App::open(c, l)).await??)
    };
    let app2 = app.clone();
    let orphans = app.store.run(move |s| app2.sweep_orphans(s)).await?;
    if !orphans.is_empty() {
        warn!(count = orphans.len(), ids = ?orphans, "removed files of uploads that were never recorded");
    }
    let recovered = app.store.run(|s| s.recover_running()).await?;
    if !recovered.is_empty() {
        warn!(count = recovered.len(), ids = ?recovered, "re-queued jobs a previous process left running");
    }
    let workers = jobs::spawn_workers(app.clone());
    let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("cannot listen on {bind}"))?;
    info!(addr = %listener.local_addr()?, data_dir = %config.data_dir.display(), workers = config.workers, backend = ?config.backend, "Cascade listening");
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop2 = stop.clone();
    let server = warp::serve(http::routes(app.clone())).incoming(listener).graceful(async move { stop2.notified().await }).run();
    let server = tokio::spawn(server);

    shutdown_signal().await;
    app.shutting_down.store(true, Ordering::SeqCst);
    stop.notify_waiters();
    app.wake.notify_waiters();
    // Running transcodes get the grace period to finish; then they are cancelled and re-queued.
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !app.running.lock().map(|m| m.is_empty()).unwrap_or(true) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Ok(map) = app.running.lock() {
        for (id, flag) in map.iter() {
            info!(video_id = %id, "cancelling running job for shutdown");
            flag.store(true, Ordering::SeqCst);
        }
    }
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    // Open connections (SSE streams) get a moment to close; then the server stops regardless.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    app.store.flush().await?;
    info!("shut down cleanly");
    Ok(())
}

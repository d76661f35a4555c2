//! Cascade: upload a video, get an adaptive HLS (AES-128) + DASH ladder, playable while encoding.

mod app;
mod auth;
mod config;
mod error;
mod http;
mod jobs;
mod ladder;
mod live;
mod metrics;
mod model;
mod packaging;
mod probe;
mod storage;
mod store;
mod transcode;
mod upload;
mod webhooks;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};

/// Upload a video, get an adaptive HLS (AES-128) + DASH ladder, playable while encoding.
///
/// Every setting is a flag of the command that reads it and a `CASCADE_*` variable of the same
/// name (`--data-dir` is `CASCADE_DATA_DIR`); flags win over variables, variables over defaults.
#[derive(Debug, Parser)]
#[command(name = "cascade", version, propagate_version = true, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The commands of the binary: one variant and one args struct each.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: HTTP API, player pages and transcode workers
    Serve(Box<config::ServeArgs>),
    /// Run transcode workers only (no HTTP, no live ingest), beside `cascade serve` processes
    /// on the same database (CASCADE_DATABASE_URL) and the same data dir or bucket
    /// (CASCADE_STORAGE_URL); takes the settings of serve
    Worker(Box<config::ServeArgs>),
    /// Transcode one file into DIR with the server's pipeline, without a server
    Transcode(TranscodeArgs),
    /// Print what Cascade sees in a media file, as JSON
    Probe(ProbeArgs),
    /// Manage users (also while the server runs, through DATA_DIR/admin.sock)
    #[command(subcommand)]
    User(UserCmd),
    /// Manage personal API tokens (also while the server runs)
    #[command(subcommand)]
    Token(TokenCmd),
    /// Check the database and object store the settings name, for real (a probe object is
    /// written, read and deleted; the bucket's CORS rule is tried when players are redirected to
    /// it); exits 1 if anything fails. Takes the settings of serve
    Check(Box<config::ServeArgs>),
    /// Move records and media to a scaled set-up's stores (the server must be stopped)
    #[command(subcommand)]
    Migrate(MigrateCmd),
}

#[derive(Debug, Subcommand)]
enum MigrateCmd {
    /// Copy the embedded database (DATA_DIR/db) into an empty PostgreSQL database
    SledToPostgres(SledToPostgresArgs),
    /// Copy the data dir's sources and media into S3-compatible storage (endpoint and
    /// credentials from the AWS_* variables); run it again to finish an interrupted copy
    MediaToS3(MediaToS3Args),
}

#[derive(Debug, Args)]
struct MediaToS3Args {
    /// The server's data dir (default: CASCADE_DATA_DIR, else ./data)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The bucket and prefix the servers will use (s3://bucket/prefix)
    #[arg(long, env = "CASCADE_STORAGE_URL", value_name = "URL")]
    storage_url: String,
}

#[derive(Debug, Args)]
struct SledToPostgresArgs {
    /// The server's data dir (default: CASCADE_DATA_DIR, else ./data)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The PostgreSQL database (created if missing; must hold no records)
    #[arg(long, env = "CASCADE_DATABASE_URL", value_name = "URL")]
    database_url: String,
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create a user; prints a generated password unless --password-stdin
    Add(UserAddArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Create an API token for a user; prints it on one line, nothing else
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
struct UserAddArgs {
    /// The user name (letters, digits, '.', '_', '-')
    name: String,
    /// An admin (may do everything); otherwise an uploader
    #[arg(long)]
    admin: bool,
    /// Read the password from the first line of stdin
    #[arg(long)]
    password_stdin: bool,
    /// The server's data dir (default: CASCADE_DATA_DIR, else ./data)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TokenCreateArgs {
    /// The user name
    name: String,
    /// What the token may do
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["upload", "manage"])]
    scope: Vec<model::Scope>,
    /// Days until it expires (default: never)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=36500))]
    expires_days: Option<u32>,
    /// The server's data dir (default: CASCADE_DATA_DIR, else ./data)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The data dir of an admin command.
fn admin_data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("CASCADE_DATA_DIR").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from("./data"))
}

fn admin_cmd(data_dir: Option<PathBuf>, req: auth::admin::AdminRequest) -> anyhow::Result<auth::admin::AdminReply> {
    match auth::admin::request(&admin_data_dir(data_dir), req).map_err(|e| anyhow!(e))? {
        auth::admin::AdminReply::Error(e) => Err(anyhow!(e)),
        reply => Ok(reply),
    }
}

fn user_cmd(cmd: UserCmd) -> anyhow::Result<()> {
    let UserCmd::Add(a) = cmd;
    let (password, generated) = if a.password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        (line.trim_end_matches(['\r', '\n']).to_string(), false)
    } else {
        (auth::accounts::new_secret()[..24].to_string(), true)
    };
    let reply =
        admin_cmd(a.data_dir, auth::admin::AdminRequest::UserAdd { name: a.name.clone(), password: password.clone(), admin: a.admin })?;
    if let auth::admin::AdminReply::UserAdded { adopted_videos, .. } = reply {
        if adopted_videos > 0 {
            eprintln!("{} now owns the {adopted_videos} videos uploaded before accounts existed", a.name);
        }
    }
    if generated {
        println!("{password}");
    }
    Ok(())
}

fn token_cmd(cmd: TokenCmd) -> anyhow::Result<()> {
    let TokenCmd::Create(a) = cmd;
    let req = auth::admin::AdminRequest::TokenCreate { name: a.name, scopes: a.scope, expires_days: a.expires_days };
    match admin_cmd(a.data_dir, req)? {
        auth::admin::AdminReply::TokenCreated { token } => {
            println!("{token}");
            Ok(())
        }
        other => Err(anyhow!("unexpected answer: {other:?}")),
    }
}

#[derive(Debug, Args)]
struct TranscodeArgs {
    /// The source file
    input: PathBuf,
    /// Output directory (absent or empty): hls/, dash/ and, unless --clear, the key at hls/key
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Which back end transcodes (auto: GStreamer, then FFmpeg if GStreamer fails)
    #[arg(long, env = "CASCADE_BACKEND", value_name = "BACKEND", value_enum, default_value_t = config::BackendChoice::Gstreamer)]
    backend: config::BackendChoice,
    /// Write clear HLS segments (no AES-128)
    #[arg(long)]
    clear: bool,
    #[command(flatten)]
    job: config::JobSettings,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// The media file
    input: PathBuf,
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CASCADE_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let cli = match config::process_env().and_then(|env| config::parse::<Cli>(&env, &args)) {
        Ok(cli) => cli,
        Err(config::ConfigError::Usage(e)) => e.exit(),
        Err(e) => {
            eprintln!("cascade: {e}");
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve((*args).into(), Role::Serve),
        Command::Worker(args) => serve((*args).into(), Role::Worker),
        Command::Check(args) => check_cmd((*args).into()),
        Command::Transcode(args) => transcode_cmd(args),
        Command::Probe(args) => probe_cmd(args),
        Command::User(cmd) => user_cmd(cmd),
        Command::Token(cmd) => token_cmd(cmd),
        Command::Migrate(MigrateCmd::SledToPostgres(a)) => migrate_cmd(a),
        Command::Migrate(MigrateCmd::MediaToS3(a)) => media_to_s3_cmd(a),
    };
    if let Err(e) = result {
        eprintln!("cascade: {e:#}");
        std::process::exit(1);
    }
}

/// The origin pages of the site are served from: `CASCADE_PUBLIC_URL`, else localhost.
fn site_origin(config: &config::Config) -> String {
    config.public_url.clone().unwrap_or_else(|| format!("http://localhost:{}", config.bind.port()))
}

/// `cascade check`: one line per finding (`ok` or `FAIL`, what, details), exit 1 on a failure.
fn check_cmd(config: config::Config) -> anyhow::Result<()> {
    let mut findings = Vec::new();
    // The embedded database is not opened: a running server holds its lock.
    findings.push(match config.database_url.as_deref() {
        None => storage::Check { name: "database", ok: true, detail: "embedded (sled in the data dir; not opened here)".into() },
        Some(url) => match store::Store::open_configured(&config.data_dir, Some(url)) {
            Ok(_) => storage::Check { name: "database", ok: true, detail: "PostgreSQL (CASCADE_DATABASE_URL) opened and migrated".into() },
            Err(e) => storage::Check { name: "database", ok: false, detail: format!("PostgreSQL (CASCADE_DATABASE_URL): {e}") },
        },
    });
    let origin = site_origin(&config);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let checks = rt.block_on(async {
        let storage = storage::Storage::from_config(&config)?;
        // Every request is bounded by the client's timeouts and retries; this bounds them all.
        tokio::time::timeout(Duration::from_secs(120), storage::check(&storage, &origin))
            .await
            .map_err(|_| anyhow!("the object store did not answer within 120 s"))
    })?;
    findings.extend(checks);
    for f in &findings {
        println!("{:<4} {:<8} {}", if f.ok { "ok" } else { "FAIL" }, f.name, f.detail);
    }
    if findings.iter().any(|f| !f.ok) {
        bail!("the set-up is not ready (see FAIL above)");
    }
    Ok(())
}

fn migrate_cmd(a: SledToPostgresArgs) -> anyhow::Result<()> {
    let data_dir = admin_data_dir(a.data_dir);
    let copied = store::migrate::sled_to_postgres(&data_dir, &a.database_url).map_err(|e| anyhow!("{e}"))?;
    for (tree, n) in copied {
        println!("{tree}: {n}");
    }
    eprintln!("copied; start the server with CASCADE_DATABASE_URL set (media stays in {})", data_dir.display());
    Ok(())
}

/// `cascade migrate media-to-s3`: one line per kind of object copied, exit 1 on a failure.
fn media_to_s3_cmd(a: MediaToS3Args) -> anyhow::Result<()> {
    let data_dir = admin_data_dir(a.data_dir);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let copied = rt.block_on(async {
        let storage = storage::Storage::open(Some(&a.storage_url), false).map_err(|e| anyhow!("{e}"))?;
        storage.copy_data_dir(&data_dir).await.map_err(|e| anyhow!("{e}"))
    })?;
    println!("sources: {}", copied.sources);
    println!("media files: {}", copied.files);
    println!("bytes: {}", copied.bytes);
    println!("already in the bucket: {}", copied.present);
    println!("videos compared: {}", copied.videos);
    eprintln!("copied; start the servers with CASCADE_STORAGE_URL={}: they serve media from the bucket", a.storage_url);
    Ok(())
}

fn probe_cmd(args: ProbeArgs) -> anyhow::Result<()> {
    let media = probe::probe_any(&args.input, 30).map_err(|e| anyhow!("{}: {e}", e.code()))?;
    println!("{}", serde_json::to_string_pretty(&media)?);
    Ok(())
}

fn transcode_cmd(args: TranscodeArgs) -> anyhow::Result<()> {
    let TranscodeArgs { input, out, backend, clear, job } = args;
    let limits = jobs::runner::Limits {
        stall_timeout: Duration::from_secs(job.stall_timeout),
        wall_factor: job.job_timeout_factor,
        min_wall: Duration::from_secs(300),
    };
    run_transcode(input, out, job.ladder, backend, !clear, limits, job.keep_work)
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
        live: None,
        ll: None,
        out_dir: out.clone(),
        scratch_dir: tempfile_dir()?,
        ladder: ladder::Ladder::load(&ladder_path)?,
        key: encrypt.then(model::KeyMaterial::generate),
        backend,
        limits,
        keep_work,
        utc_timing_url: "/api/time".into(),
        publish: None,
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
            jobs::runner::JobProgress::Position(_) => {}
            jobs::runner::JobProgress::RungDropped { rung, .. } => warn!(%rung, "rung dropped"),
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

/// What a long-running process does: everything (`serve`), or only the queue (`worker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Serve,
    Worker,
}

fn serve(config: config::Config, role: Role) -> anyhow::Result<()> {
    if config.database_url.is_none() {
        match role {
            Role::Worker => bail!(
                "`cascade worker` runs the queue of a database it shares with `cascade serve` processes: set CASCADE_DATABASE_URL (theirs)"
            ),
            Role::Serve if !config.queue_workers => {
                bail!("CASCADE_NO_WORKERS leaves the queue to `cascade worker` processes on a shared database: set CASCADE_DATABASE_URL")
            }
            Role::Serve => {}
        }
    }
    let ladder = ladder::Ladder::load(&config.ladder_path)?;
    if role == Role::Serve {
        http::pages::check_players(&config.web_dir)?;
    }
    if let Err(e) = probe::init_gstreamer() {
        warn!(error = %e, "GStreamer is unavailable; jobs will use the fallback back end where configured");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        match role {
            Role::Serve => run_server(config, ladder).await,
            Role::Worker => run_worker(config, ladder).await,
        }
    });
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

async fn open_app(config: &config::Config, ladder: &ladder::Ladder) -> anyhow::Result<Arc<app::App>> {
    let (c, l) = (config.clone(), ladder.clone());
    let app = Arc::new(tokio::task::spawn_blocking(move || app::App::open(c, l)).await??);
    // Object storage that cannot be written, read or cleaned is found now, not at the first
    // upload (`cascade check` says the same, and checks CORS too).
    if app.storage.is_remote() {
        let origin = site_origin(config);
        let checks = tokio::time::timeout(Duration::from_secs(120), storage::check(&app.storage, &origin))
            .await
            .map_err(|_| anyhow!("the object store did not answer within 120 s"))?;
        for c in &checks {
            if !c.ok && c.name == "cors" {
                warn!(detail = %c.detail, "object storage: players redirected to the bucket will fail");
            } else if !c.ok {
                bail!("object storage ({}): {}; `cascade check` tries it again", c.name, c.detail);
            }
        }
    }
    Ok(app)
}

/// On shutdown: running transcodes get the grace period to finish; then they are cancelled
/// (and re-queued), and the workers stop.
async fn finish_running(app: &app::App, grace: Duration, workers: Vec<tokio::task::JoinHandle<()>>) {
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
}

/// `cascade worker`: the queue's workers with their heartbeat, what other processes change
/// (NOTIFY), and the webhook deliveries of the jobs it finishes. No HTTP, no live ingest, no
/// admin socket, and none of the start-up clean-ups of the data dir: those are the serve nodes'.
async fn run_worker(config: config::Config, ladder: ladder::Ladder) -> anyhow::Result<()> {
    let app = open_app(&config, &ladder).await?;
    let recovered = app.store.run(|s| s.recover_running()).await?;
    if !recovered.is_empty() {
        warn!(count = recovered.len(), ids = ?recovered, "re-queued jobs whose holder's lease had expired");
    }
    let workers = jobs::spawn_workers(app.clone());
    let heartbeat = jobs::spawn_heartbeat(app.clone());
    let follower = jobs::spawn_follower(app.clone())?;
    let deliveries = tokio::spawn(webhooks::run(app.clone()));
    info!(data_dir = %config.data_dir.display(), store = app.store.blocking().engine(), node = %app.store.blocking().node(), workers = config.workers, backend = ?config.backend, "Cascade worker started");
    shutdown_signal().await;
    app.shutting_down.store(true, Ordering::SeqCst);
    app.wake.notify_waiters();
    finish_running(&app, config.shutdown_grace, workers).await;
    for task in [heartbeat, follower].into_iter().flatten() {
        task.abort();
    }
    deliveries.abort();
    app.store.flush().await?;
    info!("shut down cleanly");
    Ok(())
}

/// Fails the broadcasts a stopped process left on air (see `Store::recover_live`) and removes
/// their output.
async fn recover_live(app: &Arc<app::App>, all_videos: bool) -> Result<(), error::AppError> {
    let interrupted = app.store.run(move |s| s.recover_live(all_videos)).await?;
    if !interrupted.is_empty() {
        warn!(count = interrupted.len(), ids = ?interrupted, "broadcasts a stopped process left on air were marked failed");
    }
    for id in &interrupted {
        app::remove_dir_off_executor(app.media_dir(id)).await;
        if let Err(e) = app.storage.remove_media(id).await {
            warn!(video_id = %id, error = %e, "cannot remove an interrupted broadcast's output from object storage");
        }
        let id2 = id.clone();
        if let Ok(Some(r)) = app.store.run(move |s| s.get(&id2)).await {
            app.notify(&r);
        }
    }
    Ok(())
}

async fn run_server(config: config::Config, ladder: ladder::Ladder) -> anyhow::Result<()> {
    let bind = config.bind;
    let grace = config.shutdown_grace;
    let app = open_app(&config, &ladder).await?;
    let app2 = app.clone();
    let orphans = app.store.run(move |s| app2.sweep_orphans(s)).await?;
    if !orphans.is_empty() {
        warn!(count = orphans.len(), ids = ?orphans, "removed files of uploads that were never recorded");
    }
    let recovered = app.store.run(|s| s.recover_running()).await?;
    if !recovered.is_empty() {
        warn!(count = recovered.len(), ids = ?recovered, "re-queued jobs a previous process left running");
    }
    recover_live(&app, true).await?;
    // On a shared database a serve node also fails, every lease, the broadcasts of a process
    // that died since (their publisher may then go live again through any node).
    let live_recovery = app.store.blocking().shares_jobs().then(|| {
        let (app, every) = (app.clone(), config.job_lease);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = recover_live(&app, false).await {
                    warn!(error = %e, "cannot look for broadcasts a stopped process left on air");
                }
            }
        })
    });
    let streams = app.store.run(|s| s.lives(None)).await?;
    app.live.load(&streams);
    let rtmp = match config.rtmp_bind {
        Some(addr) => {
            let l = live::rtmp::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (CASCADE_RTMP_BIND; `off` turns RTMP off)"))?;
            let bound = l.local_addr()?;
            app.live.set_rtmp_addr(bound);
            info!(addr = %bound, "RTMP ingest listening (rtmp://HOST:PORT/live/KEY)");
            Some(tokio::spawn(live::rtmp::serve(app.clone(), l)))
        }
        None => None,
    };
    if let Some(addr) = config.srt_bind {
        // srtsrc reports a taken port only later, on its bus: find out now.
        std::net::UdpSocket::bind(addr).with_context(|| format!("cannot listen on {addr} (CASCADE_SRT_BIND; `off` turns SRT off)"))?;
        live::srt::serve(app.clone(), addr).map_err(|e| anyhow::anyhow!("cannot start the SRT listener on {addr}: {e}"))?;
        app.live.set_srt_addr(addr);
        info!(%addr, "SRT ingest listening (srt://HOST:PORT?streamid=KEY, one caller at a time)");
    }
    let admin_socket = auth::admin::serve_socket(&config.data_dir, app.store.clone())
        .await
        .with_context(|| format!("cannot listen on {}", auth::admin::socket_path(&config.data_dir).display()))?;
    if let Some(code) = app.setup_code.lock().ok().and_then(|c| c.clone()) {
        // The one secret the log carries, on purpose: it works once, and only while nobody exists.
        warn!(
            setup_code = %code,
            "no user exists yet: open /setup with this one-time code to create the first admin, or run `cascade user add NAME --admin` (it works while the server runs)"
        );
    }
    // Before the workers: a resumable upload's transcode interrupted by the stop waits for its last byte again.
    let sweep_every = (config.upload_expiry / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let sweeper = upload::tus::recover_and_sweep(app.clone(), sweep_every).await?;
    // Without queue workers (CASCADE_NO_WORKERS) the slots still bound the transcodes of uploads
    // streamed to this node.
    let workers = if config.queue_workers { jobs::spawn_workers(app.clone()) } else { Vec::new() };
    let heartbeat = jobs::spawn_heartbeat(app.clone());
    let follower = jobs::spawn_follower(app.clone())?;
    let deliveries = tokio::spawn(webhooks::run(app.clone()));
    let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("cannot listen on {bind}"))?;
    info!(addr = %listener.local_addr()?, data_dir = %config.data_dir.display(), store = app.store.blocking().engine(), node = %app.store.blocking().node(), workers = config.workers, queue_workers = config.queue_workers, backend = ?config.backend, "Cascade listening");
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop2 = stop.clone();
    let server =
        http::server::run(listener, warp::service(http::routes(app.clone())), config.header_timeout, Duration::from_secs(2), async move {
            stop2.notified().await
        });
    let server = tokio::spawn(server);
    // `/metrics` without a credential, for a scraper on a private network.
    let metrics_server =
        match config.metrics_bind {
            Some(addr) => {
                let l =
                    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (CASCADE_METRICS_BIND)"))?;
                info!(addr = %l.local_addr()?, "metrics listening (no credential asked: keep this address private)");
                let stop3 = stop.clone();
                let svc = warp::service(http::metrics::open_routes(app.clone()));
                Some(tokio::spawn(http::server::run(l, svc, config.header_timeout, Duration::from_secs(2), async move {
                    stop3.notified().await
                })))
            }
            None => None,
        };

    shutdown_signal().await;
    app.shutting_down.store(true, Ordering::SeqCst);
    stop.notify_waiters();
    app.wake.notify_waiters();
    // Publishers are disconnected, so their broadcasts end as videos within the grace period.
    if let Some(r) = rtmp {
        r.abort();
    }
    app.live.kick_all();
    finish_running(&app, grace, workers).await;
    for task in [heartbeat, follower, live_recovery].into_iter().flatten() {
        task.abort();
    }
    // Open connections (SSE streams) get a moment to close; then the server stops regardless.
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    admin_socket.abort();
    sweeper.abort();
    // Attempts in flight are cut off: they stay pending in the outbox and are sent after the restart.
    deliveries.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    let _ = std::fs::remove_file(auth::admin::socket_path(&config.data_dir));
    app.store.flush().await?;
    info!("shut down cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::CommandFactory;

    use super::*;

    fn parse(env: &[(&str, &str)], args: &[&str]) -> Result<Cli, config::ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        config::parse::<Cli>(&env, &args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn every_command_has_help_naming_its_variables() {
        Cli::command().debug_assert();
        for (sub, vars) in [
            ("serve", &["CASCADE_DATA_DIR", "CASCADE_SEGMENT_CACHE_MB", "CASCADE_STALL_TIMEOUT", "CASCADE_KEEP_WORK"][..]),
            ("transcode", &["CASCADE_LADDER", "CASCADE_BACKEND", "CASCADE_JOB_TIMEOUT_FACTOR"][..]),
            ("probe", &[][..]),
        ] {
            let err = match parse(&[("CASCADE_SECRET", "do not show this secret")], &[sub, "--help"]) {
                Err(config::ConfigError::Usage(e)) => e,
                other => panic!("{sub} --help: {other:?}"),
            };
            assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
            let help = err.render().to_string();
            assert!(help.contains("Usage: cascade"), "{help}");
            for v in vars {
                assert!(help.contains(v), "{sub} --help does not name {v}:\n{help}");
            }
            assert!(!help.contains("do not show"), "{help}");
        }
    }

    #[test]
    fn transcode_takes_the_job_settings_of_the_server() {
        let env = [("CASCADE_STALL_TIMEOUT", "30"), ("CASCADE_LADDER", "/l.toml"), ("CASCADE_DATA_DIR", "/srv")];
        let Command::Transcode(t) =
            parse(&env, &["transcode", "in.mp4", "--out", "o", "--job-timeout-factor", "3", "--clear"]).unwrap().command
        else {
            panic!("not transcode")
        };
        assert_eq!((t.input, t.out), (PathBuf::from("in.mp4"), PathBuf::from("o")));
        assert_eq!(t.backend, config::BackendChoice::Gstreamer);
        assert!(t.clear && !t.job.keep_work);
        assert_eq!((t.job.stall_timeout, t.job.job_timeout_factor), (30, 3.0));
        assert_eq!(t.job.ladder, PathBuf::from("/l.toml"));
        // A serve-only variable is known, so it is no error here; a typo is.
        assert!(matches!(
            parse(&[("CASCADE_TYPO", "1")], &["transcode", "in.mp4", "--out", "o"]),
            Err(config::ConfigError::UnknownVariable(_))
        ));
        assert!(matches!(parse(&[], &["transcode", "in.mp4"]), Err(config::ConfigError::Usage(_))));
    }

    #[test]
    fn serve_and_probe_parse() {
        let Command::Serve(s) = parse(&[("CASCADE_WORKERS", "2")], &["serve", "--data-dir", "/d"]).unwrap().command else {
            panic!("not serve")
        };
        let c = config::Config::from(*s);
        assert_eq!((c.workers, c.data_dir), (2, PathBuf::from("/d")));
        let Command::Probe(p) = parse(&[("CASCADE_TYPO", "1")], &["probe", "x.mkv"]).unwrap().command else { panic!("not probe") };
        assert_eq!(p.input, PathBuf::from("x.mkv"));
        assert!(matches!(parse(&[], &[]), Err(config::ConfigError::Usage(_))));
        assert!(matches!(parse(&[], &["frobnicate"]), Err(config::ConfigError::Usage(_))));
    }
}

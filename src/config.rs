//! Settings: defaults, then environment (`CASCADE_*`), then command-line flags. The parser takes
//! the variables and arguments as plain values so tests never touch the process environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which transcoder runs a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Gstreamer,
    Ffmpeg,
    /// GStreamer, falling back to FFmpeg when GStreamer cannot build or run the pipeline.
    Auto,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gstreamer" => Ok(BackendChoice::Gstreamer),
            "ffmpeg" => Ok(BackendChoice::Ffmpeg),
            "auto" => Ok(BackendChoice::Auto),
            other => Err(format!("unknown backend {other:?} (gstreamer, ffmpeg or auto)")),
        }
    }
}

/// Every setting of the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// `CASCADE_BIND`: address to listen on.
    pub bind: SocketAddr,
    /// `CASCADE_DATA_DIR`: sled database, uploads and media.
    pub data_dir: PathBuf,
    /// `CASCADE_WEB_DIR`: pages and player assets.
    pub web_dir: PathBuf,
    /// `CASCADE_LADDER`: the ladder file.
    pub ladder_path: PathBuf,
    /// `CASCADE_MAX_UPLOAD_BYTES`: larger uploads get 413.
    pub max_upload_bytes: u64,
    /// `CASCADE_WORKERS`: transcodes running at once.
    pub workers: usize,
    /// `CASCADE_MAX_QUEUED`: jobs waiting at most; more uploads get 429.
    pub max_queued: usize,
    /// `CASCADE_MIN_FREE_BYTES`: uploads are refused (507) below this much free disk.
    pub min_free_bytes: u64,
    /// `CASCADE_BACKEND`: gstreamer | ffmpeg | auto.
    pub backend: BackendChoice,
    /// `CASCADE_TOKEN_TTL`: playback token lifetime.
    pub token_ttl: Duration,
    /// `CASCADE_SECRET`: token signing secret (otherwise generated once into the data dir).
    pub secret: Option<String>,
    /// `CASCADE_STALL_TIMEOUT`: seconds without progress before a transcode is killed.
    pub stall_timeout: Duration,
    /// `CASCADE_JOB_TIMEOUT_FACTOR`: wall-clock limit of a job as a multiple of the source duration.
    pub job_timeout_factor: f64,
    /// `CASCADE_MAX_ATTEMPTS`: runs of a job that failed for a transient reason.
    pub max_attempts: u32,
    /// `CASCADE_SHUTDOWN_GRACE`: seconds a running transcode may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// `CASCADE_STREAM_INGEST`: transcode streamable uploads while they arrive.
    pub stream_ingest: bool,
    /// `CASCADE_SEGMENT_CACHE_MB`: memory for segments of finished videos (0: off).
    pub segment_cache_bytes: usize,
    /// `CASCADE_KEEP_WORK`: keep the FFmpeg back end's work files (debugging).
    pub keep_work: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "0.0.0.0:8000".parse().expect("valid default address"),
            data_dir: PathBuf::from("./data"),
            web_dir: PathBuf::from("./web"),
            ladder_path: PathBuf::from("./pipelines/ladder.toml"),
            max_upload_bytes: 8 * 1024 * 1024 * 1024,
            workers: 1,
            max_queued: 100,
            min_free_bytes: 1024 * 1024 * 1024,
            backend: BackendChoice::Auto,
            token_ttl: Duration::from_secs(6 * 3600),
            secret: None,
            stall_timeout: Duration::from_secs(120),
            job_timeout_factor: 20.0,
            max_attempts: 3,
            shutdown_grace: Duration::from_secs(20),
            stream_ingest: true,
            segment_cache_bytes: 64 << 20,
            keep_work: false,
        }
    }
}

fn parse<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse::<T>().map_err(|e| format!("{name}={v:?}: {e}"))
}

impl Config {
    /// Builds the config from environment variables and `--name value` flags (flags win; a flag is
    /// the variable's name without `CASCADE_`, lower-case, `_` → `-`, e.g. `--data-dir`).
    pub fn from_sources(env: &HashMap<String, String>, args: &[String]) -> Result<Config, String> {
        let mut vars: HashMap<String, String> =
            env.iter().filter(|(k, _)| k.starts_with("CASCADE_")).map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(flag) = a.strip_prefix("--") else { return Err(format!("unexpected argument {a:?}")) };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (flag.to_string(), it.next().ok_or_else(|| format!("--{flag} needs a value"))?.clone()),
            };
            vars.insert(format!("CASCADE_{}", name.replace('-', "_").to_uppercase()), value);
        }
        let mut c = Config::default();
        for (k, v) in &vars {
            match k.as_str() {
                "CASCADE_BIND" => c.bind = parse(k, v)?,
                "CASCADE_DATA_DIR" => c.data_dir = PathBuf::from(v),
                "CASCADE_WEB_DIR" => c.web_dir = PathBuf::from(v),
                "CASCADE_LADDER" => c.ladder_path = PathBuf::from(v),
                "CASCADE_MAX_UPLOAD_BYTES" => c.max_upload_bytes = parse(k, v)?,
                "CASCADE_WORKERS" => c.workers = parse(k, v)?,
                "CASCADE_MAX_QUEUED" => c.max_queued = parse(k, v)?,
                "CASCADE_MIN_FREE_BYTES" => c.min_free_bytes = parse(k, v)?,
                "CASCADE_BACKEND" => c.backend = parse(k, v)?,
                "CASCADE_TOKEN_TTL" => c.token_ttl = Duration::from_secs(parse(k, v)?),
                "CASCADE_SECRET" => c.secret = Some(v.clone()).filter(|s| !s.is_empty()),
                "CASCADE_STALL_TIMEOUT" => c.stall_timeout = Duration::from_secs(parse(k, v)?),
                "CASCADE_JOB_TIMEOUT_FACTOR" => c.job_timeout_factor = parse(k, v)?,
                "CASCADE_MAX_ATTEMPTS" => c.max_attempts = parse(k, v)?,
                "CASCADE_SHUTDOWN_GRACE" => c.shutdown_grace = Duration::from_secs(parse(k, v)?),
                "CASCADE_STREAM_INGEST" => c.stream_ingest = parse(k, v)?,
                "CASCADE_KEEP_WORK" => c.keep_work = parse(k, v)?,
                "CASCADE_SEGMENT_CACHE_MB" => {
                    let mb: usize = parse(k, v)?;
                    c.segment_cache_bytes =
                        mb.checked_mul(1 << 20).filter(|_| mb <= 65536).ok_or("CASCADE_SEGMENT_CACHE_MB must be at most 65536")?;
                }
                // Read elsewhere (logging) or by the tools around the binary.
                "CASCADE_LOG" | "CASCADE_LOG_FORMAT" => {}
                other => return Err(format!("unknown setting {other}")),
            }
        }
        if c.workers == 0 || c.workers > 64 {
            return Err("CASCADE_WORKERS must be 1–64".into());
        }
        if c.max_queued == 0 {
            return Err("CASCADE_MAX_QUEUED must be at least 1".into());
        }
        if c.token_ttl.is_zero() {
            return Err("CASCADE_TOKEN_TTL must be at least 1 second".into());
        }
        if c.secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err("CASCADE_SECRET must be at least 16 characters".into());
        }
        if c.max_attempts == 0 {
            return Err("CASCADE_MAX_ATTEMPTS must be at least 1".into());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_env_then_flags() {
        let c = Config::from_sources(&HashMap::new(), &[]).unwrap();
        assert_eq!(c.bind.to_string(), "0.0.0.0:8000");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.backend, BackendChoice::Auto);
        let c = Config::from_sources(
            &env(&[("CASCADE_BIND", "127.0.0.1:9000"), ("CASCADE_WORKERS", "2"), ("PATH", "/bin")]),
            &["--workers".into(), "3".into(), "--backend=ffmpeg".into()],
        )
        .unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:9000");
        assert_eq!(c.workers, 3);
        assert_eq!(c.backend, BackendChoice::Ffmpeg);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Config::from_sources(&env(&[("CASCADE_WORKERS", "zero")]), &[]).is_err());
        assert!(Config::from_sources(&env(&[("CASCADE_BACKEND", "vlc")]), &[]).is_err());
        assert!(Config::from_sources(&env(&[("CASCADE_TYPO", "1")]), &[]).is_err());
        assert!(Config::from_sources(&env(&[("CASCADE_SECRET", "short")]), &[]).is_err());
        assert!(Config::from_sources(&HashMap::new(), &["--workers".into()]).is_err());
    }
}

//! Shared helpers for the integration tests: a real `cascade serve` process on a free loopback
//! port with its own data dir, clips generated with ffmpeg at test time, and real parsers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod live;
pub mod ll;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Its stderr (one file per server: several may share a data dir).
    log_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// A client that sends the admin's API token with every request.
    pub client: reqwest::Client,
    /// The admin's API token (scopes upload and manage).
    pub token: String,
}

/// The user every test server has, an admin.
pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// The configuration the integration tests run in: `embedded` (sled and the data dir, the
/// default) or `scaled` (PostgreSQL for the records: `TEST_STORE=postgres`). Every
/// server and command a test starts uses it; failures name it.
pub fn configuration() -> &'static str {
    match (std::env::var("TEST_STORE").as_deref(), std::env::var("TEST_STORAGE").as_deref()) {
        (Ok("postgres"), Ok("s3")) => "scaled (PostgreSQL + S3)",
        (Ok("postgres"), _) => "scaled (PostgreSQL)",
        (_, Ok("s3")) => "embedded records + S3 media",
        _ => "embedded (sled)",
    }
}

/// The tests' S3-compatible server (`tests/s3`: moto's standalone server, a process of its own
/// with authentication on), started once per test binary and stopped when it exits (its stdin
/// closes).
pub struct S3 {
    pub endpoint: String,
    pub region: String,
    pub key: String,
    pub secret: String,
}

impl S3 {
    /// The `AWS_*` variables that point Cascade at it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_ACCESS_KEY_ID", self.key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

pub fn s3() -> &'static S3 {
    static SERVER: OnceLock<(S3, std::sync::Mutex<std::process::Child>)> = OnceLock::new();
    &SERVER
        .get_or_init(|| {
            use std::io::BufRead;
            let mut child = std::process::Command::new(repo().join("tests/s3/run.sh"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start tests/s3/run.sh");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = std::io::BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
            // The first start in a fresh clone installs moto into a virtualenv.
            let line = rx.recv_timeout(Duration::from_secs(900)).expect("the S3 server did not start within 15 minutes");
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("the S3 server's first line {line:?}: {e}"));
            let field = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {line}")).to_string();
            let s3 = S3 { endpoint: field("endpoint"), region: field("region"), key: field("key"), secret: field("secret") };
            (s3, std::sync::Mutex::new(child))
        })
        .0
}

/// A client of the tests' S3 server on `bucket`.
pub fn bucket_client(bucket: &str) -> object_store::aws::AmazonS3 {
    let s3 = s3();
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_region(&s3.region)
        .with_access_key_id(&s3.key)
        .with_secret_access_key(&s3.secret)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .build()
        .unwrap()
}

/// Every object under `prefix`: (key below the prefix, bytes), sorted.
pub async fn objects_under(store: &object_store::aws::AmazonS3, prefix: &str) -> Vec<(String, Vec<u8>)> {
    use futures_util::TryStreamExt;
    use object_store::ObjectStore;
    let p = object_store::path::Path::from(prefix);
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&p)).try_collect().await.unwrap();
    let mut out = Vec::new();
    for m in metas {
        let data = store.get(&m.location).await.unwrap().bytes().await.unwrap().to_vec();
        let rel = m.location.as_ref().strip_prefix(p.as_ref()).unwrap_or(m.location.as_ref()).trim_start_matches('/').to_string();
        out.push((rel, data));
    }
    out.sort();
    out
}

/// Data dirs whose servers share the database and bucket prefix of another dir (processes of
/// one site without a shared filesystem).
static SHARES: std::sync::Mutex<Vec<(PathBuf, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// From now on the server (and commands) on `data_dir` use the database and bucket prefix of
/// `site` (in the configurations that have them).
pub fn share_site(data_dir: &Path, site: &Path) {
    SHARES.lock().unwrap().push((data_dir.to_path_buf(), site.to_path_buf()));
}

/// The dir whose hash names the database and bucket prefix of `data_dir`.
fn site_of(data_dir: &Path) -> PathBuf {
    SHARES.lock().unwrap().iter().find(|(d, _)| d == data_dir).map_or_else(|| data_dir.to_path_buf(), |(_, s)| s.clone())
}

/// In a configuration with S3 media (`TEST_STORAGE=s3`), the `CASCADE_STORAGE_URL` of the
/// server on `data_dir`: a prefix of its own in the CORS-enabled bucket (the same again for a
/// restart on the dir).
pub fn storage_url(data_dir: &Path) -> Option<String> {
    use std::hash::{Hash, Hasher};
    if std::env::var("TEST_STORAGE").as_deref() != Ok("s3") {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    site_of(data_dir).hash(&mut h);
    Some(format!("s3://cascade-test/t{:016x}", h.finish()))
}

/// Prints the configuration before any failure message of a test that started a server.
fn name_the_configuration_in_failures() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            eprintln!("[configuration: {}]", configuration());
            default(info);
        }));
    });
}

/// In the scaled configuration, the database of the server on `data_dir`: one per data dir
/// (fresh for a fresh dir, the same again for a restart on it), on `TEST_POSTGRES`
/// (default the test machines' `127.0.0.1:5432`). Cascade creates it; the test command drops
/// every `cascade_test_*` database at its end.
pub fn database_url(data_dir: &Path) -> Option<String> {
    use std::hash::{Hash, Hasher};
    if std::env::var("TEST_STORE").as_deref() != Ok("postgres") {
        return None;
    }
    let server = std::env::var("TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    site_of(data_dir).hash(&mut h);
    Some(format!("{server}/cascade_test_{:016x}", h.finish()))
}

/// The holder of a video's job, read from the database (`None`: no job, not running, or the
/// database does not answer now).
pub async fn holder(url: &str, id: &str) -> Option<String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.ok()?;
    let v: Option<Vec<u8>> = sqlx::query_scalar("SELECT v FROM cascade_kv WHERE tree = 'jobs' AND k = $1")
        .bind(id.as_bytes())
        .fetch_optional(&mut c)
        .await
        .ok()?;
    let job: Value = serde_json::from_slice(&v?).unwrap();
    job["holder"].as_str().map(String::from)
}

/// Waits until `f` gives `Some`, at most `timeout`.
pub async fn wait_some<T, F: std::future::Future<Output = Option<T>>>(timeout: Duration, what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `cascade worker` process on `data_dir` with the database and media storage of its site in
/// this configuration and `env` on top; its log goes to `log`. Killed when dropped.
pub fn spawn_worker(data_dir: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cascade"));
    cmd.arg("worker").current_dir(repo()).env("CASCADE_DATA_DIR", data_dir).env("CASCADE_MIN_FREE_BYTES", "0").env("CASCADE_LOG", "info");
    if let Some(url) = database_url(data_dir) {
        cmd.env("CASCADE_DATABASE_URL", url);
    }
    if let Some(url) = storage_url(data_dir) {
        cmd.env("CASCADE_STORAGE_URL", url).envs(s3().env());
    }
    cmd.envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start cascade worker")
}

/// Runs `cascade ARGS` on a data dir; returns stdout, panicking with stderr on failure.
pub fn cascade_cli(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"));
    if let Some(url) = args.iter().position(|a| *a == "--data-dir").and_then(|i| database_url(Path::new(args[i + 1]))) {
        cmd.env("CASCADE_DATABASE_URL", url);
    }
    let mut child = cmd
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cascade");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// Creates `name` (once) and returns a new API token for it.
pub fn user_with_token(data_dir: &Path, name: &str, password: &str, admin: bool, scopes: &str) -> String {
    let dir = data_dir.to_str().unwrap();
    let mut add = vec!["user", "add", name, "--password-stdin", "--data-dir", dir];
    if admin {
        add.push("--admin");
    }
    let o = cascade_cli(&add, Some(&format!("{password}\n")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() || err.contains("is taken"), "user add {name}: {err}");
    let o = cascade_cli(&["token", "create", name, "--scope", scopes, "--data-dir", dir], None);
    assert!(o.status.success(), "token create {name}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// A reqwest client that sends this bearer token.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().timeout(Duration::from_secs(60)).default_headers(h).build().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    /// Starts a server with a fresh data dir and extra `CASCADE_*` settings.
    pub async fn start(env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_in(&dir, env).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on an existing data dir (restart tests).
    pub async fn start_in(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        // Before the server starts, the command opens the database itself. The port is chosen
        // after that: the shorter the time between choosing and binding, the less another test's
        // server can take the same free port.
        let token = user_with_token(data_dir, ADMIN, ADMIN_PASSWORD, true, "upload,manage");
        Server::spawn(data_dir, env, token).await
    }

    /// Starts a server on a fresh data dir where no user exists (first-run setup); its client
    /// sends no credential.
    pub async fn start_without_users(env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Server::spawn(tmp.path(), env, String::new()).await;
        s._tmp = Some(tmp);
        s
    }

    async fn spawn(data_dir: &Path, env: &[(&str, &str)], token: String) -> Server {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cascade"));
        cmd.arg("serve")
            .current_dir(repo())
            .env("CASCADE_BIND", format!("127.0.0.1:{port}"))
            // Any free port: tests run many servers at once (the live tests read it from the stream).
            .env("CASCADE_RTMP_BIND", "127.0.0.1:0")
            .env("CASCADE_SRT_BIND", "off")
            .env("CASCADE_DATA_DIR", data_dir)
            .env("CASCADE_MIN_FREE_BYTES", "0")
            // Absolute playback URLs, as clients outside a browser need them.
            .env("CASCADE_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("CASCADE_LOG", "info,warp=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(data_dir.with_extension(format!("{port}.log"))).unwrap()))
            .kill_on_drop(true);
        if let Some(url) = database_url(data_dir) {
            cmd.env("CASCADE_DATABASE_URL", url);
        }
        if let Some(url) = storage_url(data_dir) {
            cmd.env("CASCADE_STORAGE_URL", url).envs(s3().env());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        name_the_configuration_in_failures();
        let child = cmd.spawn().expect("start cascade");
        let client = if token.is_empty() {
            reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
        } else {
            client_with_token(&token)
        };
        let log_path = data_dir.with_extension(format!("{port}.log"));
        let server = Server { child, port, data_dir: data_dir.to_path_buf(), log_path, _tmp: None, client, token };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = server.client.get(server.url("/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "server did not become healthy; log: {}", server.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The configuration is the one named (its start-up line says where media goes).
        if storage_url(data_dir).is_some() {
            assert!(server.log().contains("media in object storage"), "{}", server.log());
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The header line that authenticates a hand-written request.
    pub fn auth(&self) -> String {
        format!("Authorization: Bearer {}\r\n", self.token)
    }

    /// Where hand-written requests go, and with which credential.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { port: self.port, token: self.token.clone() }
    }

    /// Every byte the server's store holds: sled's files, or every key and value of its
    /// PostgreSQL database (to look for what must never be stored).
    pub async fn stored_bytes(&self) -> Vec<u8> {
        match database_url(&self.data_dir) {
            None => files_under(&self.data_dir.join("db")).into_iter().flat_map(|f| std::fs::read(f).unwrap()).collect(),
            Some(url) => {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as("SELECT k, v FROM cascade_kv").fetch_all(&mut c).await.unwrap();
                assert!(!rows.is_empty(), "the server's database {url} is empty");
                rows.into_iter().flat_map(|(k, v)| k.into_iter().chain(v)).collect()
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Where this server keeps media besides its data dir: (bucket client, prefix) in the S3
    /// configuration.
    fn bucket(&self) -> Option<(object_store::aws::AmazonS3, String)> {
        let url = storage_url(&self.data_dir)?;
        let (bucket, prefix) = url.strip_prefix("s3://").unwrap().split_once('/').unwrap();
        Some((bucket_client(bucket), prefix.to_string()))
    }

    /// The files of a video's media tree, (path in the tree, bytes), sorted: the published
    /// objects in the S3 configuration, else the files in the data dir.
    pub async fn media_files(&self, id: &str) -> Vec<(String, Vec<u8>)> {
        match self.bucket() {
            Some((store, prefix)) => objects_under(&store, &format!("{prefix}/media/{id}")).await,
            None => {
                let root = self.data_dir.join("media").join(id);
                let mut out: Vec<(String, Vec<u8>)> = files_under(&root)
                    .into_iter()
                    .map(|f| (f.strip_prefix(&root).unwrap().to_string_lossy().into_owned(), std::fs::read(&f).unwrap()))
                    .collect();
                out.sort();
                out
            }
        }
    }

    /// Every byte this server keeps outside its database: its data dir's files and, in the S3
    /// configuration, its objects (sources and media), as (name, bytes).
    pub async fn kept_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = ["media", "uploads"]
            .iter()
            .flat_map(|d| files_under(&self.data_dir.join(d)))
            .map(|f| (f.display().to_string(), std::fs::read(&f).unwrap()))
            .collect();
        if let Some((store, prefix)) = self.bucket() {
            out.extend(objects_under(&store, &prefix).await.into_iter().map(|(k, v)| (format!("s3:{prefix}/{k}"), v)));
        }
        out
    }

    /// Removes one file of a video's media tree where it is served from.
    pub async fn remove_media_file(&self, id: &str, rel: &str) {
        match self.bucket() {
            Some((store, prefix)) => {
                use object_store::ObjectStore;
                store.delete(&object_store::path::Path::from(format!("{prefix}/media/{id}/{rel}"))).await.unwrap();
            }
            None => std::fs::remove_file(self.data_dir.join("media").join(id).join(rel)).unwrap(),
        }
    }

    /// Writes one file of a video's media tree where it is served from.
    pub async fn put_media_file(&self, id: &str, rel: &str, data: &[u8]) {
        match self.bucket() {
            Some((store, prefix)) => {
                use object_store::ObjectStore;
                let key = object_store::path::Path::from(format!("{prefix}/media/{id}/{rel}"));
                store.put(&key, data.to_vec().into()).await.unwrap();
            }
            None => std::fs::write(self.data_dir.join("media").join(id).join(rel), data).unwrap(),
        }
    }

    /// Uploads a file; returns (status, JSON body).
    pub async fn upload(&self, path: &Path, title: &str) -> (u16, Value) {
        let bytes = tokio::fs::read(path).await.unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let form = reqwest::multipart::Form::new()
            .text("title", title.to_string())
            .part("file", reqwest::multipart::Part::bytes(bytes).file_name(name));
        let r = self.client.post(self.url("/api/videos")).multipart(form).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Uploads and returns the new id (asserting 201).
    pub async fn upload_ok(&self, path: &Path, title: &str) -> String {
        let (status, body) = self.upload(path, title).await;
        assert_eq!(status, 201, "upload of {} failed: {body}", path.display());
        body["id"].as_str().unwrap().to_string()
    }

    pub async fn get_video(&self, id: &str) -> Value {
        // A refused connection usually means the server died: show its log (a panic, an abort).
        let r = self.client.get(self.url(&format!("/api/videos/{id}"))).send().await;
        let r = r.unwrap_or_else(|e| panic!("GET video {id}: {e}\n--- server log ---\n{}", self.log()));
        r.json().await.unwrap()
    }

    /// Polls the record until `pred` holds (panics with the record and log after `timeout`).
    pub async fn wait_for(&self, id: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.get_video(id).await;
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting on {id}: {v}\n--- server log ---\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the video is `ready` or `failed`.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> Value {
        self.wait_for(id, timeout, |v| v["status"] == "ready" || v["status"] == "failed").await
    }

    pub async fn get_text(&self, url: &str) -> (u16, String) {
        let r = self.client.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Sends a request with this exact path (no client-side normalisation); returns status and body.
    pub async fn raw_get(&self, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, text)
    }

    /// Kills the server hard (SIGKILL).
    pub async fn kill9(&mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Polls `cond` until it holds or `timeout` has passed; returns whether it held. The 100 ms
/// between polls is the poll interval of this wait, not a guess at how long anything takes.
pub async fn wait_until(timeout: Duration, mut cond: impl std::ops::AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `data` has the structure of clear MPEG-TS: at least three 188-byte packets, each
/// starting with the sync byte 0x47. A first byte of 0x47 alone says nothing (AES output starts
/// with it once in 256 segments); ciphertext passes this check with odds of 256^-packets.
pub fn is_clear_ts(data: &[u8]) -> bool {
    data.len() >= 3 * TS_PACKET && data.iter().step_by(TS_PACKET).all(|&b| b == 0x47)
}

/// Size of an MPEG-TS packet.
pub const TS_PACKET: usize = 188;

/// Runs a command with a timeout; returns (success, stderr).
pub async fn run(cmd: &str, args: &[&str], timeout: Duration) -> (bool, String) {
    let child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (false, format!("{cmd} timed out after {timeout:?}")),
    }
}

/// Decodes every stream of `url` with ffmpeg; Err with ffmpeg's complaints.
pub async fn ffmpeg_decode(url: &str) -> Result<(), String> {
    let (ok, out) =
        run("ffmpeg", &["-nostdin", "-v", "error", "-xerror", "-i", url, "-map", "0", "-f", "null", "-"], Duration::from_secs(180)).await;
    if ok && out.trim().is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}

/// Keyframe times (seconds, from the first frame) of a stream ffprobe can read.
pub async fn keyframe_times(url: &str) -> Vec<f64> {
    let (ok, out) = run(
        "ffprobe",
        &["-v", "error", "-select_streams", "v:0", "-skip_frame", "nokey", "-show_entries", "frame=pts_time", "-of", "csv=p=0", url],
        Duration::from_secs(120),
    )
    .await;
    assert!(ok, "ffprobe keyframes of {url}: {out}");
    let times: Vec<f64> = out.lines().filter_map(|l| l.trim().trim_end_matches(',').parse().ok()).collect();
    assert!(!times.is_empty(), "no keyframes in {url}: {out}");
    times.iter().map(|t| t - times[0]).collect()
}

/// Duration ffprobe reports for a URL or file.
pub async fn ffprobe_duration(url: &str) -> f64 {
    let (ok, out) =
        run("ffprobe", &["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url], Duration::from_secs(60)).await;
    assert!(ok, "ffprobe {url}: {out}");
    out.trim().lines().last().unwrap_or("").trim().parse().unwrap_or_else(|_| panic!("ffprobe duration of {url}: {out:?}"))
}

fn clips_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// A clip generated with ffmpeg's lavfi sources, cached for the test binary's run.
/// `video` is a lavfi video source spec, `audio` an optional audio source spec.
pub async fn clip(name: &str, video: &str, audio: Option<&str>, seconds: f64, extra: &[&str]) -> PathBuf {
    let path = clips_dir().join(name);
    if path.exists() {
        return path;
    }
    let secs = seconds.to_string();
    let mut args: Vec<&str> = vec!["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", video];
    if let Some(a) = audio {
        args.extend(["-f", "lavfi", "-i", a]);
    }
    args.extend(["-t", secs.as_str()]);
    if extra.is_empty() {
        args.extend(["-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "-pix_fmt", "yuv420p"]);
        if audio.is_some() {
            args.extend(["-c:a", "aac", "-b:a", "96k"]);
        }
    } else {
        args.extend(extra);
    }
    let tmp = path.with_extension("tmp.".to_string() + path.extension().unwrap().to_str().unwrap());
    let tmp_s = tmp.to_string_lossy().to_string();
    args.push(&tmp_s);
    let (ok, out) = run("ffmpeg", &args, Duration::from_secs(300)).await;
    assert!(ok, "generating {name}: {out}");
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// 1280x720 30 fps with a 440 Hz tone.
pub async fn clip_720p(name: &str, seconds: f64) -> PathBuf {
    clip(name, "testsrc2=size=1280x720:rate=30", Some("sine=frequency=440:sample_rate=48000"), seconds, &[]).await
}

/// A file with these bytes.
pub fn bytes_file(name: &str, data: &[u8]) -> PathBuf {
    let p = clips_dir().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Parses a master playlist from a URL.
pub async fn master(server: &Server, url: &str) -> m3u8_rs::MasterPlaylist {
    let (status, text) = server.get_text(url).await;
    assert_eq!(status, 200, "{url}: {text}");
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => m,
        other => panic!("not a master playlist at {url}: {other:?}\n{text}"),
    }
}

/// Parses a media playlist from a URL.
pub async fn media_playlist(server: &Server, url: &str) -> (m3u8_rs::MediaPlaylist, String) {
    let (status, text) = server.get_text(url).await;
    assert_eq!(status, 200, "{url}: {text}");
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(m)) => (m, text),
        other => panic!("not a media playlist at {url}: {other:?}\n{text}"),
    }
}

/// Parses an MPD from a URL.
pub async fn mpd(server: &Server, url: &str) -> dash_mpd::MPD {
    let (status, text) = server.get_text(url).await;
    assert_eq!(status, 200, "{url}: {text}");
    dash_mpd::parse(&text).unwrap_or_else(|e| panic!("MPD at {url} does not parse: {e}\n{text}"))
}

/// URL of a media playlist next to a master URL.
pub fn sibling(master_url: &str, rel: &str) -> String {
    let base = &master_url[..master_url.rfind('/').unwrap() + 1];
    format!("{base}{rel}")
}

/// All files under a directory, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Sends an upload whose file part (an MP4 header and filler) is `file_bytes` long by hand: with `declared` the request says
/// `Content-Length: declared` and sends no body at all; without it, the body is chunked and
/// never finished. Returns the status line's code and the response text.
pub async fn raw_upload(to: &Endpoint, declared: Option<u64>, file_bytes: usize) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", to.port)).await.unwrap();
    let boundary = "cascadeboundary";
    let auth = to.auth();
    let head = match declared {
        Some(n) => format!("POST /api/videos HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {n}\r\n\r\n"),
        None => format!("POST /api/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n"),
    };
    s.write_all(head.as_bytes()).await.unwrap();
    if declared.is_none() {
        let preamble = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        let mut body = preamble.into_bytes();
        // An MP4 (ftyp, then an mdat to the end of the file) so that the upload is not refused
        // by its content first; mdat before moov: not streamed.
        let mut file = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2\x00\x00\x00\x00mdat".to_vec();
        file.resize(file_bytes.max(file.len()), b'x');
        body.extend(file);
        for chunk in body.chunks(64 * 1024) {
            let framed = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk.to_vec(), b"\r\n".to_vec()].concat();
            if s.write_all(&framed).await.is_err() {
                break;
            }
        }
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Uploads `path` by hand with a chunked body sent in `pieces` pieces with `pause` between them
/// (a slow uplink). With `abort_after = Some(k)` the connection is dropped after k pieces.
/// Returns the HTTP status (0 when aborted) and the response text.
pub async fn throttled_upload(
    to: &Endpoint,
    path: &Path,
    title: &str,
    pieces: usize,
    pause: Duration,
    abort_after: Option<usize>,
) -> (u16, String) {
    let data = std::fs::read(path).unwrap();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", to.port)).await.unwrap();
    let boundary = "cascadethrottled";
    let auth = to.auth();
    let name = path.file_name().unwrap().to_string_lossy();
    let client_ref: String = title.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let head = format!("POST /api/videos?ref={client_ref} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let send = |bytes: Vec<u8>| [format!("{:x}\r\n", bytes.len()).into_bytes(), bytes, b"\r\n".to_vec()].concat();
    let preamble = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n{title}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    s.write_all(&send(preamble.into_bytes())).await.unwrap();
    let piece = data.len().div_ceil(pieces);
    for (i, chunk) in data.chunks(piece).enumerate() {
        if abort_after == Some(i) {
            drop(s);
            return (0, String::new());
        }
        s.write_all(&send(chunk.to_vec())).await.unwrap();
        // Pacing, not synchronisation: the upload is meant to be slow.
        tokio::time::sleep(pause).await;
    }
    s.write_all(&send(format!("\r\n--{boundary}--\r\n").into_bytes())).await.unwrap();
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// A server's port and the token hand-written requests send.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub port: u16,
    pub token: String,
}

impl Endpoint {
    /// The `Authorization` header line.
    pub fn auth(&self) -> String {
        format!("Authorization: Bearer {}\r\n", self.token)
    }
}

/// The video with this title, from the list.
pub async fn find_by_title(server: &Server, title: &str) -> Option<Value> {
    let list: Value = server.client.get(server.url("/api/videos")).send().await.ok()?.json().await.ok()?;
    list["videos"].as_array()?.iter().find(|v| v["title"] == title).cloned()
}

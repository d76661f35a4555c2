//! Account administration from the command line (`cascade user add`, `cascade token create`).
//! sled lets one process open the database, so while the server runs these commands reach it
//! through a local socket, `DATA_DIR/admin.sock` (mode 0600: whoever may read the data dir may
//! administer); when no server answers there, the command opens the database itself. Either
//! way the same `execute` does the work.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing::{info, warn};

use super::accounts;
use crate::model::{Role, Scope};
use crate::store::{Store, StoreError};

/// Longest request line read from the socket.
const MAX_REQUEST: usize = 64 * 1024;
/// A client that says nothing for this long is dropped.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// What an administrator asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminRequest {
    /// A new user with this (already checked) password.
    UserAdd { name: String, password: String, admin: bool },
    /// A new API token for the user `name`.
    TokenCreate { name: String, scopes: Vec<Scope>, expires_days: Option<u32> },
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminReply {
    UserAdded { id: String, adopted_videos: usize },
    TokenCreated { token: String },
    Error(String),
}

/// The socket of a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

/// Does what the request asks, on an open store. Blocking.
pub fn execute(store: &Store, req: AdminRequest) -> AdminReply {
    let result = match req {
        AdminRequest::UserAdd { name, password, admin } => {
            let role = if admin { Role::Admin } else { Role::Uploader };
            accounts::new_user(&name, &password, role).map_err(|e| e.to_string()).and_then(|user| {
                let adopted = store.create_user(&user).map_err(|e| match e {
                    StoreError::NameTaken(n) => format!("the user name {n} is taken"),
                    other => other.to_string(),
                })?;
                Ok(AdminReply::UserAdded { id: user.id, adopted_videos: adopted })
            })
        }
        AdminRequest::TokenCreate { name, scopes, expires_days } => match store.user_by_name(&name) {
            Ok(Some(user)) => {
                let (secret, token) = accounts::new_token(&user.id, "cli", scopes, expires_days);
                store
                    .put_token(&accounts::digest(&secret), &token)
                    .map(|()| AdminReply::TokenCreated { token: secret })
                    .map_err(|e| e.to_string())
            }
            Ok(None) => Err(format!("no user {name}")),
            Err(e) => Err(e.to_string()),
        },
    };
    let flushed = store.flush().map_err(|e| e.to_string());
    match (result, flushed) {
        (Ok(reply), Ok(())) => reply,
        (Err(e), _) | (_, Err(e)) => AdminReply::Error(e),
    }
}

/// Listens on the data dir's admin socket for the life of the server.
pub async fn serve_socket(data_dir: &Path, store: crate::store::AsyncStore) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    // A socket file left by a killed server.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let store = Arc::new(store);
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &store).await {
                    warn!(error = %e, "admin socket request failed");
                }
            });
        }
    }))
}

async fn answer(stream: tokio::net::UnixStream, store: &crate::store::AsyncStore) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    tokio::time::timeout(SOCKET_TIMEOUT, reader.read_line(&mut line)).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
    let reply = match serde_json::from_str::<AdminRequest>(&line) {
        Ok(req) => {
            let what = match &req {
                AdminRequest::UserAdd { name, admin, .. } => format!("user add {name} (admin: {admin})"),
                AdminRequest::TokenCreate { name, .. } => format!("token create {name}"),
            };
            let reply = store.run(move |s| Ok::<_, StoreError>(execute(s, req))).await.unwrap_or_else(|e| AdminReply::Error(e.to_string()));
            info!(request = %what, ok = !matches!(reply, AdminReply::Error(_)), "admin socket");
            reply
        }
        Err(e) => AdminReply::Error(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

/// Runs a request on the data dir: through the running server's socket, else on the database
/// opened here. Blocking.
pub fn request(data_dir: &Path, req: AdminRequest) -> Result<AdminReply, String> {
    use std::io::{BufRead, Write};
    let path = socket_path(data_dir);
    if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&path) {
        s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
        let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
        line.push(b'\n');
        s.write_all(&line).map_err(|e| format!("cannot talk to the server at {}: {e}", path.display()))?;
        let mut answer = String::new();
        std::io::BufReader::new(s).read_line(&mut answer).map_err(|e| format!("no answer from the server at {}: {e}", path.display()))?;
        return serde_json::from_str(&answer).map_err(|e| format!("bad answer from the server: {e}"));
    }
    let database_url = std::env::var("CASCADE_DATABASE_URL").ok().filter(|u| !u.is_empty());
    let store = Store::open_configured(data_dir, database_url.as_deref()).map_err(|e| {
        format!(
            "cannot open the database in {} ({e}); if a server is running on it, its admin socket {} does not answer",
            data_dir.display(),
            path.display()
        )
    })?;
    Ok(execute(&store, req))
}

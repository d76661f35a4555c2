//! AES-128 HLS and playback tokens: what a viewer with a token gets, and what everyone else does not.

mod common;

use std::time::Duration;

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use common::*;

fn decrypt(data: &[u8], key: &[u8], iv: &[u8]) -> Option<Vec<u8>> {
    cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv).ok()?.decrypt_padded_vec_mut::<Pkcs7>(data).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_segments_and_token_enforcement() {
    let server = Server::start(&[]).await;
    let src = clip_720p("sec720.mp4", 8.0).await;
    let other_src = clip("sec_other.mp4", "testsrc2=size=320x240:rate=25", None, 4.0, &[]).await;
    let id = server.upload_ok(&src, "secret").await;
    let other = server.upload_ok(&other_src, "other").await;
    let v = server.wait_final(&id, Duration::from_secs(300)).await;
    assert_eq!(v["status"], "ready", "{v}");
    let w = server.wait_final(&other, Duration::from_secs(300)).await;
    assert_eq!(w["status"], "ready", "{w}");
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    let token = v["playback"]["token"].as_str().unwrap().to_string();
    let other_token = w["playback"]["token"].as_str().unwrap().to_string();

    // The key, as a player gets it through the playlist's relative URI.
    let (pl, text) = media_playlist(&server, &sibling(&hls, "720p/index.m3u8")).await;
    let key_line = pl.segments[0].key.clone().unwrap_or_else(|| panic!("{text}"));
    assert_eq!(key_line.uri.as_deref(), Some("../key"));
    let key_url = sibling(&hls, "key");
    let r = server.client.get(&key_url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("no-store"));
    let key = r.bytes().await.unwrap().to_vec();
    assert_eq!(key.len(), 16);
    let iv = hex::decode(key_line.iv.unwrap().trim_start_matches("0x")).unwrap();

    // As stored (on disk, or in the bucket): no segment is readable as TS, every one decrypts
    // to TS with the stored key.
    let segs: Vec<(String, Vec<u8>)> =
        server.media_files(&id).await.into_iter().filter(|(rel, _)| rel.starts_with("hls/") && rel.ends_with(".ts")).collect();
    assert!(segs.len() >= 6, "{:?}", segs.iter().map(|s| &s.0).collect::<Vec<_>>());
    for (name, data) in &segs {
        // Long enough for the structure check below to mean something.
        assert!(data.len() >= 3 * TS_PACKET, "{name} has only {} bytes", data.len());
        assert!(!is_clear_ts(data), "{name} is clear MPEG-TS");
        assert_eq!(data.len() % 16, 0);
        let clear = decrypt(data, &key, &iv).unwrap_or_else(|| panic!("{name} does not decrypt"));
        assert_eq!(clear.len() % TS_PACKET, 0);
        assert!(is_clear_ts(&clear), "{name} is not TS after decryption");
    }
    // The key bytes are nowhere in what is kept outside the database: the media tree, the
    // upload dir, the bucket.
    for (name, data) in server.kept_files().await {
        assert!(!data.windows(16).any(|w| w == key.as_slice()), "key bytes found in {name}");
    }

    // With the token, ffmpeg decodes every rendition.
    ffmpeg_decode(&hls).await.unwrap();

    // Altered token: playlist, key and segments are refused with a JSON 403; ffmpeg fails.
    let mut altered = token.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    for rel in ["hls/master.m3u8", "hls/key", "hls/720p/seg00000.ts", "dash/manifest.mpd", "dash/720p/init00000.mp4"] {
        let (status, body) = server.get_text(&server.url(&format!("/play/{altered}/{rel}"))).await;
        assert_eq!(status, 403, "{rel}: {body}");
        assert!(body.contains("\"code\":\"forbidden\""), "{body}");
    }
    assert!(ffmpeg_decode(&hls.replace(&token, &altered)).await.is_err());
    // Truncated token.
    let truncated = &token[..token.len() - 5];
    assert_eq!(server.get_text(&server.url(&format!("/play/{truncated}/hls/key"))).await.0, 403);
    // A token minted for another video opens only that video: the key served is the other one,
    // which does not decrypt this video's segments.
    let other_key =
        server.client.get(server.url(&format!("/play/{other_token}/hls/key"))).send().await.unwrap().bytes().await.unwrap().to_vec();
    assert_eq!(other_key.len(), 16);
    assert_ne!(other_key, key);
    let seg = &segs[0].1;
    assert!(decrypt(seg, &other_key, &iv).is_none_or(|c| !is_clear_ts(&c)), "another video's key decrypts this video's segment");
    // Swapping the video id inside the token breaks the signature.
    let swapped = token.replacen(&id, &other, 1);
    assert_eq!(server.get_text(&server.url(&format!("/play/{swapped}/hls/key"))).await.0, 403);
    // No other route reaches keys or media.
    for path in
        [format!("/media/{id}/hls/master.m3u8"), format!("/api/videos/{id}/key"), format!("/play/{id}/hls/key"), "/play/".to_string()]
    {
        let status = server.get_text(&server.url(&path)).await.0;
        assert!(status == 404 || status == 403, "{path}: {status}");
    }

    // Path traversal with a valid token: 403/404, never a file from outside the video's tree.
    let media_dir = server.data_dir.join("media").join(&id);
    // (In the S3 configuration nothing is served from the data dir of a ready video: the links
    // must not be followed all the same.)
    std::fs::create_dir_all(media_dir.join("hls")).unwrap();
    std::fs::create_dir_all(media_dir.join("dash")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", media_dir.join("hls").join("evil.m3u8")).unwrap();
    std::os::unix::fs::symlink(server.data_dir.join("media").join(&other), media_dir.join("dash").join("other")).unwrap();
    for path in [
        format!("/play/{token}/hls/../../../secret"),
        format!("/play/{token}/%2e%2e/%2e%2e/secret"),
        format!("/play/{token}/hls/%2E%2E/%2E%2E/%2E%2E/db/conf"),
        format!("/play/{token}/..%2f..%2fsecret"),
        format!("/play/{token}/hls/evil.m3u8"),
        format!("/play/{token}/dash/other/manifest.mpd"),
        format!("/play/{token}/hls/720p/seg00000.ts.part"),
    ] {
        let (status, text) = server.raw_get(&path).await;
        assert!(status == 403 || status == 404, "{path}: {status}\n{text}");
        assert!(!text.contains("root:"), "{path} leaked /etc/passwd");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire() {
    let server = Server::start(&[("CASCADE_TOKEN_TTL", "2")]).await;
    let src = clip("ttl.mp4", "testsrc2=size=320x240:rate=25", Some("sine"), 4.0, &[]).await;
    let id = server.upload_ok(&src, "ttl").await;
    server.wait_for(&id, Duration::from_secs(300), |v| v["status"] == "ready" || v["status"] == "failed").await;
    // A fresh token works right away…
    let v = server.get_video(&id).await;
    assert_eq!(v["status"], "ready", "{v}");
    let hls = v["playback"]["hls"].as_str().unwrap().to_string();
    assert_eq!(server.get_text(&hls).await.0, 200);
    assert_eq!(server.get_text(&sibling(&hls, "key")).await.0, 200);
    // …and is refused once its 2 s lifetime is over (expiry has whole-second resolution, so that
    // is within 3 s; 15 s leaves room for a loaded machine without accepting a token that never expires).
    assert!(wait_until(Duration::from_secs(15), async || server.get_text(&hls).await.0 == 403).await, "the token did not expire");
    let (status, body) = server.get_text(&hls).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("expired"), "{body}");
    assert_eq!(server.get_text(&sibling(&hls, "key")).await.0, 403);
    assert!(ffmpeg_decode(&hls).await.is_err());
    // The API hands out a new one, which works. (Requests, not a full decode: a decode can outlive
    // a 2 s token on a loaded machine. Decoding with a valid token is the test above.)
    let fresh = server.get_video(&id).await["playback"]["hls"].as_str().unwrap().to_string();
    assert_ne!(fresh, hls);
    assert_eq!(server.get_text(&fresh).await.0, 200);
    assert_eq!(server.get_text(&sibling(&fresh, "key")).await.0, 200);
}

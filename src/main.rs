//! Cascade: upload a video, get an adaptive HLS (AES-128) + DASH ladder, playable while encoding.

mod jobs;
mod ladder;
mod packaging;
mod probe;
mod transcode;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context};

fn usage() -> ! {
    eprintln!("usage: cascade transcode INPUT --out DIR [--backend gstreamer] [--ladder FILE]");
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CASCADE_LOG").unwrap_or_else(|_| "info".into())).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("transcode") => {
            let mut input = None;
            let mut out = None;
            let mut ladder_path = PathBuf::from("pipelines/ladder.toml");
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--out" => out = it.next().map(PathBuf::from),
                    "--ladder" => ladder_path = it.next().map(PathBuf::from).unwrap_or_else(|| usage()),
                    "--backend" => { it.next(); }
                    _ if input.is_none() => input = Some(PathBuf::from(a)),
                    _ => usage(),
                }
            }
            let (Some(input), Some(out)) = (input, out) else { usage() };
            let ladder = ladder::Ladder::load(&ladder_path)?;
            let media = probe::probe_file(&input, 20).map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
            println!("{}", serde_json::to_string_pretty(&media)?);
            if out.exists() && std::fs::read_dir(&out)?.next().is_some() {
                bail!("{} is not empty", out.display());
            }
            std::fs::create_dir_all(out.join("hls")).context("creating output dir")?;
            let key = packaging::crypto::KeyMaterial::generate();
            std::fs::write(out.join("hls").join("key"), key.key)?;
            let cancel = AtomicBool::new(false);
            let t0 = std::time::Instant::now();
            let res = jobs::execute::execute(&input, &out, &media, &ladder, Some(&key), &transcode::gst::GstTranscoder, &Default::default(), "/api/time", &mut |p| {
                match p {
                    jobs::execute::JobProgress::Playable { .. } => eprintln!("playable after {:.2}s", t0.elapsed().as_secs_f64()),
                    jobs::execute::JobProgress::Fraction(f) => eprint!("\r{:5.1}%", f * 100.0),
                }
            }, &cancel).map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
            eprintln!("\ndone in {:.2}s: {:?}", t0.elapsed().as_secs_f64(), res);
        }
        _ => usage(),
    }
    Ok(())
}

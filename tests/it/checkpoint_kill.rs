//! Crash safety: `vaegpu train` killed (SIGKILL) at random times while it writes a checkpoint every epoch
//! always leaves a newest checkpoint that loads and verifies, and only complete checkpoint folders; SIGINT
//! and SIGTERM stop it with their exit codes (130, 143) and a checkpoint at the step it reached.
#![cfg(unix)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::{self as common, bin};
use vaegpu::train::checkpoint;

fn tmp(name: &str) -> PathBuf {
    common::tmp("ckkill", name)
}

/// A tiny VAE with 2 steps per epoch and a one-batch test set: a checkpoint every few tens of
/// milliseconds, for as long as it is let run.
const RUN: &[&str] = &[
    "--train-limit",
    "64",
    "--batch",
    "32",
    "--hidden",
    "16",
    "--latent",
    "2",
    "--test-limit",
    "32",
    "--epochs",
    "1000000",
    "--keep-checkpoints",
    "2",
    "--quiet",
];

/// Spawns `vaegpu <args>` and returns once it has opened its adapter (its signal handlers are in
/// place), with a thread collecting the rest of its stderr.
fn spawn(args: &[&str]) -> (Child, JoinHandle<String>) {
    let mut child = bin().args(args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let (mut text, mut buf, mut told) = (Vec::new(), [0u8; 256], false);
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            if !told && String::from_utf8_lossy(&text).contains("adapter:") {
                told = true;
                let _ = tx.send(());
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let _ = rx.recv_timeout(Duration::from_secs(120));
    (child, reader)
}

/// xorshift64*: the kill times, seeded so a failure repeats (up to the machine's timing).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Every checkpoint folder under `root` (hidden temporaries aside) verifies, and `latest` names one.
/// Returns the newest one's (epoch, batch), or None before the first checkpoint.
fn check_root(root: &Path, keep: usize) -> Option<(usize, usize)> {
    let mut folders = Vec::new();
    for e in std::fs::read_dir(root).ok()?.map(|e| e.unwrap()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() && !name.starts_with('.') {
            checkpoint::open_meta(&e.path()).unwrap_or_else(|err| panic!("folder {name} does not verify: {err}"));
            folders.push(name);
        }
    }
    // A kill between a new folder's rename and the removal of the oldest leaves one more.
    assert!(folders.len() <= keep + 1, "{folders:?}");
    if !root.join(checkpoint::LATEST).exists() {
        assert!(folders.is_empty(), "folders without a latest: {folders:?}");
        return None;
    }
    let (dir, meta) = checkpoint::open_meta(root).unwrap_or_else(|e| panic!("the newest checkpoint: {e}"));
    assert!(folders.iter().any(|f| dir.ends_with(f)));
    Some((meta.epoch, meta.batch))
}

#[test]
fn sigkill_at_random_times_leaves_a_verified_newest_checkpoint() {
    let out = tmp("kill");
    let root = out.join("checkpoint");
    let o = out.to_str().unwrap().to_string();
    let r = root.to_str().unwrap().to_string();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut last = None;
    for round in 0..8 {
        let pointer = root.join(checkpoint::LATEST);
        let before = std::fs::read(&pointer).ok();
        let args: Vec<&str> = if before.is_some() {
            vec!["train", "--resume", &r, "--quiet"]
        } else {
            [&["train", "--out", &o][..], RUN].concat()
        };
        let (mut child, reader) = spawn(&args);
        // Mostly once this run has written a checkpoint of its own, amid the next ones; every fourth
        // round at any time after it opened the adapter, set-up included.
        if round % 4 != 3 {
            let t0 = std::time::Instant::now();
            while std::fs::read(&pointer).ok() == before && t0.elapsed().as_secs() < 60 {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(rng.below(400)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.below(3000)));
        }
        child.kill().unwrap();
        let st = child.wait().unwrap();
        let err = reader.join().unwrap();
        assert!(!err.contains("panicked"), "round {round}: {err}");
        assert!(st.code().is_none(), "round {round}: the run ended by itself ({st:?}): {err}");
        let now = check_root(&root, 2);
        eprintln!("round {round}: newest checkpoint {now:?}");
        assert!(now >= last, "round {round}: the newest checkpoint went back from {last:?} to {now:?}");
        last = now;
    }
    assert!(last.is_some_and(|(e, _)| e >= 2), "too few checkpoints were written to test anything: {last:?}");
    // The whole load through the CLI.
    let o = bin().args(["eval", "--k", "0", "--no-analysis", "--checkpoint"]).arg(&root).output().unwrap();
    vaegpu::testing::assert_ok(o, "eval");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn sigint_and_sigterm_exit_with_their_codes_and_a_checkpoint_where_they_stopped() {
    for (sig, code, name) in [("INT", 130, "SIGINT"), ("TERM", 143, "SIGTERM")] {
        let out = tmp(sig);
        let root = out.join("checkpoint");
        // 32 steps per epoch, one per submission: the signal most likely lands mid-epoch.
        let mut args = [&["train", "--out", out.to_str().unwrap()][..], &RUN[2..]].concat();
        args.extend(["--train-limit", "1024", "--steps-per-submit", "1"]);
        let (child, reader) = spawn(&args);
        std::thread::sleep(Duration::from_millis(300));
        let st = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap();
        assert!(st.success());
        let o = child.wait_with_output().unwrap();
        let err = reader.join().unwrap();
        assert_eq!(o.status.code(), Some(code), "{name}: {err}");
        assert!(err.contains(&format!("interrupted by {name}")) && !err.contains("panicked"), "{err}");
        let (dir, meta) = checkpoint::open_meta(&root).unwrap();
        assert!(err.contains(&dir.display().to_string()), "the message names {}: {err}", dir.display());
        eprintln!("{name}: stopped at {}", dir.display());
        // No step was skipped, so the optimizer step is the number of batches trained.
        assert_eq!(meta.step as usize, meta.epoch * 32 + meta.batch);
        assert_eq!(meta.gpu_state[1] as usize, meta.batch, "the train cursor");
        let o = bin().args(["eval", "--k", "0", "--no-analysis", "--checkpoint"]).arg(&root).output().unwrap();
        let o = vaegpu::testing::assert_ok(o, "eval");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(&format!("step {}", meta.step)), "{text}");
        let _ = std::fs::remove_dir_all(&out);
    }
}

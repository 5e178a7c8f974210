//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through the harnesses the
//! cargo-fuzz targets run (`imlab_core::fuzzing`), on stable Rust, so the seeds and the crashers
//! once found stay fixed without nightly. The harnesses are behind the `fuzzing` feature,
//! which imlab-core's dev-dependency on itself turns on for every test build.

// The counting allocator the `frame_decoder` target uses, shared by path: this test cannot
// depend on the nightly-only fuzz crate.
#[path = "../../fuzz/src/lib.rs"]
mod heap_meter;

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use heap_meter::{CountingAllocator, ThreadHeapMeter};
use imlab_core::codec::{self, CodecError};
use imlab_core::fuzzing::{self, HeapMeter, LoginOutcome, StreamEnd};
use imlab_core::proto::{self, Body, ErrorCode, Frame};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The corpus files of `target`, sorted by name, with their bytes.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../fuzz/corpus/{target}"));
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("a readable corpus dir").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("a readable corpus file"))
        })
        .collect();
    files.sort();
    files
}

/// Runs every corpus file of `target` through `run`; fails naming every file that panicked.
fn check<T>(target: &str, run: impl Fn(&[u8]) -> T) -> Vec<T> {
    let files = corpus(target);
    assert!(
        files.len() >= 10,
        "{target}: only {} corpus files",
        files.len()
    );
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    for (name, bytes) in &files {
        match catch_unwind(AssertUnwindSafe(|| run(bytes))) {
            Ok(outcome) => outcomes.push(outcome),
            Err(_) => failed.push(name.clone()),
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: these corpus files fail (messages above); replay one with \
         `cargo +nightly fuzz run {target} fuzz/corpus/{target}/<file>`: {failed:?}"
    );
    outcomes
}

#[test]
fn the_decoder_corpus_passes_and_reaches_every_ending() {
    let outcomes = check("frame_decoder", |bytes| {
        fuzzing::frame_decoder(bytes, Some(&ThreadHeapMeter))
    });
    let endings: BTreeSet<&str> = outcomes
        .iter()
        .map(|outcome| match &outcome.end {
            StreamEnd::Clean if outcome.n_frames >= 2 => "clean after frames",
            StreamEnd::Clean => "clean",
            StreamEnd::Truncated { .. } => "truncated",
            StreamEnd::Error(CodecError::FrameTooLarge { .. }) => "too large",
            StreamEnd::Error(CodecError::Malformed { .. }) => "malformed",
            StreamEnd::Error(CodecError::EmptyFrame) => "empty",
        })
        .collect();
    let all = [
        "clean",
        "clean after frames",
        "truncated",
        "too large",
        "malformed",
        "empty",
    ];
    assert_eq!(endings, BTreeSet::from(all));
}

#[test]
fn the_login_corpus_passes_and_reaches_every_answer() {
    let outcomes: BTreeSet<String> = check("login", fuzzing::login)
        .into_iter()
        .map(|outcome| match outcome {
            LoginOutcome::Refused(code) => format!("{code:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    let mut expected: BTreeSet<String> = [
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::NotLoggedIn,
        ErrorCode::InvalidRequest,
        ErrorCode::AuthFailed,
        ErrorCode::TokenExpired,
        ErrorCode::LoginTimeout,
    ]
    .iter()
    .map(|code| format!("{code:?}"))
    .collect();
    expected.extend(["LoggedIn".to_string(), "ClosedSilently".to_string()]);
    assert_eq!(outcomes, expected);
}

/// The allocation checks cannot pass vacuously: the meter sees a decode allocate, and sees
/// nothing for a frame still incomplete.
#[test]
fn the_heap_meter_sees_the_decoder_allocate() {
    let login = proto::Login {
        user: "a".repeat(1_000),
        ..proto::Login::default()
    };
    let bytes = codec::encode_to_vec(&Frame::new(Body::Login(login)));
    let meter = ThreadHeapMeter;
    meter.start();
    let decoded = codec::decode(&bytes, codec::DEFAULT_MAX_FRAME_BYTES);
    let peak_bytes = meter.peak_bytes();
    assert!(
        peak_bytes >= 1_000,
        "measured {peak_bytes} bytes: {decoded:?}"
    );
    meter.start();
    let decoded = codec::decode(&bytes[..bytes.len() - 1], codec::DEFAULT_MAX_FRAME_BYTES);
    assert_eq!(meter.peak_bytes(), 0, "{decoded:?}");
}

//! The small files an on-disk engine keeps beside its data: the `IMLAB-STORE` marker (format
//! version and engine name, written once at creation) and the `IMLAB-STORE.commits`
//! watermark (a count of commits known durable, rewritten now and then and at a clean
//! close).
//!
//! The marker turns "the engine found no data here" into an error instead of a new empty
//! store. The watermark catches an engine that recovers fewer commits than were durable: an
//! engine that stops replaying its journal at the first bad record (fjall does) would
//! otherwise open silently without the commits after it.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::engine::EngineError;

/// The marker file's name.
pub const MARKER_FILE: &str = "IMLAB-STORE";

/// The marker's format version written by this build. Format 2 (2026-12-05) leads every
/// key of a user or group with four bytes of the id's hash (`keys.rs`); format 1's keys
/// started with the id's length, so a build of either reads neither the other's keys.
pub const MARKER_FORMAT: u32 = 2;

/// The watermark file's name.
pub const WATERMARK_FILE: &str = "IMLAB-STORE.commits";

/// What the watermark file says before the count.
pub const WATERMARK_PREFIX: &str = "durable commits ";

/// An [`EngineError::Open`] about `path`.
pub fn open_error(path: &Path, detail: impl Into<String>) -> EngineError {
    EngineError::Open {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Writes the marker of a new store of engine `engine_name` into `dir`.
pub fn write_marker(dir: &Path, engine_name: &str) -> Result<(), EngineError> {
    let text = format!("imlab-store format {MARKER_FORMAT}\nengine {engine_name}\n");
    write_atomically(dir, MARKER_FILE, &text)
        .map_err(|error| open_error(&dir.join(MARKER_FILE), format!("write: {error}")))
}

/// Checks that the marker in `dir` is of this format and of engine `engine_name`.
pub fn check_marker(dir: &Path, engine_name: &str) -> Result<(), EngineError> {
    let marker = dir.join(MARKER_FILE);
    let text = fs::read_to_string(&marker)
        .map_err(|error| open_error(&marker, format!("read: {error}")))?;
    let mut lines = text.lines();
    let format = lines
        .next()
        .and_then(|line| line.strip_prefix("imlab-store format "))
        .and_then(|format| format.trim().parse::<u32>().ok())
        .ok_or_else(|| {
            open_error(
                &marker,
                "not an imlab store marker (first line is not \"imlab-store format N\")",
            )
        })?;
    if format != MARKER_FORMAT {
        return Err(open_error(
            &marker,
            format!(
                "store format {format}, this build reads format {MARKER_FORMAT} only (no \
                 conversion: open it with the build that wrote it)"
            ),
        ));
    }
    match lines.next().and_then(|line| line.strip_prefix("engine ")) {
        Some(name) if name == engine_name => Ok(()),
        Some(other) => Err(open_error(
            &marker,
            format!("store written by engine {other:?}, not {engine_name:?}"),
        )),
        None => Err(open_error(&marker, "no \"engine NAME\" line")),
    }
}

/// The watermark in `dir` (`None`: never written).
pub fn read_watermark(dir: &Path) -> Result<Option<u64>, EngineError> {
    let path = dir.join(WATERMARK_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(open_error(&path, format!("read: {error}"))),
    };
    text.trim_end()
        .strip_prefix(WATERMARK_PREFIX)
        .and_then(|count| count.parse().ok())
        .map(Some)
        .ok_or_else(|| open_error(&path, format!("not \"{WATERMARK_PREFIX}N\": {text:?}")))
}

/// Records that `commits` commits are durable.
pub fn write_watermark(dir: &Path, commits: u64) -> std::io::Result<()> {
    write_atomically(
        dir,
        WATERMARK_FILE,
        &format!("{WATERMARK_PREFIX}{commits}\n"),
    )
}

/// Writes `dir/name` whole or not at all: temporary file, fsync, rename, fsync the directory.
fn write_atomically(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

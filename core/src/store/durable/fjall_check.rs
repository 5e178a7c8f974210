//! Finds the damaged file when fjall reports damage by folder only.
//!
//! fjall checks its files' checksums as it reads them, but its errors carry no path
//! (`ChecksumMismatch { got, expected }`, `Unrecoverable`, an early end of file). When an open
//! or a read fails like that, [`damaged_files`] checks every table, version and blob file
//! under the keyspace directory the way lsm-tree reads them, so the error can name the file:
//!
//! - each file is an `sfa` archive whose trailer and table of contents carry a checksum
//!   (a torn or truncated file fails here);
//! - a table file's block sections are runs of blocks, each with a header (magic `LSM\x03`,
//!   type, a 128-bit xxh3 of the block's bytes on disk, lengths, and a 32-bit xxh3 of the
//!   header itself), checked block by block.
//!
//! This follows lsm-tree 3's format (pinned in Cargo.lock); the damage test in
//! `core/tests/durable.rs` fails if a new version of the format stops matching.

use std::fs;
use std::path::{Path, PathBuf};

/// lsm-tree's block magic.
const BLOCK_MAGIC: [u8; 4] = [b'L', b'S', b'M', 3];
/// Magic, block type, data checksum (u128), on-disk length, uncompressed length.
const HEADER_BODY_BYTES: usize = 4 + 1 + 16 + 4 + 4;
/// The header body and its own 32-bit checksum.
const HEADER_BYTES: usize = HEADER_BODY_BYTES + 4;
/// The sections of a table file that are runs of blocks (`linked_blob_files` and
/// `table_version` are raw bytes).
const BLOCK_SECTIONS: [&[u8]; 6] = [b"data", b"tli", b"index", b"filter_tli", b"filter", b"meta"];

/// A file that fails lsm-tree's checks, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    pub path: PathBuf,
    pub why: String,
}

/// Every damaged table, version or blob file under `keyspace_dir` (fjall's folder), in path
/// order. Files that cannot be listed or read count as damaged, with the OS error.
pub fn damaged_files(keyspace_dir: &Path) -> Vec<DamagedFile> {
    let mut damaged = Vec::new();
    for tree in sorted_entries(&keyspace_dir.join("keyspaces")) {
        if !tree.is_dir() {
            continue;
        }
        for entry in sorted_entries(&tree) {
            let name = entry
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let is_version = name.len() > 1
                && name.starts_with('v')
                && name[1..].bytes().all(|b| b.is_ascii_digit());
            if is_version {
                damaged.extend(check_archive(&entry, false));
            } else if entry.is_dir() && (name == "tables" || name == "blobs") {
                for file in sorted_entries(&entry) {
                    damaged.extend(check_archive(&file, name == "tables"));
                }
            }
        }
    }
    damaged
}

/// One line for an error message: the damaged files, or that none was found.
pub fn describe(damaged: &[DamagedFile]) -> Option<String> {
    match damaged {
        [] => None,
        [one] => Some(format!("damaged file {}: {}", one.path.display(), one.why)),
        many => Some(format!(
            "damaged files: {}",
            many.iter()
                .map(|file| format!("{} ({})", file.path.display(), file.why))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    entries.sort();
    entries
}

fn check_archive(path: &Path, is_table: bool) -> Option<DamagedFile> {
    let damaged = |why: String| {
        Some(DamagedFile {
            path: path.to_path_buf(),
            why,
        })
    };
    let reader = match sfa::Reader::new(path) {
        Ok(reader) => reader,
        Err(error) => return damaged(format!("table of contents unreadable ({error:?})")),
    };
    if !is_table {
        return None;
    }
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => return damaged(format!("read: {error}")),
    };
    for section in reader.toc().iter() {
        if !BLOCK_SECTIONS.contains(&section.name()) {
            continue;
        }
        let start = section.pos() as usize;
        let end = start.saturating_add(section.len() as usize);
        if end > bytes.len() {
            return damaged(format!(
                "section {:?} ends at byte {end}, past the file's end ({})",
                String::from_utf8_lossy(section.name()),
                bytes.len()
            ));
        }
        if let Err(why) = check_blocks(&bytes[start..end], start) {
            return damaged(why);
        }
    }
    None
}

/// Checks that `section` (at file offset `base`) is a run of sound blocks.
fn check_blocks(section: &[u8], base: usize) -> Result<(), String> {
    let mut at = 0;
    while at < section.len() {
        let offset = base + at;
        let Some(header) = section.get(at..at + HEADER_BYTES) else {
            return Err(format!("a block header at byte {offset} is cut short"));
        };
        if header[..4] != BLOCK_MAGIC {
            return Err(format!("no block header at byte {offset}"));
        }
        let stored = u32::from_le_bytes(header[HEADER_BODY_BYTES..].try_into().expect("4 bytes"));
        if xxhash_rust::xxh3::xxh3_128(&header[..HEADER_BODY_BYTES]) as u32 != stored {
            return Err(format!(
                "the block header at byte {offset} fails its checksum"
            ));
        }
        let data_checksum = u128::from_le_bytes(header[5..21].try_into().expect("16 bytes"));
        let data_len = u32::from_le_bytes(header[21..25].try_into().expect("4 bytes")) as usize;
        let data_start = at + HEADER_BYTES;
        let Some(data) = section.get(data_start..data_start + data_len) else {
            return Err(format!(
                "the block at byte {offset} runs past its section's end"
            ));
        };
        if xxhash_rust::xxh3::xxh3_128(data) != data_checksum {
            return Err(format!("the block at byte {offset} fails its checksum"));
        }
        at = data_start + data_len;
    }
    Ok(())
}

//! An [`Engine`] on disk, on the `fjall` LSM-tree: one fjall keyspace per [`Partition`], one
//! fjall write batch per commit, fsynced (`PersistMode::SyncAll`) on a blocking thread.
//! fjall's journal is preallocated sparse; the vendored fjall writes it with zeros ahead of its
//! data (vendor/README.md), so a commit's fsync seldom allocates blocks.
//!
//! The directory holds the [`marker`](super::marker) files and fjall's own files under
//! `fjall/`. Every commit also counts itself in an `engine` keyspace; on open, a count below
//! the watermark means fjall's journal replay stopped early (it stops, and truncates, at the
//! first undecodable record, anywhere in the journal), which fails the open. A torn last
//! batch after a crash is dropped by fjall and, the watermark lagging behind, opens fine.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::engine::{
    BlockingCommit, Engine, EngineError, KeyValue, Partition, WriteBatch, WriteOp,
};
use super::fjall_check;
use super::marker::{self, MARKER_FILE, open_error};

/// The sub-directory holding fjall's files.
pub const KEYSPACE_DIR: &str = "fjall";

/// fjall's own format marker inside [`KEYSPACE_DIR`]; fjall creates a new empty database
/// wherever it is missing, so its absence under an existing marker is an error.
const FJALL_VERSION_FILE: &str = "version";

const ENGINE_NAME: &str = "fjall";

/// The keyspace of the engine's own bookkeeping, and its commit counter's key.
const ENGINE_KEYSPACE: &str = "engine";
const COMMITS_KEY: &[u8] = b"commits";

/// The watermark is rewritten after this many commits (three fsyncs, so about 0.3% more).
const WATERMARK_EVERY_COMMITS: u64 = 1_000;

/// The fjall [`Engine`].
pub struct FjallEngine {
    dir: PathBuf,
    keyspaces: Arc<[Keyspace]>,
    /// What a commit needs, shared with the blocking-pool thread of an async commit.
    committer: Arc<Committer>,
}

impl std::fmt::Debug for FjallEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallEngine")
            .field("dir", &self.dir)
            .field("commits", &self.commits())
            .finish_non_exhaustive()
    }
}

/// How long a flush (a full 64 MiB memtable written out as a table, about a third of a
/// core-second) runs in the kernel's idle CPU class, taking only CPU time the server's threads
/// leave, before it competes as they do: the vendored fjall's second edit (vendor/README.md).
/// On a server near its capacity the flush's second was the one that failed a 10 ms p99;
/// past capacity, where no CPU is left, this delays the flush by up to this long.
pub const FLUSH_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(2);

impl FjallEngine {
    /// Opens the store in `dir`, creating it (and `dir`) when `dir` is missing or empty, with
    /// flushes at the idle CPU class for up to [`FLUSH_IDLE_FOR`].
    ///
    /// Fails, naming the file or directory at fault, when `dir` is not empty and holds no
    /// marker, when the marker is unreadable or from another format or engine, when fjall's
    /// files are missing or damaged, or when fjall recovers fewer commits than the watermark
    /// says were durable.
    pub fn open(dir: impl AsRef<Path>) -> Result<FjallEngine, EngineError> {
        FjallEngine::open_with(dir, FLUSH_IDLE_FOR)
    }

    /// [`FjallEngine::open`] with flushes at the idle CPU class for up to `flush_idle_for`
    /// (zero: never, fjall's own behaviour).
    pub fn open_with(
        dir: impl AsRef<Path>,
        flush_idle_for: std::time::Duration,
    ) -> Result<FjallEngine, EngineError> {
        let dir = dir.as_ref().to_path_buf();
        let keyspace_dir = dir.join(KEYSPACE_DIR);
        fs::create_dir_all(&dir).map_err(|error| open_error(&dir, format!("create: {error}")))?;
        let marker_path = dir.join(MARKER_FILE);
        let exists = marker_path
            .try_exists()
            .map_err(|error| open_error(&marker_path, error.to_string()))?;
        if exists {
            marker::check_marker(&dir, ENGINE_NAME)?;
            let fjall_version = keyspace_dir.join(FJALL_VERSION_FILE);
            if !fjall_version
                .try_exists()
                .map_err(|error| open_error(&fjall_version, error.to_string()))?
            {
                return Err(open_error(
                    &fjall_version,
                    format!(
                        "missing: {} says a store was created here, but its data is gone \
                         (if creating it was interrupted before any write, delete the directory)",
                        marker_path.display()
                    ),
                ));
            }
        } else {
            check_empty(&dir, &marker_path)?;
            marker::write_marker(&dir, ENGINE_NAME)?;
            // From birth on, a store has a watermark: its absence later means it was deleted
            // and damage to the journal could go unnoticed.
            marker::write_watermark(&dir, 0).map_err(|error| {
                open_error(&dir.join(marker::WATERMARK_FILE), format!("write: {error}"))
            })?;
        }
        // fjall's errors name no file: find the damaged one, if that is what failed.
        let fjall_error =
            |what: &str, error: ::fjall::Error| match fjall_check::damaged_files(&keyspace_dir)
                .as_slice()
            {
                [one] => open_error(&one.path, format!("{}; fjall {what}: {error}", one.why)),
                damaged => match fjall_check::describe(damaged) {
                    Some(files) => open_error(&keyspace_dir, format!("{files}; {what}: {error}")),
                    None => open_error(&keyspace_dir, format!("{what}: {error}")),
                },
            };
        let db = Database::builder(&keyspace_dir)
            .flush_idle_for(flush_idle_for)
            .open()
            .map_err(|error| {
                // A journal that fails recovery is named by file, not only by folder.
                if let ::fjall::Error::JournalRecovery(recovery) = &error {
                    let journals = journal_files(&keyspace_dir);
                    if let [journal] = journals.as_slice() {
                        return open_error(journal, format!("fjall journal recovery: {recovery}"));
                    }
                    let names: Vec<String> =
                        journals.iter().map(|j| j.display().to_string()).collect();
                    return open_error(
                        &keyspace_dir,
                        format!(
                            "fjall journal recovery: {recovery}, in one of the journals {}",
                            names.join(", ")
                        ),
                    );
                }
                fjall_error("open", error)
            })?;
        let open_keyspace = |name: &str| {
            if exists && !db.keyspace_exists(name) {
                return Err(open_error(
                    &keyspace_dir,
                    format!("fjall keyspace {name:?} is missing"),
                ));
            }
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(|error| fjall_error(&format!("fjall keyspace {name:?}"), error))
        };
        let keyspaces = Partition::ALL
            .iter()
            .map(|partition| open_keyspace(partition.name()))
            .collect::<Result<Arc<[Keyspace]>, _>>()?;
        let engine_keyspace = open_keyspace(ENGINE_KEYSPACE)?;
        if !exists {
            db.persist(PersistMode::SyncAll)
                .map_err(|error| fjall_error("fjall persist", error))?;
        }
        let commits_total = match engine_keyspace
            .get(COMMITS_KEY)
            .map_err(|error| fjall_error("read the commit count", error))?
        {
            Some(value) => u64::from_be_bytes(
                value
                    .as_ref()
                    .try_into()
                    .map_err(|_| open_error(&keyspace_dir, "the commit count is not 8 bytes"))?,
            ),
            None => 0,
        };
        let Some(watermark) = marker::read_watermark(&dir)? else {
            return Err(open_error(
                &dir.join(marker::WATERMARK_FILE),
                format!(
                    "missing: {} says a store is here, but its commit watermark is gone, so \
                     lost commits could not be noticed; restore the file, or write \
                     \"{}0\" into it to accept the store as it is",
                    marker_path.display(),
                    marker::WATERMARK_PREFIX
                ),
            ));
        };
        if commits_total < watermark {
            // fjall stops replaying a journal at the first bad batch: the journals are the
            // files to look at first.
            let journals: Vec<String> = journal_files(&keyspace_dir)
                .iter()
                .map(|j| j.display().to_string())
                .collect();
            return Err(open_error(
                &keyspace_dir,
                format!(
                    "fjall recovered {commits_total} commits, but {} records {watermark} as \
                     durable: committed data is missing ({})",
                    dir.join(marker::WATERMARK_FILE).display(),
                    fjall_check::describe(&fjall_check::damaged_files(&keyspace_dir))
                        .unwrap_or_else(|| format!(
                            "a damaged journal: {}",
                            if journals.is_empty() {
                                "none found".to_string()
                            } else {
                                journals.join(", ")
                            }
                        )),
                ),
            ));
        }
        let committer = Arc::new(Committer {
            db,
            keyspaces: keyspaces.clone(),
            engine_keyspace,
            commits_total: Mutex::new(commits_total),
            n_commits: AtomicU64::new(0),
            dir: dir.clone(),
        });
        Ok(FjallEngine {
            dir,
            keyspaces,
            committer,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Commits (one fsync each) by this handle.
    pub fn commits(&self) -> u64 {
        self.committer.n_commits.load(Ordering::Relaxed)
    }

    /// Writes every partition's in-memory table to table files and waits. The journal
    /// already makes commits durable; this is for tests and benchmarks that need data in
    /// table files. Blocks: call it off the async runtime's threads in a server.
    pub fn flush_memtables(&self) -> Result<(), EngineError> {
        for (partition, keyspace) in Partition::ALL.iter().zip(self.keyspaces.iter()) {
            keyspace
                .rotate_memtable_and_wait()
                .map_err(|error| self.read_failed("flush", *partition, error))?;
        }
        Ok(())
    }

    fn keyspace(&self, partition: Partition) -> &Keyspace {
        &self.keyspaces[partition.index()]
    }

    /// Names a failed read by partition and keyspace directory, so damage found by a read
    /// (fjall checks a block's checksum when it first reads it) points at the files.
    /// When the files hold the damage, the error names the damaged file.
    fn read_failed(&self, what: &str, partition: Partition, error: ::fjall::Error) -> EngineError {
        let operation = format!(
            "{what} {} at {}",
            partition.name(),
            self.keyspace(partition).path().display()
        );
        // Only an error that can mean damage reads the files: a failing disk's every I/O
        // error must not turn into a scan of the whole store.
        if !may_be_damage(&error) {
            return failed(&operation, error);
        }
        let damaged = fjall_check::damaged_files(&self.dir.join(KEYSPACE_DIR));
        match fjall_check::describe(&damaged) {
            Some(files) => failed(&operation, format!("{error}; {files}")),
            None => failed(&operation, error),
        }
    }
}

impl Drop for FjallEngine {
    fn drop(&mut self) {
        // A clean close: every counted commit is durable, so the watermark can catch up.
        let commits = *self
            .committer
            .commits_total
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(error) = marker::write_watermark(&self.dir, commits) {
            tracing::warn!(dir = %self.dir.display(), "cannot write the commit watermark: {error}");
        }
    }
}

/// Refuses to create a store in a directory holding anything but an interrupted creation's
/// leftover temporary file.
/// fjall's journal files (`*.jnl`) in `keyspace_dir` and the folders directly below it,
/// sorted.
fn journal_files(keyspace_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut folders = vec![keyspace_dir.to_path_buf()];
    if let Ok(entries) = fs::read_dir(keyspace_dir) {
        folders.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    let mut journals: Vec<std::path::PathBuf> = folders
        .iter()
        .filter_map(|folder| fs::read_dir(folder).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jnl"))
        .collect();
    journals.sort();
    journals
}

fn check_empty(dir: &Path, marker_path: &Path) -> Result<(), EngineError> {
    let leftover = format!("{MARKER_FILE}.tmp");
    let mut entries =
        fs::read_dir(dir).map_err(|error| open_error(dir, format!("list: {error}")))?;
    if entries.any(|entry| entry.map_or(true, |entry| entry.file_name() != *leftover)) {
        return Err(open_error(
            marker_path,
            format!(
                "missing, and {} is not empty: not an imlab store",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Whether fjall's `error` can come from a damaged file (a checksum, a header, a format, a
/// file cut short), rather than from the disk or the OS refusing an operation.
fn may_be_damage(error: &::fjall::Error) -> bool {
    use ::fjall::{Error, LsmError};
    match error {
        Error::Io(io) | Error::Storage(LsmError::Io(io)) => {
            matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            )
        }
        Error::Poisoned => false,
        _ => true,
    }
}

fn failed(operation: &str, error: impl std::fmt::Display) -> EngineError {
    EngineError::Failed {
        operation: operation.to_string(),
        detail: error.to_string(),
    }
}

fn pair(guard: ::fjall::Guard) -> Result<KeyValue, ::fjall::Error> {
    let (key, value) = guard.into_inner()?;
    Ok((key.to_vec(), value.to_vec()))
}

impl Engine for FjallEngine {
    fn name(&self) -> &'static str {
        ENGINE_NAME
    }

    fn get(&self, partition: Partition, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.keyspace(partition)
            .get(key)
            .map(|value| value.map(|value| value.to_vec()))
            .map_err(|error| self.read_failed("read", partition, error))
    }

    fn last_with_prefix(
        &self,
        partition: Partition,
        prefix: &[u8],
    ) -> Result<Option<KeyValue>, EngineError> {
        self.keyspace(partition)
            .prefix(prefix)
            .next_back()
            .map(pair)
            .transpose()
            .map_err(|error| self.read_failed("read last of", partition, error))
    }

    fn scan(
        &self,
        partition: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        let keyspace = self.keyspace(partition);
        let iter = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => keyspace.range(start..end),
            None => keyspace.range(start..),
        };
        iter.take(limit)
            .map(pair)
            .collect::<Result<_, _>>()
            .map_err(|error| self.read_failed("scan", partition, error))
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), EngineError> {
        let committer = self.committer.clone();
        // fjall's commit writes and fsyncs its journal: blocking I/O, kept off the runtime.
        tokio::task::spawn_blocking(move || committer.commit_blocking(batch))
            .await
            .map_err(|error| failed("commit", format!("the commit thread died: {error}")))?
    }

    fn blocking(&self) -> Option<&dyn BlockingCommit> {
        Some(self)
    }
}

impl BlockingCommit for FjallEngine {
    fn commit_blocking(&self, batch: WriteBatch) -> Result<(), EngineError> {
        self.committer.commit_blocking(batch)
    }
}

/// What a commit needs of the engine.
struct Committer {
    db: Database,
    keyspaces: Arc<[Keyspace]>,
    engine_keyspace: Keyspace,
    /// Commits durable in this store since it was created; its lock orders commits.
    commits_total: Mutex<u64>,
    /// Commits by this handle.
    n_commits: AtomicU64,
    dir: PathBuf,
}

impl Committer {
    /// One fjall batch of `batch`'s writes and the commit count, fsynced.
    fn commit_blocking(&self, batch: WriteBatch) -> Result<(), EngineError> {
        let mut fjall_batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for op in batch.into_ops() {
            match op {
                WriteOp::Put {
                    partition,
                    key,
                    value,
                } => fjall_batch.insert(&self.keyspaces[partition.index()], key, value),
                WriteOp::Delete { partition, key } => {
                    fjall_batch.remove(&self.keyspaces[partition.index()], key)
                }
            }
        }
        let mut total = self
            .commits_total
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = *total + 1;
        fjall_batch.insert(
            &self.engine_keyspace,
            COMMITS_KEY,
            next.to_be_bytes().to_vec(),
        );
        fjall_batch
            .commit()
            .map_err(|error| failed(&format!("commit to {}", self.dir.display()), error))?;
        *total = next;
        drop(total);
        self.n_commits.fetch_add(1, Ordering::Relaxed);
        if next.is_multiple_of(WATERMARK_EVERY_COMMITS)
            && let Err(error) = marker::write_watermark(&self.dir, next)
        {
            // The watermark only guards against damage; a failure to write it loses
            // no data, and the disk's trouble will show in the next commit.
            tracing::warn!(dir = %self.dir.display(), "cannot write the commit watermark: {error}");
        }
        Ok(())
    }
}

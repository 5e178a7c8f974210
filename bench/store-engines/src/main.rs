//! fjall against redb on imlab's inbox workload, side by side in one process (this machine's
//! fsync speed varies from minute to minute, so separate runs do not compare).
//!
//! Workload: 200,000 messages of 200 bytes for 1,000 users, each written to its recipient's
//! inbox under the key (user u32, seq u64) big-endian, in batches of 100 with one fsync per
//! batch; then tail reads of the newest 20 entries of random users' inboxes. The engines take
//! turns every 10,000 messages (writes) and every 1,000 reads.
//!
//! Run: `cargo run --release` in bench/store-engines (this crate is outside the workspace).
//! `STORE_BENCH_DIR=/some/disk` puts the data elsewhere than the system temp directory.

use std::path::Path;
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use redb::{ReadableDatabase, TableDefinition};

const N_MESSAGES: u64 = 200_000;
const N_USERS: u32 = 1_000;
const BODY_BYTES: usize = 200;
const BATCH_LEN: u64 = 100;
const ROUND_MESSAGES: u64 = 10_000;
const N_READS: usize = 20_000;
const READ_ROUND: usize = 1_000;
const TAIL_LEN: u64 = 20;

const INBOX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("inbox");

/// One engine under test.
trait Inbox {
    fn name(&self) -> &'static str;
    /// Writes `entries` atomically and durably (one fsync).
    fn commit(&mut self, entries: &[([u8; 12], Vec<u8>)]);
    /// The values of keys `from..to`, in order.
    fn range(&self, from: [u8; 12], to: [u8; 12]) -> usize;
}

struct Fjall {
    db: Database,
    inbox: Keyspace,
}

impl Inbox for Fjall {
    fn name(&self) -> &'static str {
        "fjall 3.1"
    }

    fn commit(&mut self, entries: &[([u8; 12], Vec<u8>)]) {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for (key, value) in entries {
            batch.insert(&self.inbox, key.to_vec(), value.clone());
        }
        batch.commit().expect("fjall commit");
    }

    fn range(&self, from: [u8; 12], to: [u8; 12]) -> usize {
        self.inbox
            .range(from..to)
            .map(|guard| guard.into_inner().expect("fjall read").1.len())
            .sum()
    }
}

struct Redb {
    db: redb::Database,
}

impl Inbox for Redb {
    fn name(&self) -> &'static str {
        "redb 4.6"
    }

    fn commit(&mut self, entries: &[([u8; 12], Vec<u8>)]) {
        // redb's default durability fsyncs on commit.
        let txn = self.db.begin_write().expect("redb begin");
        {
            let mut table = txn.open_table(INBOX).expect("redb table");
            for (key, value) in entries {
                table
                    .insert(key.as_slice(), value.as_slice())
                    .expect("redb insert");
            }
        }
        txn.commit().expect("redb commit");
    }

    fn range(&self, from: [u8; 12], to: [u8; 12]) -> usize {
        let txn = self.db.begin_read().expect("redb read");
        let table = txn.open_table(INBOX).expect("redb table");
        table
            .range(from.as_slice()..to.as_slice())
            .expect("redb range")
            .map(|entry| entry.expect("redb read").1.value().len())
            .sum()
    }
}

fn key(user: u32, seq: u64) -> [u8; 12] {
    let mut key = [0; 12];
    key[..4].copy_from_slice(&user.to_be_bytes());
    key[4..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// A small deterministic generator (xorshift), so both engines see the same users.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Default)]
struct Totals {
    write_time: Duration,
    n_commits: u64,
    read_times_us: Vec<f64>,
    bytes_read: usize,
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                dir_bytes(&entry.path())
            } else {
                // Allocated blocks, not the length: fjall preallocates its journal.
                std::os::unix::fs::MetadataExt::blocks(&meta) * 512
            }
        })
        .sum()
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

fn main() {
    let base = std::env::var_os("STORE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let fjall_dir = tempfile::tempdir_in(&base).expect("temp dir");
    let redb_dir = tempfile::tempdir_in(&base).expect("temp dir");
    let db = Database::builder(fjall_dir.path())
        .open()
        .expect("fjall open");
    let inbox = db
        .keyspace("inbox", KeyspaceCreateOptions::default)
        .expect("fjall keyspace");
    let redb_path = redb_dir.path().join("inbox.redb");
    let mut engines: Vec<Box<dyn Inbox>> = vec![
        Box::new(Fjall { db, inbox }),
        Box::new(Redb {
            db: redb::Database::create(&redb_path).expect("redb create"),
        }),
    ];
    let mut totals: Vec<Totals> = engines.iter().map(|_| Totals::default()).collect();
    println!(
        "{N_MESSAGES} messages of {BODY_BYTES} B for {N_USERS} users, batches of {BATCH_LEN} \
         with one fsync each, data in {}",
        base.display()
    );

    // Writes, in rounds; the engine that goes first alternates.
    let body = vec![b'x'; BODY_BYTES];
    let mut seqs = vec![0_u64; N_USERS as usize];
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let mut written = 0;
    let mut round = 0;
    while written < N_MESSAGES {
        let n_round = ROUND_MESSAGES.min(N_MESSAGES - written);
        let batches: Vec<Vec<([u8; 12], Vec<u8>)>> = (0..n_round / BATCH_LEN)
            .map(|_| {
                (0..BATCH_LEN)
                    .map(|_| {
                        let user = (rng.next() % u64::from(N_USERS)) as u32;
                        seqs[user as usize] += 1;
                        (key(user, seqs[user as usize]), body.clone())
                    })
                    .collect()
            })
            .collect();
        for turn in 0..engines.len() {
            let index = (turn + round) % engines.len();
            let start = Instant::now();
            for batch in &batches {
                engines[index].commit(batch);
            }
            totals[index].write_time += start.elapsed();
            totals[index].n_commits += batches.len() as u64;
        }
        written += n_round;
        round += 1;
    }

    // Tail reads, in rounds.
    let mut done = 0;
    while done < N_READS {
        let users: Vec<u32> = (0..READ_ROUND)
            .map(|_| (rng.next() % u64::from(N_USERS)) as u32)
            .collect();
        for turn in 0..engines.len() {
            let index = (turn + done / READ_ROUND) % engines.len();
            for &user in &users {
                let max_seq = seqs[user as usize];
                let from = key(user, max_seq.saturating_sub(TAIL_LEN) + 1);
                let to = key(user, max_seq + 1);
                let start = Instant::now();
                let n_bytes = engines[index].range(from, to);
                totals[index]
                    .read_times_us
                    .push(start.elapsed().as_secs_f64() * 1e6);
                totals[index].bytes_read += n_bytes;
            }
        }
        done += READ_ROUND;
    }

    println!();
    println!(
        "Tail reads: the newest {TAIL_LEN} entries of a random user's inbox, {N_READS} reads."
    );
    println!(
        "| engine    |   msg/s | commits/s | ms/commit | read mean us | read p50 us | read p99 us | disk MB |"
    );
    println!(
        "|-----------|---------|-----------|-----------|--------------|-------------|-------------|---------|"
    );
    for (index, engine) in engines.iter().enumerate() {
        let total = &mut totals[index];
        let seconds = total.write_time.as_secs_f64();
        total.read_times_us.sort_by(f64::total_cmp);
        let reads = &total.read_times_us;
        let mean = reads.iter().sum::<f64>() / reads.len() as f64;
        assert_eq!(
            total.bytes_read,
            reads.len() * TAIL_LEN as usize * BODY_BYTES,
            "{} read back less than it wrote",
            engine.name()
        );
        let dir = if index == 0 {
            fjall_dir.path()
        } else {
            redb_dir.path()
        };
        println!(
            "| {:<9} | {:>7.0} | {:>9.0} | {:>9.2} | {:>12.1} | {:>11.1} | {:>11.1} | {:>7.1} |",
            engine.name(),
            N_MESSAGES as f64 / seconds,
            total.n_commits as f64 / seconds,
            seconds * 1e3 / total.n_commits as f64,
            mean,
            percentile(reads, 0.5),
            percentile(reads, 0.99),
            dir_bytes(dir) as f64 / 1e6,
        );
    }
}

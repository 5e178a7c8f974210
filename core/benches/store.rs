//! The durable store on fjall: append throughput with 1, 64 and 512 concurrent appenders
//! (each append answered only once its group commit is fsynced), tail reads of an inbox, and
//! where an append's microseconds go: the engine's cost per record of each kind a message
//! writes (a 1:1 message is one message record, two inbox entries and one dedupe record; each
//! DeviceAck adds a cursor record), the cost of an fsync, and the dedupe lookup of a new
//! client message id, which every append makes under the store's lock.
//!
//! Run: `cargo bench -p imlab-core --bench store`. fsync speed varies from minute to minute
//! on shared machines: compare runs made side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use imlab_core::proto::Target;
use imlab_core::store::{
    AppendRequest, DurableStore, DurableStoreLimits, Engine, FjallEngine, MemoryStore, Partition,
    Store, StoredMessage, WriteBatch, durable_keys as keys, durable_record as record,
};

const N_USERS: usize = 1_000;
const BODY_BYTES: usize = 200;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn request(i: u64, body: &Bytes) -> AppendRequest {
    let from = i as usize % N_USERS;
    AppendRequest {
        from_user: format!("user{from}"),
        from_device: "phone".into(),
        client_msg_id: format!("c{i}"),
        to: Target::Peer(format!("user{}", (from + 1) % N_USERS)),
        body: body.clone(),
        server_time_ms: 1_700_000_000_000 + i,
    }
}

async fn open(dir: &std::path::Path) -> Arc<DurableStore<FjallEngine>> {
    let engine = FjallEngine::open(dir).expect("open fjall");
    Arc::new(
        DurableStore::open(Arc::new(engine), DurableStoreLimits::default(), 1)
            .await
            .expect("open store"),
    )
}

/// `n_appends` appends by `n_appenders` concurrent tasks; returns the wall time.
async fn append_all(
    store: &Arc<DurableStore<FjallEngine>>,
    first_id: u64,
    n_appends: u64,
    n_appenders: u64,
) -> Duration {
    let body = Bytes::from(vec![b'x'; BODY_BYTES]);
    let start = Instant::now();
    let tasks: Vec<_> = (0..n_appenders)
        .map(|appender| {
            let store = store.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let mut i = appender;
                while i < n_appends {
                    store
                        .append(request(first_id + i, &body))
                        .await
                        .expect("append");
                    i += n_appenders;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("appender");
    }
    start.elapsed()
}

fn bench_appends(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("durable_fjall_append_200B");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for n_appenders in [1_u64, 64, 512] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = runtime.block_on(open(dir.path()));
        let mut next_id = 0;
        group.bench_with_input(
            BenchmarkId::new("appenders", n_appenders),
            &n_appenders,
            |b, &n_appenders| {
                b.iter_custom(|iters| {
                    let elapsed = runtime.block_on(append_all(&store, next_id, iters, n_appenders));
                    next_id += iters;
                    elapsed
                });
            },
        );
        eprintln!(
            "{n_appenders} appenders: {} appends in {} commits ({:.1} appends per fsync)",
            next_id,
            store.engine().commits(),
            next_id as f64 / store.engine().commits().max(1) as f64
        );
    }
    group.finish();
}

fn bench_tail_reads(c: &mut Criterion) {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = runtime.block_on(open(dir.path()));
    // 200,000 messages: 400 per inbox (each message is in two).
    runtime.block_on(append_all(&store, 0, 200_000, 512));
    store.engine().flush_memtables().expect("flush");
    let mut group = c.benchmark_group("durable_fjall_sync");
    group.throughput(Throughput::Elements(1));
    for page_len in [1_u64, 50] {
        group.bench_with_input(
            BenchmarkId::new("tail_page", page_len),
            &page_len,
            |b, &page_len| {
                let mut user = 0;
                b.iter(|| {
                    user = (user + 7) % N_USERS;
                    let name = format!("user{user}");
                    runtime.block_on(async {
                        let max_seq = store.max_seq(&name).await.expect("max_seq");
                        let page = store
                            .sync(&name, max_seq - page_len, page_len as usize)
                            .await
                            .expect("sync");
                        assert_eq!(page.entries.len() as u64, page_len);
                    })
                });
            },
        );
    }
    group.finish();
}

/// One record of each kind an append or an ack writes, keyed and encoded by the store's own
/// layout (`store::durable::keys`, `store::durable::record`) for users `user0..user999`.
fn record(kind: &str, i: u64) -> (Partition, Vec<u8>, Vec<u8>) {
    let user = format!("user{}", i as usize % N_USERS);
    match kind {
        "message" => {
            let message = StoredMessage {
                msg_id: i,
                from_user: user,
                from_device: "phone".into(),
                client_msg_id: format!("c{i}"),
                to: Target::Peer(format!("user{}", (i as usize + 1) % N_USERS)),
                body: Bytes::from(vec![b'm'; BODY_BYTES]),
                server_time_ms: 1_700_000_000_000 + i,
            };
            (
                Partition::Messages,
                keys::message_key(i),
                record::encode_message(&message),
            )
        }
        "inbox" => (
            Partition::Inbox,
            keys::inbox_key(&user, i / N_USERS as u64 + 1),
            record::encode_u64(i),
        ),
        "dedupe" => (
            Partition::Dedupe,
            keys::dedupe_key(&user, &format!("c{i}")),
            record::encode_dedupe(i, i / N_USERS as u64 + 1),
        ),
        "cursor" => (
            Partition::Cursors,
            keys::cursor_key(&user, "phone"),
            record::encode_u64(i),
        ),
        _ => unreachable!("record kinds are listed in bench_records"),
    }
}

/// Commits `iters` records of `kind` in batches of `batch_len` (one fsync per batch).
async fn commit_records(
    engine: &FjallEngine,
    kind: &str,
    first: u64,
    iters: u64,
    batch_len: u64,
) -> Duration {
    let start = Instant::now();
    let mut i = 0;
    while i < iters {
        let mut batch = WriteBatch::new();
        for j in i..(i + batch_len).min(iters) {
            let (partition, key, value) = record(kind, first + j);
            batch.put(partition, key, value);
        }
        engine.commit(batch).await.expect("commit");
        i += batch_len;
    }
    start.elapsed()
}

fn bench_records(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("durable_fjall_record");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    // 256 records a commit: the fsync's share is small, the rest is the engine's per-record
    // work (journal, memtable insert). One record a commit: the fsync.
    let cases = [
        ("put_in_batches_of_256/message", "message", 256),
        ("put_in_batches_of_256/inbox", "inbox", 256),
        ("put_in_batches_of_256/dedupe", "dedupe", 256),
        ("put_in_batches_of_256/cursor", "cursor", 256),
        ("commit_of_one_cursor_with_its_fsync", "cursor", 1),
    ];
    for (id, kind, batch_len) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = FjallEngine::open(dir.path()).expect("open fjall");
        let mut next = 0;
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let elapsed =
                    runtime.block_on(commit_records(&engine, kind, next, iters, batch_len));
                next += iters;
                elapsed
            });
        });
    }
    // A new client message id's dedupe lookup, with 200,000 dedupe records in the memtable.
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = FjallEngine::open(dir.path()).expect("open fjall");
    runtime.block_on(commit_records(&engine, "dedupe", 0, 200_000, 4_096));
    let mut miss = 1_000_000;
    group.bench_function("dedupe_lookup_of_a_new_id", |b| {
        b.iter(|| {
            miss += 1;
            let (partition, key, _) = record("dedupe", miss);
            assert!(engine.get(partition, &key).expect("get").is_none());
        });
    });
    group.finish();
}

/// The in-memory store's append (what `imlab serve` without `--data-dir` does per message):
/// 1,000 users, 1:1 to the next user, each sender's dedupe window full (4,096 ids).
fn bench_memory_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let store = MemoryStore::new();
    let body = Bytes::from(vec![b'x'; BODY_BYTES]);
    let warm = (N_USERS * 4_096) as u64;
    runtime.block_on(async {
        for i in 0..warm {
            store.append(request(i, &body)).await.expect("append");
        }
    });
    let mut next = warm;
    let mut group = c.benchmark_group("memory_append_200B");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1000_users_1to1", |b| {
        b.iter(|| {
            next += 1;
            runtime
                .block_on(store.append(request(next, &body)))
                .expect("append")
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_appends,
    bench_tail_reads,
    bench_records,
    bench_memory_append
);
criterion_main!(benches);

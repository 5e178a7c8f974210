//! The durable store through its real interfaces: MemoryStore's semantics on both engines,
//! group commit, crashes (a store dropped mid-commit), restarts of the fjall directory, damaged
//! files, and the bound on writes waiting for the disk.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use imlab_core::proto::Target;
use imlab_core::store::{
    AppendOutcome, AppendRequest, CURSOR_COMMIT_DELAY, DurableStore, DurableStoreLimits, Engine,
    FjallEngine, MemEngine, MemoryStore, MemoryStoreLimits, Partition, Store, StoreError,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const EPOCH: u64 = 1_700_000_000_000;

fn send(from: &str, id: &str, to: Target) -> AppendRequest {
    AppendRequest {
        from_user: from.into(),
        from_device: "d1".into(),
        client_msg_id: id.into(),
        to,
        body: Bytes::from(format!("{from}:{id}")),
        server_time_ms: 7,
    }
}

fn peer(user: &str) -> Target {
    Target::Peer(user.into())
}

async fn mem_store(limits: DurableStoreLimits) -> DurableStore<MemEngine> {
    DurableStore::open(Arc::new(MemEngine::new()), limits, EPOCH)
        .await
        .unwrap()
}

async fn fjall_store(dir: &Path, limits: DurableStoreLimits) -> DurableStore<FjallEngine> {
    let engine = FjallEngine::open(dir).unwrap();
    DurableStore::open(Arc::new(engine), limits, EPOCH)
        .await
        .unwrap()
}

/// Runs one semantic check against a store on each engine.
async fn on_both_engines<F, Fut>(limits: DurableStoreLimits, check: F)
where
    F: Fn(Box<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    check(Box::new(mem_store(limits).await)).await;
    let dir = tempfile::tempdir().unwrap();
    check(Box::new(fjall_store(dir.path(), limits).await)).await;
}

// The unit tests of memory.rs, on the durable store.

#[tokio::test]
async fn appends_write_gapless_inboxes_and_dedupe() {
    on_both_engines(DurableStoreLimits::default(), |store| async move {
        let first = store.append(send("a", "m1", peer("b"))).await.unwrap();
        assert_eq!(first.deliveries, vec![("a".into(), 1), ("b".into(), 1)]);
        let second = store.append(send("b", "m1", peer("a"))).await.unwrap();
        assert_eq!(second.deliveries, vec![("a".into(), 2), ("b".into(), 2)]);
        let retry = store.append(send("a", "m1", peer("b"))).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!(
            (retry.sender_seq, retry.message.msg_id),
            (1, first.message.msg_id)
        );
        assert_eq!(
            retry.message, first.message,
            "the original message, read back"
        );
        assert!(retry.deliveries.is_empty());

        let page = store.sync("b", 0, 1).await.unwrap();
        assert_eq!(
            (page.entries.len(), page.max_seq, page.has_more()),
            (1, 2, true)
        );
        assert_eq!(page.entries[0].1, first.message);
        let page = store.sync("b", 1, 10).await.unwrap();
        assert_eq!(page.entries[0].0, 2);
        assert!(!page.has_more());
        assert_eq!(store.sync("b", 9, 10).await.unwrap().entries.len(), 0);
        assert_eq!(store.sync("nobody", 0, 10).await.unwrap().max_seq, 0);
        assert_eq!(store.max_seq("a").await.unwrap(), 2);
        assert_eq!(store.epoch(), EPOCH);
    })
    .await;
}

#[tokio::test]
async fn limits_refuse_without_touching_stored_data() {
    let limits = DurableStoreLimits {
        messages_max: 1,
        dedupe_window_len: 1,
        group_members_max: 2,
        groups_max: 1,
        ..DurableStoreLimits::default()
    };
    on_both_engines(limits, |store| async move {
        store.append(send("a", "m1", peer("b"))).await.unwrap();
        let full = store.append(send("a", "m2", peer("b"))).await;
        assert!(matches!(full, Err(StoreError::Full(_))), "{full:?}");
        assert_eq!(store.max_seq("b").await.unwrap(), 1);
        assert!(matches!(
            store
                .create_group("g", "a", &["b".into(), "c".into()])
                .await,
            Err(StoreError::Full(_))
        ));
        store.create_group("g", "a", &["b".into()]).await.unwrap();
        assert!(matches!(
            store.create_group("h", "a", &[]).await,
            Err(StoreError::Full(_))
        ));
        assert!(matches!(
            store.join_group("g", "c").await,
            Err(StoreError::Full(_))
        ));
        let long_id = "x".repeat(2_000);
        assert!(matches!(
            store.append(send(&long_id, "m3", peer("b"))).await,
            Err(StoreError::Full(text)) if text.contains("id_bytes_max")
        ));
    })
    .await;
}

#[tokio::test]
async fn groups_and_cursors() {
    on_both_engines(DurableStoreLimits::default(), |store| async move {
        assert_eq!(
            store
                .create_group("g", "a", &["c".into(), "b".into()])
                .await
                .unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            store.create_group("g", "a", &[]).await,
            Err(StoreError::GroupExists("g".into()))
        );
        let outcome = store
            .append(send("b", "x", Target::Group("g".into())))
            .await
            .unwrap();
        assert_eq!(outcome.deliveries.len(), 3);
        assert_eq!(
            store
                .append(send("z", "y", Target::Group("g".into())))
                .await
                .unwrap_err(),
            StoreError::NotGroupMember {
                group: "g".into(),
                user: "z".into()
            }
        );
        assert_eq!(
            store
                .append(send("a", "y", Target::Group("nope".into())))
                .await
                .unwrap_err(),
            StoreError::UnknownGroup("nope".into())
        );
        assert_eq!(store.leave_group("g", "c").await.unwrap(), vec!["a", "b"]);
        assert_eq!(
            store.leave_group("g", "c").await.unwrap_err(),
            StoreError::NotGroupMember {
                group: "g".into(),
                user: "c".into()
            }
        );
        assert_eq!(
            store.join_group("g", "d").await.unwrap(),
            vec!["a", "b", "d"]
        );
        assert_eq!(
            store.ack_cursor("a", "d1", 5).await.unwrap(),
            1,
            "clamped to inbox"
        );
        assert_eq!(
            store.ack_cursor("a", "d1", 0).await.unwrap(),
            1,
            "never backwards"
        );
        assert_eq!(store.cursor("a", "d1").await.unwrap(), 1);
        assert_eq!(store.cursor("a", "d2").await.unwrap(), 0);
    })
    .await;
}

/// One step of the differential test.
#[derive(Debug, Clone)]
enum Op {
    Append(AppendRequest),
    Sync(String, u64, usize),
    Ack(String, String, u64),
    Cursor(String, String),
    Create(String, String, Vec<String>),
    Join(String, String),
    Leave(String, String),
}

/// Everything an operation returned, in a comparable form.
fn run_op_result(outcome: Result<AppendOutcome, StoreError>) -> String {
    match outcome {
        Ok(outcome) => format!(
            "append {:?} seq {} deliveries {:?} duplicate {}",
            outcome.message, outcome.sender_seq, outcome.deliveries, outcome.duplicate
        ),
        Err(error) => format!("append error {error:?}"),
    }
}

async fn apply(store: &dyn Store, op: &Op) -> String {
    match op.clone() {
        Op::Append(request) => run_op_result(store.append(request).await),
        Op::Sync(user, after, limit) => match store.sync(&user, after, limit).await {
            Ok(page) => format!("sync {:?} max {}", page.entries, page.max_seq),
            Err(error) => format!("sync error {error:?}"),
        },
        Op::Ack(user, device, seq) => format!("{:?}", store.ack_cursor(&user, &device, seq).await),
        Op::Cursor(user, device) => format!("{:?}", store.cursor(&user, &device).await),
        Op::Create(group, creator, members) => {
            format!("{:?}", store.create_group(&group, &creator, &members).await)
        }
        Op::Join(group, user) => format!("{:?}", store.join_group(&group, &user).await),
        Op::Leave(group, user) => format!("{:?}", store.leave_group(&group, &user).await),
    }
}

fn random_ops(seed: u64, n_ops: usize) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let users = ["al", "alice", "bob", "carol", "dave"];
    let groups = ["g1", "g2", "g3"];
    let pick = |rng: &mut ChaCha8Rng, names: &[&str]| -> String {
        names[rng.random_range(0..names.len())].to_string()
    };
    (0..n_ops)
        .map(|i| match rng.random_range(0..100) {
            0..45 => {
                let from = pick(&mut rng, &users);
                // Reuse a recent id now and then: a retry.
                let id = if i > 0 && rng.random_bool(0.2) {
                    format!("c{}", rng.random_range(i.saturating_sub(10)..i))
                } else {
                    format!("c{i}")
                };
                let to = if rng.random_bool(0.6) {
                    Target::Peer(pick(&mut rng, &users))
                } else {
                    Target::Group(pick(&mut rng, &groups))
                };
                Op::Append(send(&from, &id, to))
            }
            45..60 => Op::Sync(
                pick(&mut rng, &users),
                rng.random_range(0..20),
                rng.random_range(0..6),
            ),
            60..70 => Op::Ack(
                pick(&mut rng, &users),
                pick(&mut rng, &["d1", "d2"]),
                rng.random_range(0..30),
            ),
            70..75 => Op::Cursor(pick(&mut rng, &users), pick(&mut rng, &["d1", "d2"])),
            75..85 => {
                let members = (0..rng.random_range(0..4))
                    .map(|_| pick(&mut rng, &users))
                    .collect();
                Op::Create(pick(&mut rng, &groups), pick(&mut rng, &users), members)
            }
            85..93 => Op::Join(pick(&mut rng, &groups), pick(&mut rng, &users)),
            _ => Op::Leave(pick(&mut rng, &groups), pick(&mut rng, &users)),
        })
        .collect()
}

// The update fills the planted-bugs feature's test-only field, when it is compiled in.
#[allow(clippy::needless_update)]
fn differential_limits() -> MemoryStoreLimits {
    MemoryStoreLimits {
        messages_max: 150,
        // Larger than any user's sends: past the window, the durable store still dedupes
        // (from the engine) where the memory store stores again.
        dedupe_window_len: 1_000,
        group_members_max: 4,
        groups_max: 2,
        ..MemoryStoreLimits::default()
    }
}

/// The same random operations on MemoryStore and on DurableStore give the same answers,
/// across restarts of the durable store every `restart_every` operations.
async fn check_same_as_memory_store<E: Engine>(
    seed: u64,
    mut open: impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = DurableStore<E>>>>,
) {
    let ops = random_ops(seed, 400);
    let memory = MemoryStore::with_limits(differential_limits());
    let mut durable = Some(open().await);
    for (i, op) in ops.iter().enumerate() {
        if i % 97 == 96 {
            durable.take().unwrap().close().await;
            durable = Some(open().await);
        }
        let expected = apply(&memory, op).await;
        let got = apply(durable.as_ref().unwrap(), op).await;
        assert_eq!(got, expected, "seed {seed}, op {i}: {op:?}");
    }
    let durable = durable.unwrap();
    assert_eq!(durable.n_messages(), memory.n_messages());
    assert_eq!(durable.users().unwrap(), memory.users());
    for user in memory.users() {
        assert_eq!(durable.inbox(&user).unwrap(), memory.inbox(&user), "{user}");
    }
    durable.close().await;
}

#[tokio::test]
async fn mem_engine_answers_like_memory_store_across_restarts() {
    for seed in 0..4 {
        let engine = Arc::new(MemEngine::new());
        let limits = DurableStoreLimits::from(differential_limits());
        check_same_as_memory_store(seed, || {
            let engine = engine.clone();
            Box::pin(async move { DurableStore::open(engine, limits, EPOCH).await.unwrap() })
        })
        .await;
    }
}

/// The same with at most 3 users loaded: users let go and loaded again answer as if they had
/// stayed (seqs, cursors, dedupe, groups).
#[tokio::test]
async fn a_store_that_lets_users_go_answers_like_memory_store() {
    for seed in 0..4 {
        let engine = Arc::new(MemEngine::new());
        let limits = DurableStoreLimits {
            users_loaded_max: 3,
            ..DurableStoreLimits::from(differential_limits())
        };
        check_same_as_memory_store(seed, || {
            let engine = engine.clone();
            Box::pin(async move { DurableStore::open(engine, limits, EPOCH).await.unwrap() })
        })
        .await;
    }
}

#[tokio::test]
async fn fjall_engine_answers_like_memory_store_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let limits = DurableStoreLimits::from(differential_limits());
    check_same_as_memory_store(11, || {
        let path = path.clone();
        Box::pin(async move { fjall_store(&path, limits).await })
    })
    .await;
}

#[tokio::test]
async fn dedupe_outlives_the_memory_window() {
    let limits = DurableStoreLimits {
        dedupe_window_len: 2,
        ..DurableStoreLimits::default()
    };
    let store = mem_store(limits).await;
    let first = store.append(send("a", "m0", peer("b"))).await.unwrap();
    for i in 1..10 {
        store
            .append(send("a", &format!("m{i}"), peer("b")))
            .await
            .unwrap();
    }
    let retry = store.append(send("a", "m0", peer("b"))).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.sender_seq, &retry.message),
        (1, &first.message),
        "found in the engine, not the window"
    );
}

/// A [`MemEngine`] whose next dedupe lookup, once armed, reads its answer, says so and stops
/// until released: the store as it is while an append waits on a read of the disk.
#[derive(Default)]
struct GatedEngine {
    inner: MemEngine,
    gate: std::sync::Mutex<Option<Gate>>,
    /// Dedupe lookups made.
    dedupe_gets: std::sync::atomic::AtomicUsize,
    /// Scans of the dedupe partition made.
    dedupe_scans: std::sync::atomic::AtomicUsize,
}

struct Gate {
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

impl GatedEngine {
    /// Arms the gate: the receiver hears when a lookup stopped at it, the sender releases it.
    fn arm(&self) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
        let (entered, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release) = std::sync::mpsc::channel();
        *self.gate.lock().unwrap() = Some(Gate { entered, release });
        (entered_rx, release_tx)
    }
}

impl Engine for GatedEngine {
    fn name(&self) -> &'static str {
        "gated"
    }

    fn get(
        &self,
        partition: Partition,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, imlab_core::store::EngineError> {
        // The answer is read before the gate, so what happens while it waits is news to it.
        let answer = self.inner.get(partition, key);
        let gate = match partition {
            Partition::Dedupe => {
                self.dedupe_gets
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.gate.lock().unwrap().take()
            }
            _ => None,
        };
        if let Some(gate) = gate {
            gate.entered.send(()).unwrap();
            // A test that fails while the lookup waits drops its sender and so releases it.
            let _ = gate.release.recv_timeout(Duration::from_secs(60));
        }
        answer
    }

    fn last_with_prefix(
        &self,
        partition: Partition,
        prefix: &[u8],
    ) -> Result<Option<imlab_core::store::KeyValue>, imlab_core::store::EngineError> {
        self.inner.last_with_prefix(partition, prefix)
    }

    fn scan(
        &self,
        partition: Partition,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<imlab_core::store::KeyValue>, imlab_core::store::EngineError> {
        if partition == Partition::Dedupe {
            self.dedupe_scans
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner.scan(partition, start, end, limit)
    }

    fn commit(
        &self,
        batch: imlab_core::store::WriteBatch,
    ) -> impl Future<Output = Result<(), imlab_core::store::EngineError>> + Send {
        self.inner.commit(batch)
    }
}

/// A durable store on a [`GatedEngine`], in a runtime of two workers that other threads'
/// appends run in too, so one append can stop inside the store while others go on. It has
/// no dedupe filter, so every id not in its sender's window is read from the engine, as
/// when the filter is not filled yet or reached its bound (or says "maybe", 1 in 200).
struct GatedStore {
    runtime: tokio::runtime::Runtime,
    engine: Arc<GatedEngine>,
    store: Arc<DurableStore<GatedEngine>>,
}

impl GatedStore {
    fn open(limits: DurableStoreLimits) -> GatedStore {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let engine = Arc::new(GatedEngine::default());
        let limits = DurableStoreLimits {
            dedupe_filter_bytes_max: 0,
            ..limits
        };
        let store = runtime
            .block_on(DurableStore::open(engine.clone(), limits, EPOCH))
            .unwrap();
        GatedStore {
            runtime,
            engine,
            store: Arc::new(store),
        }
    }

    fn append(&self, request: AppendRequest) -> AppendOutcome {
        self.runtime.block_on(self.store.append(request)).unwrap()
    }

    /// Starts `request` on a thread of its own, and returns once its dedupe lookup has stopped
    /// at the gate, with the thread and the gate's release.
    fn append_stopped_at_the_lookup(
        &self,
        request: AppendRequest,
    ) -> (
        std::thread::JoinHandle<AppendOutcome>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (entered, release) = self.engine.arm();
        let (handle, store) = (self.runtime.handle().clone(), self.store.clone());
        let thread = std::thread::spawn(move || handle.block_on(store.append(request)).unwrap());
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("the append looks its new id up in the engine");
        (thread, release)
    }
}

#[test]
fn a_dedupe_lookup_in_the_engine_leaves_the_store_to_other_writes() {
    let gated = GatedStore::open(DurableStoreLimits::default());
    let (stopped, release) = gated.append_stopped_at_the_lookup(send("a", "m1", peer("b")));
    let (done, other) = std::sync::mpsc::channel();
    let (handle, store) = (gated.runtime.handle().clone(), gated.store.clone());
    std::thread::spawn(move || {
        let _ = done.send(handle.block_on(store.append(send("c", "n1", peer("d")))));
    });
    let other = other.recv_timeout(Duration::from_secs(10));
    release.send(()).unwrap();
    let other = other
        .expect("another user's append waited for a dedupe lookup: it holds the store's mutex")
        .unwrap();
    let stopped = stopped.join().unwrap();
    assert!(!other.duplicate && !stopped.duplicate);
    assert_eq!((other.message.msg_id, stopped.message.msg_id), (1, 2));
}

#[test]
fn a_send_accepted_while_its_retry_reads_the_engine_is_the_retrys_original() {
    let gated = GatedStore::open(DurableStoreLimits::default());
    let (retry, release) = gated.append_stopped_at_the_lookup(send("a", "m1", peer("b")));
    let original = gated.append(send("a", "m1", peer("b")));
    release.send(()).unwrap();
    let retry = retry.join().unwrap();
    assert!(!original.duplicate);
    assert!(
        retry.duplicate,
        "stored twice: the engine was asked before the original was accepted"
    );
    assert_eq!(retry.message, original.message);
    assert_eq!(gated.runtime.block_on(gated.store.max_seq("b")).unwrap(), 1);
}

#[test]
fn a_send_evicted_while_its_retry_reads_the_engine_is_looked_up_again() {
    let gated = GatedStore::open(DurableStoreLimits {
        dedupe_window_len: 1,
        ..DurableStoreLimits::default()
    });
    let (retry, release) = gated.append_stopped_at_the_lookup(send("a", "m1", peer("b")));
    let original = gated.append(send("a", "m1", peer("b")));
    // Each is durable when its append returns, so the window of one forgets m1.
    gated.append(send("a", "m2", peer("b")));
    gated.append(send("a", "m3", peer("b")));
    release.send(()).unwrap();
    let retry = retry.join().unwrap();
    assert!(
        retry.duplicate,
        "stored twice: the window forgot the original while the engine was asked"
    );
    assert_eq!(retry.message, original.message);
    assert_eq!(gated.runtime.block_on(gated.store.max_seq("b")).unwrap(), 3);
}

/// As above, with the whole sender let go (past `users_loaded_max`) and loaded again while the
/// retry reads the engine: its new window's eviction count starts again from 0, the same as
/// when the retry asked, so only the count of users let go tells the answer is stale.
#[test]
fn a_sender_let_go_while_its_retry_reads_the_engine_is_looked_up_again() {
    let gated = GatedStore::open(DurableStoreLimits {
        users_loaded_max: 2,
        ..DurableStoreLimits::default()
    });
    let (retry, release) = gated.append_stopped_at_the_lookup(send("a", "m1", peer("b")));
    let original = gated.append(send("a", "m1", peer("b")));
    // a and b are loaded and have nothing on the way: this append lets a (loaded first) go,
    // enough to be under the bound, before it loads c and d.
    gated.append(send("c", "n1", peer("d")));
    assert!(!gated.store.is_loaded("a"), "the sender was let go");
    assert_eq!(gated.store.loaded_users(), 3, "b, c and d");
    release.send(()).unwrap();
    let retry = retry.join().unwrap();
    assert!(
        retry.duplicate,
        "stored twice: the sender was let go while the engine was asked"
    );
    assert_eq!(retry.message, original.message);
    assert_eq!(gated.runtime.block_on(gated.store.max_seq("b")).unwrap(), 1);
}

/// The dedupe filter: a new id is not read from the engine once the filter is filled (at open,
/// from what the engine holds), an old one is, and a retry of a send older than the window is
/// a duplicate across a restart; without the filter every new id is read (so the count is
/// real).
#[tokio::test]
async fn the_dedupe_filter_spares_new_ids_the_engine_and_keeps_old_ones_duplicates() {
    let limits = DurableStoreLimits {
        dedupe_window_len: 2,
        ..DurableStoreLimits::default()
    };
    let gets = |engine: &GatedEngine| {
        engine
            .dedupe_gets
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let engine = Arc::new(GatedEngine::default());
    let unfiltered = DurableStoreLimits {
        dedupe_filter_bytes_max: 0,
        ..limits
    };
    let store = DurableStore::open(engine.clone(), unfiltered, EPOCH)
        .await
        .unwrap();
    assert!(!store.dedupe_filter_active());
    for i in 0..50 {
        store
            .append(send("a", &format!("m{i}"), peer("b")))
            .await
            .unwrap();
    }
    assert_eq!(gets(&engine), 50, "without a filter each new id is read");
    store.close().await;

    // Reopened with a filter over the same engine: filled at open from its 50 keys.
    let store = DurableStore::open(engine.clone(), limits, EPOCH)
        .await
        .unwrap();
    assert!(store.dedupe_filter_active());
    for i in 50..100 {
        let sent = store
            .append(send("a", &format!("m{i}"), peer("b")))
            .await
            .unwrap();
        assert!(!sent.duplicate);
    }
    let read = gets(&engine) - 50;
    assert!(read <= 3, "{read} of 50 new ids were read from the engine");
    for old in ["m0", "m49", "m60"] {
        let retry = store.append(send("a", old, peer("b"))).await.unwrap();
        assert!(retry.duplicate, "{old} stored again");
    }
    assert!(
        gets(&engine) - 50 - read >= 3,
        "old ids are read from the engine"
    );
    assert_eq!(store.max_seq("b").await.unwrap(), 100);
}

/// A store with more dedupe records than the filter's bound holds: the scan at open stops at
/// the bound instead of reading the rest, the filter answers "maybe", and a retry of the
/// oldest send is still a duplicate.
#[tokio::test]
async fn a_store_past_the_filters_bound_stops_its_scan_and_reads_the_engine() {
    let engine = Arc::new(GatedEngine::default());
    let limits = DurableStoreLimits {
        dedupe_window_len: 2,
        dedupe_filter_bytes_max: 0,
        ..DurableStoreLimits::default()
    };
    let store = DurableStore::open(engine.clone(), limits, EPOCH)
        .await
        .unwrap();
    let first = store.append(send("a", "m0", peer("b"))).await.unwrap();
    store.close().await;
    // 20,000 more dedupe records, as a long-lived store holds: the first layer (24 KiB)
    // takes 16,384 keys, the next (48 KiB) would pass a 24 KiB bound.
    let mut batch = imlab_core::store::WriteBatch::new();
    for i in 0..20_000u32 {
        let mut key = vec![0, 1, b'z'];
        key.extend_from_slice(format!("old-{i:05}").as_bytes());
        batch.put(Partition::Dedupe, key, vec![0; 16]);
    }
    engine.commit(batch).await.unwrap();
    let scans = |engine: &GatedEngine| {
        engine
            .dedupe_scans
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = scans(&engine);
    let bounded = DurableStoreLimits {
        dedupe_filter_bytes_max: 24 << 10,
        ..limits
    };
    let store = DurableStore::open(engine.clone(), bounded, EPOCH)
        .await
        .unwrap();
    // The 16,385th key (a's m0, then 16,384 of z's) saturates the filter in page 17.
    let pages = scans(&engine) - before;
    assert_eq!(
        pages, 17,
        "pages of 1,024 keys read for a filter of 16,384 (20 hold them all)"
    );
    assert!(!store.dedupe_filter_active());
    let retry = store.append(send("a", "m0", peer("b"))).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message, first.message);
}

/// On disk the filter is filled by a thread while the store already takes writes: a retry
/// of a send from before the restart is a duplicate whether or not the filter has filled yet
/// (the first retries race the thread), and every one is once it has, over its three pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_retries_from_before_a_restart_stay_duplicates_while_the_filter_fills() {
    let dir = tempfile::tempdir().unwrap();
    let limits = DurableStoreLimits {
        dedupe_window_len: 2,
        ..DurableStoreLimits::default()
    };
    let store = Arc::new(fjall_store(dir.path(), limits).await);
    let n = 2_500; // the filter's scan reads 1,024 keys a page
    let sends = (0..n).map(|i| {
        let store = store.clone();
        async move { store.append(send("a", &format!("m{i}"), peer("b"))).await }
    });
    for sent in futures::future::join_all(sends).await {
        assert!(!sent.unwrap().duplicate);
    }
    Arc::try_unwrap(store).ok().unwrap().close().await;

    let store = fjall_store(dir.path(), limits).await;
    let mut retried = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let active = store.dedupe_filter_active();
        let old = format!("m{}", (retried * 397) % n);
        let retry = store.append(send("a", &old, peer("b"))).await.unwrap();
        assert!(
            retry.duplicate,
            "{old} stored again (filter active: {active})"
        );
        retried += 1;
        if active {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the filter was never filled"
        );
    }
    for i in 0..n {
        let old = format!("m{i}");
        assert!(
            store
                .append(send("a", &old, peer("b")))
                .await
                .unwrap()
                .duplicate,
            "{old}"
        );
    }
    let new = store.append(send("a", "new", peer("b"))).await.unwrap();
    assert!(!new.duplicate);
    assert_eq!(new.sender_seq, n as u64 + 1);
}

// Group commit.

#[tokio::test(start_paused = true)]
async fn concurrent_appends_share_commits_and_each_returns_only_once_durable() {
    let engine = Arc::new(MemEngine::with_commit_latency(Duration::from_millis(2)));
    let store = Arc::new(
        DurableStore::open(engine.clone(), DurableStoreLimits::default(), EPOCH)
            .await
            .unwrap(),
    );
    let commits_at_open = engine.commits();
    let n_appends: u64 = 200;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut tasks = Vec::new();
    for i in 0..n_appends {
        let store = store.clone();
        let engine = engine.clone();
        let delay = Duration::from_micros(rng.random_range(0..20_000));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let user = format!("u{}", i % 10);
            let outcome = store
                .append(send(&user, &format!("m{i}"), peer("hub")))
                .await
                .unwrap();
            // Another store over the same engine sees only what is durable.
            let fresh = DurableStore::open(engine, DurableStoreLimits::default(), 0)
                .await
                .unwrap();
            let page = fresh.sync(&user, outcome.sender_seq - 1, 1).await.unwrap();
            assert_eq!(
                page.entries.first().map(|(_, message)| message.msg_id),
                Some(outcome.message.msg_id),
                "append {i} returned before its message was durable"
            );
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let commits = engine.commits() - commits_at_open;
    assert!(
        (2..n_appends / 4).contains(&commits),
        "{commits} commits for {n_appends} appends"
    );
    assert_eq!(store.max_seq("hub").await.unwrap(), n_appends);
    assert_eq!(store.n_messages(), n_appends);
}

/// Past `users_loaded_max` a write lets go of the users with nothing on the way to the disk;
/// each comes back whole from the engine when next written: its seqs go on from the last, a
/// retry of a send from before is still that send, and every inbox is intact.
#[tokio::test]
async fn users_past_the_loaded_bound_are_let_go_and_come_back_whole() {
    let store = mem_store(DurableStoreLimits {
        users_loaded_max: 8,
        dedupe_window_len: 4,
        ..DurableStoreLimits::default()
    })
    .await;
    let user = |u: u32| format!("u{}", u % 40);
    let mut high_water = 0;
    for round in 0..3 {
        for u in 0..40 {
            store
                .append(send(&user(u), &format!("m{round}"), peer(&user(u + 1))))
                .await
                .unwrap();
            high_water = high_water.max(store.loaded_users());
        }
    }
    // At the bound a sweep leaves none (each append is durable when it returns), then an
    // append loads its sender and recipient: 8 + 2 at most.
    assert!(high_water <= 10, "{high_water} users loaded at once");
    for u in 0..40 {
        let page = store.sync(&user(u), 0, 100).await.unwrap();
        let seqs: Vec<u64> = page.entries.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=6).collect::<Vec<_>>(), "{}", user(u));
    }
    // u0's m0 was its first send (msg_id 1), long let go from memory and from its window.
    let retry = store.append(send("u0", "m0", peer("u1"))).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message.msg_id, 1);
    let next = store.append(send("u0", "m9", peer("u1"))).await.unwrap();
    assert_eq!((next.sender_seq, next.message.msg_id), (7, 121));
}

/// At the bound a write lets go of just enough users to be under it before it loads its own,
/// not of every user it could: one sweep of a million loaded users held the store's mutex
/// 1.25 s, every operation of every connection waiting behind it.
#[tokio::test]
async fn a_write_at_the_loaded_bound_lets_go_of_a_few_users_not_of_all() {
    let store = mem_store(DurableStoreLimits {
        users_loaded_max: 100,
        ..DurableStoreLimits::default()
    })
    .await;
    for u in 0..50 {
        store
            .append(send(&format!("s{u}"), "m", peer(&format!("r{u}"))))
            .await
            .unwrap();
    }
    assert_eq!(store.loaded_users(), 100, "each durable, none let go yet");
    for (n, (from, to)) in [("a", "b"), ("c", "d"), ("e", "f")].into_iter().enumerate() {
        store.append(send(from, "m", peer(to))).await.unwrap();
        // One let go (then two) to be at 99, and the append's two loaded.
        assert_eq!(store.loaded_users(), 101, "after append {n}");
        assert!(store.is_loaded(from) && store.is_loaded(to));
    }
    // The first loaded went first, and come back whole.
    assert!(!store.is_loaded("s0"));
    let next = store.append(send("s0", "m2", peer("r0"))).await.unwrap();
    assert_eq!(next.sender_seq, 2);
}

/// A user with a write on its way to the disk stays loaded through a sweep: appends of many
/// users interleave with commits that take 2 ms, the bound is 4, and every inbox comes out
/// gapless with each message once (a user let go with a seq allocated past its committed one
/// would be loaded again at the committed one, and its next seq handed out twice).
#[tokio::test(start_paused = true)]
async fn users_with_writes_on_their_way_stay_loaded() {
    let engine = Arc::new(MemEngine::with_commit_latency(Duration::from_millis(2)));
    let store = Arc::new(
        DurableStore::open(
            engine,
            DurableStoreLimits {
                users_loaded_max: 4,
                ..DurableStoreLimits::default()
            },
            EPOCH,
        )
        .await
        .unwrap(),
    );
    let n_appends = 300u32;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut tasks = Vec::new();
    for i in 0..n_appends {
        let store = store.clone();
        let delay = Duration::from_micros(rng.random_range(0..30_000));
        let (from, to) = (format!("u{}", i % 25), format!("u{}", (i * 7 + 3) % 25));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            store
                .append(send(&from, &format!("m{i}"), peer(&to)))
                .await
                .unwrap()
        }));
    }
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    for (i, task) in tasks.into_iter().enumerate() {
        // Simulated time: a commit that never comes fails here at once, not at the harness's
        // ten minutes.
        let outcome = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap_or_else(|_| panic!("append {i} never returned"))
            .unwrap();
        assert!(!outcome.duplicate, "append {i}");
        for (user, _) in &outcome.deliveries {
            *expected.entry(user.clone()).or_default() += 1;
        }
    }
    let mut msg_ids = std::collections::BTreeSet::new();
    for (user, n) in &expected {
        let page = store.sync(user, 0, 1_000).await.unwrap();
        let seqs: Vec<u64> = page.entries.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=*n).collect::<Vec<_>>(), "{user}");
        for (_, message) in &page.entries {
            msg_ids.insert(message.msg_id);
        }
    }
    assert_eq!(msg_ids.len(), n_appends as usize);
    assert_eq!(store.n_messages(), u64::from(n_appends));
}

/// A device's cursor acked and not yet durable keeps its user loaded through a sweep (the
/// engine would answer the older cursor); once the cursor is durable the user can go, and the
/// engine answers the newest.
#[tokio::test(start_paused = true)]
async fn a_user_whose_cursor_is_not_durable_stays_loaded() {
    let store = mem_store(DurableStoreLimits {
        users_loaded_max: 2,
        ..DurableStoreLimits::default()
    })
    .await;
    store.append(send("a", "m1", peer("x"))).await.unwrap();
    assert_eq!(store.ack_cursor("x", "phone", 1).await.unwrap(), 1);
    // Held for CURSOR_COMMIT_DELAY; these appends' rounds leave it held and sweep the others.
    for n in 0..6 {
        store
            .append(send(&format!("s{n}"), "m", peer(&format!("r{n}"))))
            .await
            .unwrap();
    }
    assert!(store.is_loaded("x"), "x's cursor is on its way");
    // x, kept, and what the last append loaded.
    assert!(store.loaded_users() <= 3, "{}", store.loaded_users());
    assert_eq!(store.cursor("x", "phone").await.unwrap(), 1);
    tokio::time::sleep(CURSOR_COMMIT_DELAY * 2).await;
    for n in 0..6 {
        store
            .append(send(&format!("t{n}"), "m", peer(&format!("q{n}"))))
            .await
            .unwrap();
    }
    assert!(
        !store.is_loaded("x"),
        "x was let go once its cursor was durable"
    );
    assert!(store.loaded_users() <= 3, "{}", store.loaded_users());
    assert_eq!(store.cursor("x", "phone").await.unwrap(), 1);
}

// Crashes.

#[tokio::test(start_paused = true)]
async fn cursors_are_coalesced_committed_without_a_wait_and_advisory_across_a_crash() {
    let engine = Arc::new(MemEngine::with_commit_latency(Duration::from_millis(10)));
    let limits = DurableStoreLimits::default();
    let store = DurableStore::open(engine.clone(), limits, EPOCH)
        .await
        .unwrap();
    for i in 0..5 {
        store
            .append(send("a", &format!("m{i}"), peer("b")))
            .await
            .unwrap();
    }
    let commits = engine.commits();
    let records = engine.records_written();
    // An ack that moves nothing (a login's ack of what the device had) writes nothing.
    assert_eq!(store.ack_cursor("b", "phone", 0).await.unwrap(), 0);
    // (A queued cursor is committed within CURSOR_COMMIT_DELAY: past it, none came.)
    tokio::time::sleep(CURSOR_COMMIT_DELAY + Duration::from_millis(11)).await;
    assert_eq!(
        engine.commits(),
        commits,
        "an ack that moved nothing was written"
    );
    // Three acks in a row: answered at once, not after a commit...
    let asked = tokio::time::Instant::now();
    for seq in 1..=3 {
        assert_eq!(store.ack_cursor("b", "phone", seq).await.unwrap(), seq);
    }
    assert_eq!(
        tokio::time::Instant::now(),
        asked,
        "an ack waited for the disk"
    );
    assert_eq!(store.cursor("b", "phone").await.unwrap(), 3);
    // ...and written once, in one commit of their own within CURSOR_COMMIT_DELAY.
    tokio::time::sleep(CURSOR_COMMIT_DELAY + Duration::from_millis(11)).await;
    assert_eq!(engine.commits(), commits + 1);
    assert_eq!(engine.records_written(), records + 1);
    drop(store); // A crash after the commit keeps the cursor.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let store = DurableStore::open(engine.clone(), limits, EPOCH)
        .await
        .unwrap();
    assert_eq!(store.cursor("b", "phone").await.unwrap(), 3);
    // A crash before the commit loses the newest ack: the device is sent again what it had.
    assert_eq!(store.ack_cursor("b", "phone", 5).await.unwrap(), 5);
    drop(store);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let store = DurableStore::open(engine, limits, EPOCH).await.unwrap();
    assert_eq!(store.cursor("b", "phone").await.unwrap(), 3);
}

/// Records an append of a 1:1 message writes: the message, two inbox entries, the dedupe
/// record.
const RECORDS_PER_APPEND: u64 = 4;

#[tokio::test(start_paused = true)]
async fn held_cursors_skip_the_rounds_appends_start_until_they_are_due() {
    let engine = Arc::new(MemEngine::with_commit_latency(Duration::from_millis(10)));
    let store = DurableStore::open(engine.clone(), DurableStoreLimits::default(), EPOCH)
        .await
        .unwrap();
    store.append(send("a", "m0", peer("b"))).await.unwrap();
    let (commits, records) = (engine.commits(), engine.records_written());
    let held_at = tokio::time::Instant::now();
    assert_eq!(store.ack_cursor("b", "phone", 1).await.unwrap(), 1);
    // Appends keep rounds running back to back; the cursor stays out of them...
    let mut appends = 0;
    while tokio::time::Instant::now() + Duration::from_millis(20) < held_at + CURSOR_COMMIT_DELAY {
        appends += 1;
        store
            .append(send("a", &format!("m{appends}"), peer("b")))
            .await
            .unwrap();
        if appends == 3 {
            // ...and a second ack of the device replaces it.
            assert_eq!(store.ack_cursor("b", "phone", 2).await.unwrap(), 2);
        }
    }
    assert!(
        appends >= 5,
        "only {appends} appends before the cursor was due"
    );
    assert_eq!(engine.commits() - commits, appends);
    assert_eq!(
        engine.records_written() - records,
        appends * RECORDS_PER_APPEND,
        "a cursor record rode a round before CURSOR_COMMIT_DELAY"
    );
    // Once due, the held cursor is written once, with its newest value, in the next round.
    tokio::time::sleep_until(held_at + CURSOR_COMMIT_DELAY).await;
    store.append(send("a", "last", peer("b"))).await.unwrap();
    assert_eq!(
        engine.records_written() - records,
        (appends + 1) * RECORDS_PER_APPEND + 1
    );
    drop(store); // A crash after that commit keeps the newest cursor.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let store = DurableStore::open(engine, DurableStoreLimits::default(), EPOCH)
        .await
        .unwrap();
    assert_eq!(store.cursor("b", "phone").await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_quarter_of_the_pending_bound_in_held_cursors_commits_them_at_once() {
    let engine = Arc::new(MemEngine::with_commit_latency(Duration::from_millis(10)));
    let limits = DurableStoreLimits {
        pending_ops_max: 12,
        ..DurableStoreLimits::default()
    };
    assert_eq!(limits.cursors_held_max(), 3);
    let store = DurableStore::open(engine.clone(), limits, EPOCH)
        .await
        .unwrap();
    store.append(send("a", "m0", peer("b"))).await.unwrap();
    let (commits, records) = (engine.commits(), engine.records_written());
    for device in ["phone", "laptop"] {
        store.ack_cursor("b", device, 1).await.unwrap();
    }
    // Two held of three: they wait for CURSOR_COMMIT_DELAY.
    tokio::time::sleep(CURSOR_COMMIT_DELAY - Duration::from_millis(20)).await;
    assert_eq!(engine.commits(), commits);
    // The third device fills the bound: a round takes all three at once.
    store.ack_cursor("b", "pad", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(11)).await;
    assert_eq!(engine.commits(), commits + 1);
    assert_eq!(engine.records_written(), records + 3);
}

#[tokio::test(start_paused = true)]
async fn close_commits_the_held_cursors() {
    let engine = Arc::new(MemEngine::with_commit_latency(Duration::from_millis(10)));
    let store = DurableStore::open(engine.clone(), DurableStoreLimits::default(), EPOCH)
        .await
        .unwrap();
    store.append(send("a", "m0", peer("b"))).await.unwrap();
    let asked = tokio::time::Instant::now();
    store.ack_cursor("b", "phone", 1).await.unwrap();
    store.close().await;
    assert!(
        tokio::time::Instant::now() < asked + CURSOR_COMMIT_DELAY,
        "close waited for the cursor's delay"
    );
    let store = DurableStore::open(engine, DurableStoreLimits::default(), EPOCH)
        .await
        .unwrap();
    assert_eq!(store.cursor("b", "phone").await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_crash_loses_only_unacknowledged_appends() {
    let engine = Arc::new(MemEngine::with_commit_latency(Duration::from_millis(10)));
    let limits = DurableStoreLimits::default();
    let store = Arc::new(
        DurableStore::open(engine.clone(), limits, EPOCH)
            .await
            .unwrap(),
    );
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(
            store
                .append(send("a", &format!("m{i}"), peer("b")))
                .await
                .unwrap(),
        );
    }
    store.ack_cursor("b", "phone", 3).await.unwrap();
    let in_flight: Vec<_> = (5..15)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.append(send("a", &format!("m{i}"), peer("b"))).await })
        })
        .collect();
    // Every in-flight append is queued or committing, none is durable yet.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(in_flight.iter().all(|task| !task.is_finished()));
    for task in in_flight {
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled(), "never returned");
    }
    drop(store); // The crash.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let store = DurableStore::open(engine.clone(), limits, EPOCH + 1)
        .await
        .unwrap();
    assert_eq!(store.epoch(), EPOCH, "the epoch survives restarts");
    assert_eq!(store.n_messages(), 5);
    assert_eq!(store.max_seq("b").await.unwrap(), 5);
    // The cursor rode in the round the crash cut short (the in-flight appends woke it before
    // the cursor's own delay ran out): cursors are advisory, so it is gone with them.
    assert_eq!(store.cursor("b", "phone").await.unwrap(), 0);
    let inbox = store.inbox("a").unwrap();
    for (outcome, (seq, message)) in acked.iter().zip(&inbox) {
        assert_eq!((*seq, message), (outcome.sender_seq, &outcome.message));
    }
    assert_eq!(inbox.len(), 5);
    // Dedupe survives: the retry of an acked send is the original.
    let retry = store.append(send("a", "m2", peer("b"))).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.sender_seq, &retry.message), (3, &acked[2].message));
    // A retry of a lost send is stored now, and seqs go on without a gap.
    let lost = store.append(send("a", "m7", peer("b"))).await.unwrap();
    assert!(!lost.duplicate);
    assert_eq!(lost.deliveries, vec![("a".into(), 6), ("b".into(), 6)]);
    assert_eq!(lost.message.msg_id, 6);
}

#[tokio::test(start_paused = true)]
async fn a_retry_of_a_send_still_committing_waits_for_it() {
    let engine = Arc::new(MemEngine::with_commit_latency(Duration::from_millis(10)));
    let store = DurableStore::open(engine.clone(), DurableStoreLimits::default(), EPOCH)
        .await
        .unwrap();
    let (original, retry) = tokio::join!(
        store.append(send("a", "m1", peer("b"))),
        store.append(send("a", "m1", peer("b"))),
    );
    let (original, retry) = (original.unwrap(), retry.unwrap());
    assert!(!original.duplicate && retry.duplicate);
    assert_eq!(retry.message, original.message);
    assert_eq!(store.max_seq("b").await.unwrap(), 1);
}

#[tokio::test]
async fn a_failed_commit_fails_its_writes_and_poisons_the_store_until_reopened() {
    let engine = Arc::new(MemEngine::new());
    let limits = DurableStoreLimits::default();
    let store = DurableStore::open(engine.clone(), limits, EPOCH)
        .await
        .unwrap();
    store.append(send("a", "m1", peer("b"))).await.unwrap();
    engine.set_fail_commits(true);
    let failed = store.append(send("a", "m2", peer("b"))).await.unwrap_err();
    assert!(
        matches!(&failed, StoreError::Unavailable(text) if text.contains("injected disk failure")),
        "{failed:?}"
    );
    engine.set_fail_commits(false);
    for result in [
        store.append(send("a", "m3", peer("b"))).await.map(|_| 0),
        store.ack_cursor("b", "d", 1).await,
    ] {
        assert!(
            matches!(&result, Err(StoreError::Unavailable(text)) if text.contains("until it is reopened")),
            "{result:?}"
        );
    }
    assert_eq!(store.max_seq("b").await.unwrap(), 1, "reads go on");
    drop(store);
    let store = DurableStore::open(engine, limits, EPOCH).await.unwrap();
    let outcome = store.append(send("a", "m2", peer("b"))).await.unwrap();
    assert_eq!(outcome.deliveries, vec![("a".into(), 2), ("b".into(), 2)]);
}

// The bound on writes waiting for the disk.

#[tokio::test(start_paused = true)]
async fn writes_past_the_pending_bound_are_refused_before_allocating() {
    let engine = Arc::new(MemEngine::with_commit_latency(Duration::from_secs(1)));
    let limits = DurableStoreLimits {
        pending_ops_max: 4,
        ..DurableStoreLimits::default()
    };
    let store = DurableStore::open(engine.clone(), limits, EPOCH)
        .await
        .unwrap();
    let results = futures::future::join_all(
        (0..6).map(|i| store.append(send("a", &format!("m{i}"), peer("b")))),
    )
    .await;
    let (stored, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!((stored.len(), refused.len()), (4, 2));
    for refusal in refused {
        assert!(
            matches!(&refusal, Err(StoreError::Full(text)) if text.contains("pending_ops_max")),
            "{refusal:?}"
        );
    }
    assert_eq!(store.max_seq("b").await.unwrap(), 4);
    assert_eq!(store.n_messages(), 4);
    // Refused sends left no trace: their ids are free and seqs go on without a gap.
    let retry = store.append(send("a", "m5", peer("b"))).await.unwrap();
    assert!(!retry.duplicate);
    assert_eq!(retry.sender_seq, 5);
}

// fjall on disk.

#[tokio::test]
async fn fjall_directory_reopens_with_every_seq_cursor_group_and_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let limits = DurableStoreLimits::default();
    let store = fjall_store(dir.path(), limits).await;
    store
        .create_group("g", "a", &["b".into(), "c".into()])
        .await
        .unwrap();
    store.leave_group("g", "c").await.unwrap();
    for i in 0..30 {
        let to = if i % 3 == 0 {
            Target::Group("g".into())
        } else {
            peer("b")
        };
        store.append(send("a", &format!("m{i}"), to)).await.unwrap();
    }
    store.ack_cursor("b", "phone", 17).await.unwrap();
    let before = snapshot(&store).await;
    assert!(
        store.engine().commits() >= 33,
        "one commit per sequential write"
    );
    store.close().await;

    let store = DurableStore::open(
        Arc::new(FjallEngine::open(dir.path()).unwrap()),
        limits,
        EPOCH + 5,
    )
    .await
    .unwrap();
    assert_eq!(snapshot(&store).await, before);
    assert_eq!(store.epoch(), EPOCH);
    assert_eq!(
        store.join_group("g", "a").await.unwrap(),
        vec!["a", "b"],
        "membership survives"
    );
    assert!(
        store
            .append(send("a", "m4", peer("b")))
            .await
            .unwrap()
            .duplicate
    );
    let next = store.append(send("a", "new", peer("b"))).await.unwrap();
    assert_eq!(next.sender_seq, 31);
    assert_eq!(next.message.msg_id, 31);
}

/// fjall's journal (vendored, vendor/README.md) is a sparse 64 MiB file, written with zeros
/// ahead of its data so that a commit's sync seldom allocates blocks (and so writes the inode
/// besides the data). The zeros read back as the holes did: a reopen finds every message.
#[tokio::test]
async fn the_journal_is_written_with_zeros_ahead_of_its_data_and_reads_back_the_same() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().unwrap();
    let limits = DurableStoreLimits::default();
    let store = fjall_store(dir.path(), limits).await;
    for i in 0..200 {
        store
            .append(send("a", &format!("m{i}"), peer("b")))
            .await
            .unwrap();
    }
    store.close().await;

    let journals: Vec<PathBuf> = files_under(dir.path())
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "jnl"))
        .collect();
    let [journal] = journals.as_slice() else {
        panic!("one journal expected: {journals:?}");
    };
    let meta = std::fs::metadata(journal).unwrap();
    assert_eq!(
        meta.len(),
        64 << 20,
        "the journal keeps its preallocated length"
    );
    let bytes = std::fs::read(journal).unwrap();
    let data_end = bytes.iter().rposition(|byte| *byte != 0).unwrap() as u64 + 1;
    assert!(data_end > 10_000, "200 commits wrote {data_end} bytes");
    // Sparse, only the data's blocks would be allocated (data_end rounded up to 4 KiB).
    let allocated = meta.blocks() * 512;
    assert!(
        allocated >= data_end + 192 * 1024,
        "{allocated} bytes allocated for {data_end} bytes of data"
    );

    let store = fjall_store(dir.path(), limits).await;
    let page = store.sync("b", 0, 1_000).await.unwrap();
    assert_eq!((page.entries.len(), page.max_seq), (200, 200));
    let next = store.append(send("a", "m200", peer("b"))).await.unwrap();
    assert_eq!(next.sender_seq, 201);
}

/// fjall's commit blocks, so the store commits from a thread of its own: it sleeps when
/// nothing is queued, wakes for a held cursor to commit it when due, and a dropped store (a
/// crash) stops it and lets go of the directory before the drop returns.
#[tokio::test]
async fn the_commit_thread_commits_a_held_cursor_when_due_and_a_crash_frees_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let limits = DurableStoreLimits::default();
    let engine = Arc::new(FjallEngine::open(dir.path()).unwrap());
    let store = DurableStore::open(engine.clone(), limits, EPOCH)
        .await
        .unwrap();
    for id in ["m0", "m1"] {
        store.append(send("a", id, peer("b"))).await.unwrap();
    }
    let commits = engine.commits();
    // Once the thread sleeps with no deadline, the held cursor has to wake it.
    let asked = std::time::Instant::now();
    while !store.committer_idle() {
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "the commit thread did not go to sleep in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let acked = std::time::Instant::now();
    assert_eq!(store.ack_cursor("b", "phone", 1).await.unwrap(), 1);
    let deadline = acked + Duration::from_secs(10);
    while engine.commits() == commits {
        assert!(
            std::time::Instant::now() < deadline,
            "a held cursor was not committed 10 s after its ack"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        acked.elapsed() >= CURSOR_COMMIT_DELAY,
        "the cursor was committed before CURSOR_COMMIT_DELAY"
    );
    assert_eq!(engine.commits(), commits + 1);
    // A newer ack is held when the store crashes: lost, as cursors are advisory.
    assert_eq!(store.ack_cursor("b", "phone", 2).await.unwrap(), 2);
    drop(store);
    drop(engine);
    let store = DurableStore::open(
        Arc::new(FjallEngine::open(dir.path()).expect("the crashed store let go of its directory")),
        limits,
        EPOCH,
    )
    .await
    .unwrap();
    assert_eq!(store.cursor("b", "phone").await.unwrap(), 1);
    assert_eq!(store.inbox("b").unwrap().len(), 2);
    store.close().await;
}

/// What a reader can see of a store, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    n_messages: u64,
    epoch: u64,
    inboxes: Vec<(String, Vec<(u64, String)>)>,
    cursor: u64,
}

async fn snapshot<E: Engine>(store: &DurableStore<E>) -> Snapshot {
    let inboxes = store
        .users()
        .unwrap()
        .into_iter()
        .map(|user| {
            let inbox = store.inbox(&user).unwrap();
            let entries = inbox
                .iter()
                .map(|(seq, message)| (*seq, format!("{message:?}")))
                .collect();
            (user, entries)
        })
        .collect();
    Snapshot {
        n_messages: store.n_messages(),
        epoch: store.epoch(),
        inboxes,
        cursor: store.cursor("b", "phone").await.unwrap(),
    }
}

#[test]
fn fjall_refuses_a_directory_that_is_not_a_store_or_lost_its_keyspace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let error = FjallEngine::open(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("IMLAB-STORE") && error.contains("not empty"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    drop(FjallEngine::open(dir.path()).unwrap());
    std::fs::remove_dir_all(dir.path().join("fjall")).unwrap();
    let error = FjallEngine::open(dir.path()).unwrap_err().to_string();
    let expected = dir.path().join("fjall").join("version");
    assert!(error.contains(&expected.display().to_string()), "{error}");

    let dir = tempfile::tempdir().unwrap();
    drop(FjallEngine::open(dir.path()).unwrap());
    // The open's error with the marker saying `marker`.
    let refused_with = |marker: &str| {
        std::fs::write(dir.path().join("IMLAB-STORE"), marker).unwrap();
        FjallEngine::open(dir.path()).unwrap_err().to_string()
    };
    let error = refused_with("imlab-store format 9\nengine fjall\n");
    assert!(
        error.contains("IMLAB-STORE") && error.contains("format 9"),
        "{error}"
    );

    // A store of the layout before ids' keys were led by their hash.
    let error = refused_with("imlab-store format 1\nengine fjall\n");
    assert!(
        error.contains("IMLAB-STORE")
            && error.contains("store format 1, this build reads format 2 only")
            && error.contains("open it with the build that wrote it"),
        "{error}"
    );
}

/// Every regular file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A file of the store: its length and its bytes, without the zero tail of a preallocated
/// file (fjall preallocates its 64 MiB journal, so the written part is what damage must hit).
struct FileImage {
    relative: PathBuf,
    len: u64,
    content: Vec<u8>,
}

/// A zero tail this long is preallocated space, not data.
const PREALLOCATED_BYTES_MIN: usize = 4_096;

fn read_images(dir: &Path) -> Vec<FileImage> {
    files_under(dir)
        .into_iter()
        .map(|file| {
            let mut content = std::fs::read(&file).unwrap();
            let len = content.len() as u64;
            let written = content
                .iter()
                .rposition(|byte| *byte != 0)
                .map_or(0, |i| i + 1);
            if content.len() - written >= PREALLOCATED_BYTES_MIN {
                content.truncate(written);
            }
            FileImage {
                relative: file.strip_prefix(dir).unwrap().to_path_buf(),
                len,
                content,
            }
        })
        .collect()
}

/// Writes the images into `dir` (the zero tail of a preallocated file stays sparse), with
/// `damaged` in place of the image at that path.
fn write_images(dir: &Path, images: &[FileImage], damaged: &FileImage) {
    for image in images {
        let image = if image.relative == damaged.relative {
            damaged
        } else {
            image
        };
        let path = dir.join(&image.relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &image.content).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(image.len)
            .unwrap();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// The last written bytes never reached the disk: a torn write, a legitimate crash.
    TornTail,
    /// Bytes in the middle of the written part were overwritten.
    Garbage,
    /// The second half of the written part is gone.
    Halved,
}

fn damaged(image: &FileImage, damage: Damage) -> Option<FileImage> {
    let n_written = image.content.len();
    if n_written == 0 {
        return None;
    }
    let mut content = image.content.clone();
    match damage {
        Damage::TornTail => content.truncate(n_written.saturating_sub(7)),
        Damage::Garbage => {
            let middle = n_written / 2;
            for byte in &mut content[middle..(middle + 16).min(n_written)] {
                *byte ^= 0xA5;
            }
        }
        Damage::Halved => content.truncate(n_written / 2),
    }
    // A preallocated file keeps its length; any other file ends where its bytes end.
    let len = if image.len > n_written as u64 {
        image.len
    } else {
        content.len() as u64
    };
    Some(FileImage {
        relative: image.relative.clone(),
        len,
        content,
    })
}

/// fjall's superseded version files (`vN` below the newest of a keyspace) are never read:
/// damaging them shows nothing.
fn is_superseded_version(relative: &Path, images: &[FileImage]) -> bool {
    let version = |path: &Path| -> Option<u64> {
        path.file_name()?.to_str()?.strip_prefix('v')?.parse().ok()
    };
    let Some(own) = version(relative) else {
        return false;
    };
    images.iter().any(|other| {
        other.relative.parent() == relative.parent()
            && version(&other.relative).is_some_and(|other| other > own)
    })
}

/// Opens a copy of the store made of `images` with `damaged` in place; returns "refused" or
/// the index in `history` of the state it opened with. Panics on anything else.
async fn open_damaged(
    images: &[FileImage],
    damaged: &FileImage,
    history: &[Snapshot],
    case: &str,
) -> Result<usize, String> {
    let copy = tempfile::tempdir().unwrap();
    write_images(copy.path(), images, damaged);
    let dir_name = copy.path().display().to_string();
    let limits = DurableStoreLimits::default();
    let opened = match FjallEngine::open(copy.path()) {
        Ok(engine) => DurableStore::open(Arc::new(engine), limits, 0)
            .await
            .map_err(|error| error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match opened {
        Err(text) => {
            assert!(
                text.contains(&dir_name),
                "{case}: the error names no path in the store: {text}"
            );
            // fjall names no file; a damaged table, version or blob file is found and named,
            // and no sound file is named with it.
            let relative = damaged.relative.display().to_string();
            if relative.starts_with("fjall/keyspaces/") && !relative.ends_with(".jnl") {
                let path = copy.path().join(&damaged.relative).display().to_string();
                assert!(
                    text.contains(&path) && !text.contains("damaged files:"),
                    "{case}: the error does not name the damaged file alone: {text}"
                );
            }
            Err(text)
        }
        Ok(store) => {
            let seen = snapshot(&store).await;
            store.close().await;
            match history.iter().rposition(|state| *state == seen) {
                Some(at) => Ok(at),
                None => panic!("{case}: opened with data no commit left: {seen:?}"),
            }
        }
    }
}

#[tokio::test]
async fn fjall_damaged_files_fail_the_open_naming_the_file_or_keep_committed_data() {
    let pristine = tempfile::tempdir().unwrap();
    let limits = DurableStoreLimits::default();
    let store = fjall_store(pristine.path(), limits).await;
    store.create_group("g", "a", &["b".into()]).await.unwrap();
    // Every state a reader could have seen, one per commit.
    let mut history = vec![snapshot(&store).await];
    for i in 0..20 {
        store
            .append(send("a", &format!("m{i}"), peer("b")))
            .await
            .unwrap();
        history.push(snapshot(&store).await);
    }
    // Move what is there so far from the journal into table files, and close cleanly: the
    // watermark now counts these commits.
    store.engine().flush_memtables().unwrap();
    store.close().await;
    let early_watermark = std::fs::read(pristine.path().join("IMLAB-STORE.commits")).unwrap();
    let n_early = history.len() - 1;
    let store = fjall_store(pristine.path(), limits).await;
    for i in 20..30 {
        store
            .append(send("a", &format!("m{i}"), peer("b")))
            .await
            .unwrap();
        history.push(snapshot(&store).await);
    }
    let commits = store.engine().commits();
    store.ack_cursor("b", "phone", 29).await.unwrap();
    // With nothing else to carry it, the cursor is committed on its own, one commit.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.engine().commits() == commits {
        assert!(
            std::time::Instant::now() < deadline,
            "the cursor was never committed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    history.push(snapshot(&store).await);
    store.append(send("a", "last", peer("b"))).await.unwrap();
    history.push(snapshot(&store).await);
    store.close().await;
    let all = history.len() - 1;

    // After a clean close, any damage is refused or harmless.
    let images = read_images(pristine.path());
    let mut report = Vec::new();
    for image in &images {
        if is_superseded_version(&image.relative, &images) {
            continue;
        }
        for kind in [Damage::TornTail, Damage::Garbage, Damage::Halved] {
            let Some(damaged) = damaged(image, kind) else {
                continue;
            };
            let case = format!("{} {kind:?}", image.relative.display());
            let outcome = open_damaged(&images, &damaged, &history, &case).await;
            if let Ok(at) = outcome {
                assert_eq!(at, all, "{case}: lost commits");
            }
            report.push(format!(
                "{case}: {}",
                if outcome.is_ok() { "intact" } else { "refused" }
            ));
        }
    }
    let report = report.join("\n");
    eprintln!("{report}");
    let journal = images
        .iter()
        .filter(|image| image.relative.extension().is_some_and(|ext| ext == "jnl"))
        .map(|image| image.relative.display().to_string())
        .next_back()
        .expect("fjall keeps a journal");
    for kind in ["TornTail", "Garbage", "Halved"] {
        assert!(
            report.contains(&format!("{journal} {kind}: refused")),
            "{report}"
        );
    }
    // A damaged journal is named by its file, not only by the store's folder.
    let journal_image = images
        .iter()
        .find(|image| image.relative.display().to_string() == journal)
        .unwrap();
    let garbage = damaged(journal_image, Damage::Garbage).unwrap();
    let text = open_damaged(&images, &garbage, &history, "journal garbage")
        .await
        .unwrap_err();
    assert!(text.contains(&journal), "{journal} is not named: {text}");
    assert!(report.contains("IMLAB-STORE Garbage: refused"), "{report}");
    assert!(
        report.contains("IMLAB-STORE.commits Garbage: refused"),
        "{report}"
    );

    // A crash leaves the watermark behind; a torn journal tail then loses the last commit
    // only, and a journal cut shorter still keeps what the watermark counts.
    let crashed: Vec<FileImage> = images
        .iter()
        .map(|image| FileImage {
            relative: image.relative.clone(),
            len: image.len,
            content: image.content.clone(),
        })
        .map(|mut image| {
            if image.relative == Path::new("IMLAB-STORE.commits") {
                image.len = early_watermark.len() as u64;
                image.content = early_watermark.clone();
            }
            image
        })
        .collect();
    let journal = crashed
        .iter()
        .find(|image| image.relative.display().to_string() == journal)
        .unwrap();
    let torn = damaged(journal, Damage::TornTail).unwrap();
    assert_eq!(
        open_damaged(&crashed, &torn, &history, "crash, torn journal").await,
        Ok(all - 1)
    );
    let halved = damaged(journal, Damage::Halved).unwrap();
    match open_damaged(&crashed, &halved, &history, "crash, halved journal").await {
        Ok(at) => assert!(at >= n_early, "commit {at}, the watermark counts {n_early}"),
        Err(text) => assert!(text.contains("recovered"), "{text}"),
    }
}

#[tokio::test]
async fn a_deleted_commit_watermark_fails_the_open_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = fjall_store(dir.path(), DurableStoreLimits::default()).await;
    store.append(send("a", "m1", peer("b"))).await.unwrap();
    store.close().await;
    let watermark = dir.path().join("IMLAB-STORE.commits");
    std::fs::remove_file(&watermark).unwrap();
    let error = FjallEngine::open(dir.path()).err().unwrap().to_string();
    assert!(
        error.contains(&watermark.display().to_string()) && error.contains("missing"),
        "{error}"
    );
    // Writing a zero watermark accepts the store as it is.
    std::fs::write(&watermark, "durable commits 0\n").unwrap();
    let store = fjall_store(dir.path(), DurableStoreLimits::default()).await;
    store.close().await;
}

/// The inspection reads the simulator's checker makes: inboxes as msg_ids, and the messages
/// they name read in pages, on both engines, past a page of 1,024.
#[tokio::test]
async fn inspection_reads_inboxes_as_msg_ids_and_named_messages_a_page_at_a_time() {
    async fn check<E: Engine>(store: DurableStore<E>) {
        for n in 1..=2_500 {
            let to = if n % 2 == 0 { peer("b") } else { peer("c") };
            store.append(send("a", &format!("m{n}"), to)).await.unwrap();
        }
        let inbox = store.inbox_msg_ids("b").unwrap();
        assert_eq!(inbox.len(), 1_250);
        assert!(
            inbox
                .iter()
                .zip(1u64..)
                .all(|(&(seq, msg_id), n)| seq == n && msg_id == 2 * n)
        );
        let whole = store.inbox("b").unwrap();
        assert_eq!(
            whole
                .iter()
                .map(|(seq, message)| (*seq, message.msg_id))
                .collect::<Vec<_>>(),
            inbox
        );
        assert_eq!(store.inbox_msg_ids("a").unwrap().len(), 2_500);
        assert!(store.inbox_msg_ids("nobody").unwrap().is_empty());

        let mut seen = Vec::new();
        store
            .messages_where(|msg_id| msg_id % 3 == 0, |message| seen.push(message))
            .unwrap();
        assert_eq!(seen.len(), 833);
        assert!(seen.iter().zip(1u64..).all(|(message, n)| {
            message.msg_id == 3 * n && message.client_msg_id == format!("m{}", 3 * n)
        }));
        let mut all = 0;
        store.messages_where(|_| true, |_| all += 1).unwrap();
        assert_eq!(all, 2_500);
    }
    check(mem_store(DurableStoreLimits::default()).await).await;
    let dir = tempfile::tempdir().unwrap();
    check(fjall_store(dir.path(), DurableStoreLimits::default()).await).await;
}

/// The commit counts an operator reads (`DurableStore::commit_stats`) on the committer's task
/// (the simulator's engine, its clock paused): every engine commit once, the records it wrote,
/// and its time, here the engine's 2 ms, in the bucket bounded by 2 ms.
#[tokio::test(start_paused = true)]
async fn commit_stats_count_each_commit_its_records_and_its_time() {
    let engine = Arc::new(MemEngine::with_commit_latency(Duration::from_millis(2)));
    let store = Arc::new(
        DurableStore::open(engine.clone(), DurableStoreLimits::default(), EPOCH)
            .await
            .unwrap(),
    );
    let (commits_at_open, stats_at_open) = (engine.commits(), store.commit_stats());
    let n_appends = 60;
    let tasks: Vec<_> = (0..n_appends)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(i * 150)).await;
                store
                    .append(send(&format!("u{}", i % 6), &format!("m{i}"), peer("hub")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = store.commit_stats().since(&stats_at_open);
    let commits = engine.commits() - commits_at_open;
    assert!(commits > 1 && commits < n_appends, "{commits} commits");
    assert_eq!(stats.commits, commits);
    // A 1:1 message is four records: the message, both inbox entries and its dedupe record.
    assert_eq!(stats.records, 4 * n_appends);
    let two_ms = imlab_core::store::COMMIT_BUCKETS_US
        .iter()
        .position(|&us| us == 2_000)
        .unwrap();
    let mut expected = [0; imlab_core::store::COMMIT_BUCKETS_US.len() + 1];
    expected[two_ms] = commits;
    assert_eq!(stats.buckets, expected);
    assert_eq!(stats.total_us, 2_000 * commits);
    assert_eq!(stats.quantile_bound_us(0.99), Some(2_000));
}

/// The same counts on the disk's committer thread: each fsynced commit counted once, with its
/// records, in some bucket.
#[tokio::test]
async fn commit_stats_on_the_disk_count_each_fsynced_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = fjall_store(dir.path(), DurableStoreLimits::default()).await;
    let (commits_at_open, stats_at_open) = (store.engine().commits(), store.commit_stats());
    for i in 0..5 {
        store
            .append(send("alice", &format!("m{i}"), peer("bob")))
            .await
            .unwrap();
    }
    let stats = store.commit_stats().since(&stats_at_open);
    assert_eq!(stats.commits, store.engine().commits() - commits_at_open);
    assert!(stats.commits >= 1, "{stats:?}");
    assert_eq!(stats.records, 4 * 5);
    assert_eq!(stats.buckets.iter().sum::<u64>(), stats.commits);
    assert!(stats.total_us > 0, "an fsync takes time: {stats:?}");
}

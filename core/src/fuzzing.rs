//! Fuzzing harnesses (feature `fuzzing`): the checks behind the cargo-fuzz targets in `fuzz/`,
//! as plain functions, so the checked-in seed corpus also replays on stable Rust
//! (`core/tests/fuzz_corpus.rs`).
//!
//! - [`frame_decoder`]: arbitrary bytes through [`codec::decode`] and [`FrameReader`], in
//!   chunkings the input's header chooses, against an oracle of the length-prefix rules.
//! - [`login`]: arbitrary client bytes into the real server ([`Server::run`]) over an in-memory
//!   pipe, on a current-thread runtime with paused time, then a fresh login that must work.
//!
//! Every check is an `assert!` that names the property: a failed check is a crash for
//! libFuzzer and a panic for the test.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::auth::{AuthError, Authenticator, mint_token, validate_id};
use crate::clock::TokioClock;
use crate::codec::{
    self, CodecError, DEFAULT_MAX_FRAME_BYTES, Decoded, FrameIoError, LENGTH_PREFIX_BYTES,
};
use crate::framed::{FrameReader, FrameWriter};
use crate::net::Connector;
use crate::net::memory::{self, MemoryConnector};
use crate::proto::{self, Body, ErrorCode, Frame};
use crate::server::{LoggingPushProvider, Server, ServerConfig, ServerDeps};
use crate::store::{MemoryStore, Store};

// ---------------------------------------------------------------------------------------------
// frame_decoder

/// Frame limits the first input byte chooses from (low three bits).
const MAX_FRAME_BYTES_CHOICES: [usize; 8] =
    [DEFAULT_MAX_FRAME_BYTES, 0, 1, 2, 7, 64, 1_000, 65_535];

/// Input bytes before the stream: the limit choice, then the chunk plan.
pub const DECODER_HEADER_BYTES: usize = 1 + CHUNK_PLAN_STEPS;

/// Steps of a chunk plan; the plan repeats.
const CHUNK_PLAN_STEPS: usize = 4;

/// Heap bytes a decode may use beyond [`decode_expansion_max`] per frame byte: the error.
pub const DECODE_OVERHEAD_BYTES: usize = 1_024;

/// Heap bytes the decoder may use per byte of a validated frame. An empty embedded message
/// costs 2 wire bytes and one struct in memory, and a `Vec`'s capacity may be twice its
/// length, so one wire byte may cost the largest struct a repeated field holds.
pub fn decode_expansion_max() -> usize {
    size_of::<proto::Message>()
        .max(size_of::<String>())
        .max(size_of::<Frame>())
}

/// Measures the heap one call uses. The fuzz target and the corpus test implement it with a
/// counting global allocator (`fuzz/src/lib.rs`), which a library cannot install.
pub trait HeapMeter {
    /// Starts a measurement on this thread.
    fn start(&self);
    /// Largest heap growth, in bytes, on this thread since `start`.
    fn peak_bytes(&self) -> usize;
}

/// How a byte stream ended for the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// Between frames.
    Clean,
    /// Inside a frame, with this many bytes buffered.
    Truncated {
        /// Bytes of the unfinished frame.
        buffered_bytes: usize,
    },
    /// At a bad frame.
    Error(CodecError),
}

/// What one `frame_decoder` input did, for corpus statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderOutcome {
    /// Frames decoded before the end.
    pub n_frames: usize,
    /// How the stream ended.
    pub end: StreamEnd,
}

/// Runs one input through the decoder; panics on a broken property.
///
/// Input: byte 0 picks the frame limit, bytes 1..=4 the chunk plan (per read: bit 7 = the read
/// is `Pending` first, bits 0-6 = bytes, 127 meaning all the rest), then the stream. Checks:
/// the oracle's verdict for every prefix the decoder sees, no allocation before a frame is
/// whole and within the limit (when `meter` is given), the same frames and end whether the
/// stream comes whole, in chunks, or through a [`FrameReader`] whose `next()` is cancelled at
/// every `Pending`, encode-then-decode round trips, and error texts that name the problem.
pub fn frame_decoder(input: &[u8], meter: Option<&dyn HeapMeter>) -> DecoderOutcome {
    let max_frame_bytes =
        MAX_FRAME_BYTES_CHOICES[usize::from(input.first().copied().unwrap_or(0) & 7)];
    let mut plan = [0u8; CHUNK_PLAN_STEPS];
    let header = input.len().min(DECODER_HEADER_BYTES);
    plan[..header.saturating_sub(1)].copy_from_slice(&input[1.min(header)..header]);
    let plan = ChunkPlan { steps: plan };
    let stream = &input[header..];

    let whole = decode_stream(stream, max_frame_bytes, None, meter);
    let chunked = decode_stream(stream, max_frame_bytes, Some(&plan), meter);
    assert_eq!(
        whole, chunked,
        "chunking changed what was decoded ({plan:?})"
    );
    let (frames, end) = whole;
    let (read_frames, read_end) = read_stream(stream, max_frame_bytes, &plan);
    assert_eq!(
        read_frames, frames,
        "FrameReader decoded other frames ({plan:?})"
    );
    match (&end, read_end) {
        (StreamEnd::Clean, Ok(())) => {}
        (StreamEnd::Error(expected), Err(FrameIoError::Codec(error))) => {
            assert_eq!(&error, expected, "FrameReader reported another error");
        }
        (StreamEnd::Truncated { buffered_bytes }, Err(FrameIoError::Io(error))) => {
            assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
            let count = format!("{buffered_bytes} bytes buffered");
            assert!(
                error.to_string().contains(&count),
                "{error:?} lacks {count:?}"
            );
        }
        (end, read_end) => panic!("decoder ended {end:?}, FrameReader ended {read_end:?}"),
    }
    DecoderOutcome {
        n_frames: frames.len(),
        end,
    }
}

/// Read sizes, repeating; see [`frame_decoder`].
#[derive(Debug, Clone, Copy)]
struct ChunkPlan {
    steps: [u8; CHUNK_PLAN_STEPS],
}

impl ChunkPlan {
    /// Bytes of read `i` and whether it is `Pending` first.
    fn step(&self, i: usize) -> (usize, bool) {
        let step = self.steps[i % CHUNK_PLAN_STEPS];
        let n_bytes = match step & 0x7f {
            0x7f => usize::MAX,
            n => usize::from(n) + 1,
        };
        (n_bytes, step & 0x80 != 0)
    }
}

/// Decodes `stream` as a connection would, fed whole or in the plan's chunks.
fn decode_stream(
    stream: &[u8],
    max_frame_bytes: usize,
    plan: Option<&ChunkPlan>,
    meter: Option<&dyn HeapMeter>,
) -> (Vec<Frame>, StreamEnd) {
    let mut buffer = Vec::new();
    let mut start = 0;
    let mut n_fed = 0;
    let mut frames = Vec::new();
    for step in 0.. {
        loop {
            match checked_decode(&buffer[start..], max_frame_bytes, meter) {
                Ok(Decoded::Frame {
                    frame,
                    consumed_bytes,
                }) => {
                    start += consumed_bytes;
                    frames.push(frame);
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(error) => return (frames, StreamEnd::Error(error)),
            }
        }
        if n_fed == stream.len() {
            let buffered_bytes = buffer.len() - start;
            let end = match buffered_bytes {
                0 => StreamEnd::Clean,
                _ => StreamEnd::Truncated { buffered_bytes },
            };
            return (frames, end);
        }
        let n_bytes = plan.map_or(usize::MAX, |plan| plan.step(step).0);
        let n_bytes = n_bytes.min(stream.len() - n_fed);
        buffer.extend_from_slice(&stream[n_fed..n_fed + n_bytes]);
        n_fed += n_bytes;
    }
    unreachable!("the loop returns once the stream is fed")
}

/// [`codec::decode`], checked against the length-prefix rules, the heap bound, the round trip
/// and the error text.
fn checked_decode(
    input: &[u8],
    max_frame_bytes: usize,
    meter: Option<&dyn HeapMeter>,
) -> Result<Decoded, CodecError> {
    if let Some(meter) = meter {
        meter.start();
    }
    let decoded = codec::decode(input, max_frame_bytes);
    let peak_bytes = meter.map(|meter| meter.peak_bytes());
    let Some(prefix) = input.first_chunk::<LENGTH_PREFIX_BYTES>() else {
        let needed_bytes = LENGTH_PREFIX_BYTES - input.len();
        assert_eq!(decoded, Ok(Decoded::Incomplete { needed_bytes }));
        assert_eq!(peak_bytes.unwrap_or(0), 0, "a partial prefix allocated");
        return decoded;
    };
    let declared_bytes = u32::from_be_bytes(*prefix) as usize;
    let frame_bytes = LENGTH_PREFIX_BYTES + declared_bytes;
    if declared_bytes > max_frame_bytes {
        let expected = CodecError::FrameTooLarge {
            declared_bytes,
            max_frame_bytes,
        };
        assert_eq!(decoded, Err(expected));
    } else if input.len() < frame_bytes {
        let needed_bytes = frame_bytes - input.len();
        assert_eq!(decoded, Ok(Decoded::Incomplete { needed_bytes }));
    } else {
        let whole = matches!(
            decoded,
            Ok(Decoded::Frame { .. }) | Err(CodecError::Malformed { .. } | CodecError::EmptyFrame)
        );
        assert!(whole, "a whole frame within the limit gave {decoded:?}");
    }
    match (&decoded, peak_bytes) {
        (Ok(Decoded::Incomplete { .. }) | Err(CodecError::FrameTooLarge { .. }), Some(peak)) => {
            assert_eq!(
                peak, 0,
                "allocated before the frame was whole and within the limit"
            );
        }
        (_, Some(peak)) => {
            let bound = frame_bytes * decode_expansion_max() + DECODE_OVERHEAD_BYTES;
            assert!(
                peak <= bound,
                "a {frame_bytes}-byte frame took {peak} heap bytes"
            );
        }
        (_, None) => {}
    }
    match &decoded {
        Ok(Decoded::Frame {
            frame,
            consumed_bytes,
        }) => {
            assert_eq!(
                *consumed_bytes, frame_bytes,
                "consumed other than the prefix says"
            );
            assert!(frame.body.is_some(), "a frame without a body got through");
            let encoded = codec::encode_to_vec(frame);
            let again = Decoded::Frame {
                frame: frame.clone(),
                consumed_bytes: encoded.len(),
            };
            // The limit is the sender's concern: canonical re-encoding may be longer (an
            // enum sent as a 5-byte varint comes back as 10 bytes).
            let round_trip = codec::decode(&encoded, u32::MAX as usize);
            assert_eq!(
                round_trip,
                Ok(again),
                "the re-encoded frame decoded differently"
            );
        }
        Ok(Decoded::Incomplete { .. }) => {}
        Err(error) => check_error_text(error, declared_bytes),
    }
    decoded
}

/// An error's text says what was wrong: the numbers involved, or the parser's reason.
fn check_error_text(error: &CodecError, declared_bytes: usize) {
    let text = error.to_string();
    match error {
        CodecError::FrameTooLarge {
            declared_bytes: declared,
            max_frame_bytes,
        } => {
            assert_eq!(*declared, declared_bytes);
            let says_both =
                text.contains(&declared.to_string()) && text.contains(&max_frame_bytes.to_string());
            assert!(says_both, "{text:?} does not name the length and the limit");
        }
        CodecError::Malformed {
            length_bytes,
            reason,
        } => {
            assert_eq!(*length_bytes, declared_bytes);
            assert!(!reason.trim().is_empty(), "{text:?} gives no reason");
            assert!(text.contains(&length_bytes.to_string()) && text.contains(reason.as_str()));
        }
        CodecError::EmptyFrame => assert!(text.contains("no body"), "{text:?}"),
    }
}

/// Reads `stream` with a [`FrameReader`] over a reader that follows the plan, dropping the
/// `next()` future at every `Pending` (it is documented cancel-safe).
fn read_stream(
    stream: &[u8],
    max_frame_bytes: usize,
    plan: &ChunkPlan,
) -> (Vec<Frame>, Result<(), FrameIoError>) {
    let source = PlannedReader {
        rest: stream,
        plan: *plan,
        step: 0,
        pending_done: false,
    };
    let mut reader = FrameReader::new(source, max_frame_bytes);
    let mut context = Context::from_waker(Waker::noop());
    let mut frames = Vec::new();
    loop {
        let polled = std::pin::pin!(reader.next()).poll(&mut context);
        match polled {
            Poll::Pending => continue,
            Poll::Ready(Ok(Some(frame))) => frames.push(frame),
            Poll::Ready(Ok(None)) => return (frames, Ok(())),
            Poll::Ready(Err(error)) => return (frames, Err(error)),
        }
    }
}

/// An [`AsyncRead`] serving a byte slice in the plan's read sizes, `Pending` where it says.
struct PlannedReader<'a> {
    rest: &'a [u8],
    plan: ChunkPlan,
    step: usize,
    pending_done: bool,
}

impl AsyncRead for PlannedReader<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let (n_bytes, pending_first) = this.plan.step(this.step);
        if pending_first && !this.pending_done {
            this.pending_done = true;
            context.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.pending_done = false;
        this.step += 1;
        let n_bytes = n_bytes.min(this.rest.len()).min(buf.remaining());
        let (now, later) = this.rest.split_at(n_bytes);
        buf.put_slice(now);
        this.rest = later;
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// login

/// The secret of the login harness's HMAC authenticator.
pub const LOGIN_SECRET: &str = "imlab-fuzz-secret";

/// Expiry of the tokens the harness mints, long after [`LOGIN_EPOCH_UNIX_MS`].
pub const LOGIN_TOKEN_EXPIRY_UNIX_S: u64 = 4_000_000_000;

/// Wall-clock time when a login run starts (a [`TokioClock`] epoch).
pub const LOGIN_EPOCH_UNIX_MS: u64 = 1_700_000_000_000;

/// Virtual time a whole login run may take: the longest idle timeout and then some. Paused
/// time jumps, so this costs nothing; hitting it means the server hung.
const LOGIN_RUN_TIMEOUT: Duration = Duration::from_secs(4 * 3_600);

/// Logins whose token the fuzzer writes (shape 2): some ids are invalid.
const ANY_USERS: [&str; 4] = ["alice", "bob", "", "a.b"];
const ANY_DEVICES: [&str; 4] = ["phone", "laptop", "", "ph one"];
/// Logins that pass (shape 3).
const GOOD_USERS: [&str; 4] = ["alice", "bob", "carol", "survivor"];
const GOOD_DEVICES: [&str; 4] = ["phone", "laptop", "watch", "check"];
const HEARTBEAT_INTERVALS_S: [u32; 8] = [0, 1, 5, 60, 285, 3_600, 86_400, u32::MAX];

/// Bytes per client write the mode byte chooses from (the first: all at once).
pub const WRITE_CHUNK_BYTES_CHOICES: [usize; 4] = [usize::MAX, 1, 7, 64];

/// Server frame limits the mode byte chooses from. Besides the default, limits small enough
/// that inputs of libFuzzer's default length reach them, and the replies built near them.
pub const MAX_FRAME_BYTES_LOGIN_CHOICES: [usize; 4] =
    [DEFAULT_MAX_FRAME_BYTES, 4_096, 2_000, 1_200];

/// How the fuzzed connection's login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The server answered a LoginReply.
    LoggedIn,
    /// The server answered this error and closed.
    Refused(ErrorCode),
    /// The client ended its stream before a whole frame; the server closed without a word.
    ClosedSilently,
}

/// Runs one input as a client's bytes against a fresh server; panics on a broken property.
///
/// Input: byte 0 is the mode (bits 0-1 the shape: 0 raw bytes, 1 a length byte turned into a
/// 4-byte prefix before the rest, 2 a Login whose ids and token bytes the input picks, 3 a
/// valid Login; bit 2 an HMAC authenticator instead of dev mode; bit 3 the client stays
/// silent instead of closing its side; bits 4-5 the client's write size, see
/// [`WRITE_CHUNK_BYTES_CHOICES`]; bits 6-7 the server's frame limit, see
/// [`MAX_FRAME_BYTES_LOGIN_CHOICES`]).
///
/// Checks: the server's first answer is the one the protocol prescribes for the first frame
/// (LoginReply, or exactly one Error with the right code, or a silent close when the client
/// ended mid-frame); a connection without a valid login closes within the login timeout;
/// every frame the server sends is a valid server frame; the connection always closes; a
/// fresh login on a new connection then works; every session ends; nothing panics.
pub fn login(input: &[u8]) -> LoginOutcome {
    count_panics();
    let panics_before = PANICS.with(Cell::get);
    let input = LoginInput::parse(input);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    let outcome = runtime.block_on(async {
        tokio::time::timeout(LOGIN_RUN_TIMEOUT, run_login(&input, panics_before))
            .await
            .unwrap_or_else(|_| panic!("the login run hung for {LOGIN_RUN_TIMEOUT:?}"))
    });
    drop(runtime);
    let n_panics = PANICS.with(Cell::get) - panics_before;
    assert_eq!(n_panics, 0, "a server task panicked (message above)");
    outcome
}

/// A parsed login input; see [`login`].
struct LoginInput {
    max_frame_bytes: usize,
    auth: Authenticator,
    close_after_input: bool,
    write_chunk_bytes: usize,
    client_bytes: Vec<u8>,
}

impl LoginInput {
    fn parse(input: &[u8]) -> LoginInput {
        let (&mode, rest) = input.split_first().unwrap_or((&0, &[]));
        let auth = match mode & 0b100 {
            0 => Authenticator::Dev,
            _ => Authenticator::from_secret(Some(LOGIN_SECRET)),
        };
        let client_bytes = match mode & 0b11 {
            0 => rest.to_vec(),
            1 => {
                let (&length, rest) = rest.split_first().unwrap_or((&0, &[]));
                [&u32::from(length).to_be_bytes()[..], rest].concat()
            }
            2 => {
                let (choice, rest) = rest.split_first().unwrap_or((&0, &[]));
                let (&token_len, rest) = rest.split_first().unwrap_or((&0, &[]));
                let (token, rest) = rest.split_at(usize::from(token_len).min(rest.len()));
                let login = proto::Login {
                    user: ANY_USERS[usize::from(choice & 3)].into(),
                    device: ANY_DEVICES[usize::from((choice >> 2) & 3)].into(),
                    token: String::from_utf8_lossy(token).into_owned(),
                    heartbeat_interval_max_s: HEARTBEAT_INTERVALS_S[usize::from(choice >> 5)],
                    send_ack_is_copy: choice & 0b1_0000 != 0,
                };
                [
                    codec::encode_to_vec(&Frame::new(Body::Login(login))),
                    rest.to_vec(),
                ]
                .concat()
            }
            _ => {
                let (choice, rest) = rest.split_first().unwrap_or((&0, &[]));
                let user = GOOD_USERS[usize::from(choice & 3)];
                let login = proto::Login {
                    user: user.into(),
                    device: GOOD_DEVICES[usize::from((choice >> 2) & 3)].into(),
                    token: good_token(&auth, user),
                    heartbeat_interval_max_s: HEARTBEAT_INTERVALS_S[usize::from(choice >> 5)],
                    send_ack_is_copy: choice & 0b1_0000 != 0,
                };
                [
                    codec::encode_to_vec(&Frame::new(Body::Login(login))),
                    rest.to_vec(),
                ]
                .concat()
            }
        };
        LoginInput {
            max_frame_bytes: MAX_FRAME_BYTES_LOGIN_CHOICES[usize::from(mode >> 6)],
            auth,
            close_after_input: mode & 0b1000 == 0,
            write_chunk_bytes: WRITE_CHUNK_BYTES_CHOICES[usize::from((mode >> 4) & 3)],
            client_bytes,
        }
    }
}

/// A token `auth` accepts for `user` during the run.
fn good_token(auth: &Authenticator, user: &str) -> String {
    match auth {
        Authenticator::Dev => String::new(),
        Authenticator::Hmac { .. } => mint_token(LOGIN_SECRET, user, LOGIN_TOKEN_EXPIRY_UNIX_S)
            .expect("harness users are valid ids"),
    }
}

async fn run_login(input: &LoginInput, panics_before: u64) -> LoginOutcome {
    let config = ServerConfig {
        max_frame_bytes: input.max_frame_bytes,
        ..ServerConfig::default()
    };
    let (listener, connector) = memory::pair(4);
    let server = Arc::new(Server::new(
        config.clone(),
        ServerDeps {
            store: Arc::new(MemoryStore::new()) as Arc<dyn Store>,
            clock: Arc::new(TokioClock::new(LOGIN_EPOCH_UNIX_MS)),
            push: Arc::new(LoggingPushProvider),
            auth: input.auth.clone(),
        },
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = server.clone();
    let serving = tokio::spawn(async move {
        running
            .run(listener, async {
                let _ = stopped.await;
            })
            .await;
    });

    let outcome = fuzzed_connection(&connector, &config, input).await;
    fresh_login_works(&connector, &input.auth).await;

    let _ = stop.send(());
    serving.await.expect("Server::run ends after shutdown");
    // Before the counters: a panicked session task also leaves them wrong.
    let n_panics = PANICS.with(Cell::get) - panics_before;
    assert_eq!(n_panics, 0, "a server task panicked (message above)");
    let n_open = server.counters().connections_open.load(Ordering::Relaxed);
    assert_eq!(n_open, 0, "sessions still open after shutdown");
    assert_eq!(
        server.n_sessions(),
        0,
        "sessions still registered after shutdown"
    );
    outcome
}

/// The answer the protocol prescribes for the client's first frame.
fn expected_outcome(input: &LoginInput, config: &ServerConfig) -> LoginOutcome {
    let first = match codec::decode(&input.client_bytes, config.max_frame_bytes) {
        Err(CodecError::FrameTooLarge { .. }) => {
            return LoginOutcome::Refused(ErrorCode::FrameTooLarge);
        }
        Err(_) => return LoginOutcome::Refused(ErrorCode::BadFrame),
        Ok(Decoded::Incomplete { .. }) if input.close_after_input => {
            return LoginOutcome::ClosedSilently;
        }
        Ok(Decoded::Incomplete { .. }) => return LoginOutcome::Refused(ErrorCode::LoginTimeout),
        Ok(Decoded::Frame { frame, .. }) => frame,
    };
    let Some(Body::Login(login)) = first.body else {
        return LoginOutcome::Refused(ErrorCode::NotLoggedIn);
    };
    if validate_id("user", &login.user).is_err() || validate_id("device", &login.device).is_err() {
        return LoginOutcome::Refused(ErrorCode::InvalidRequest);
    }
    let now_unix_s = LOGIN_EPOCH_UNIX_MS / 1_000;
    match input.auth.verify(&login.token, &login.user, now_unix_s) {
        Ok(()) => LoginOutcome::LoggedIn,
        Err(AuthError::Expired { .. }) => LoginOutcome::Refused(ErrorCode::TokenExpired),
        Err(_) => LoginOutcome::Refused(ErrorCode::AuthFailed),
    }
}

/// Writes the input on a fresh connection while reading the answers until the server closes,
/// and checks them against [`expected_outcome`].
async fn fuzzed_connection(
    connector: &MemoryConnector,
    config: &ServerConfig,
    input: &LoginInput,
) -> LoginOutcome {
    let expected = expected_outcome(input, config);
    let opened_at = Instant::now();
    let stream = connector.connect().await.expect("the server is listening");
    let (read_half, mut write_half) = tokio::io::split(stream);
    let client_bytes = input.client_bytes.clone();
    let (write_chunk_bytes, close_after_input) = (input.write_chunk_bytes, input.close_after_input);
    let writing = tokio::spawn(async move {
        for piece in client_bytes.chunks(write_chunk_bytes) {
            if write_half.write_all(piece).await.is_err() {
                break; // The server closed; the rest is moot.
            }
            tokio::task::yield_now().await;
        }
        if close_after_input {
            let _ = write_half.shutdown().await;
        }
        write_half // A silent client keeps its side open until the server closes.
    });
    let mut reader = FrameReader::new(read_half, config.max_frame_bytes);
    let mut bodies = Vec::new();
    let closed_at = loop {
        match reader.next().await {
            Ok(Some(frame)) => bodies.push(frame.body.expect("the decoder checks bodies")),
            Ok(None) => break Instant::now(),
            Err(error) => panic!("the server sent a bad byte stream: {error}; before: {bodies:?}"),
        }
    };
    drop(writing.await.expect("the client writer does not panic"));
    let open_for = closed_at - opened_at;
    let flush = config.close_flush_timeout;
    match expected {
        LoginOutcome::LoggedIn => {
            let Some(Body::LoginReply(reply)) = bodies.first() else {
                panic!("expected a login reply first, got {bodies:?}")
            };
            let login = first_login(&input.client_bytes);
            let heartbeat = Duration::from_secs(login.heartbeat_interval_max_s.into())
                .clamp(config.heartbeat_interval_min, config.heartbeat_interval_max);
            assert_eq!(
                u64::from(reply.idle_timeout_s),
                heartbeat.mul_f64(1.5).as_secs()
            );
            for body in &bodies[1..] {
                check_server_body(body);
            }
            let close_by = match close_after_input {
                true => flush,
                false => heartbeat.mul_f64(1.5) + flush,
            };
            assert!(
                open_for <= close_by,
                "open for {open_for:?}, over {close_by:?}"
            );
        }
        LoginOutcome::Refused(code) => {
            let [Body::Error(error)] = bodies.as_slice() else {
                panic!("expected exactly one {code:?} error, got {bodies:?}")
            };
            assert_eq!(error.code(), code, "wrong error: {error:?}");
            assert!(!error.text.is_empty(), "{code:?} without a text");
            let (after, by) = match code {
                ErrorCode::LoginTimeout => (config.login_timeout, config.login_timeout + flush),
                _ => (Duration::ZERO, flush),
            };
            assert!(
                after <= open_for && open_for <= by,
                "{code:?} closed after {open_for:?}"
            );
        }
        LoginOutcome::ClosedSilently => {
            assert!(bodies.is_empty(), "expected a silent close, got {bodies:?}");
            assert!(open_for < config.login_timeout, "closed after {open_for:?}");
        }
    }
    expected
}

/// The first frame of bytes already known to start with a whole Login.
fn first_login(client_bytes: &[u8]) -> proto::Login {
    match codec::decode(client_bytes, u32::MAX as usize) {
        Ok(Decoded::Frame {
            frame: Frame {
                body: Some(Body::Login(login)),
            },
            ..
        }) => login,
        other => panic!("no login at the front: {other:?}"),
    }
}

/// A frame a server may send after the login reply.
fn check_server_body(body: &Body) {
    match body {
        Body::Pong(_)
        | Body::SendAck(_)
        | Body::NotifyData(_)
        | Body::Notify(_)
        | Body::SyncResponse(_)
        | Body::GroupReply(_)
        | Body::Kick(_) => {}
        Body::Error(error) => assert!(!error.text.is_empty(), "an error without text: {error:?}"),
        other => panic!("the server sent a client frame: {other:?}"),
    }
}

/// The server survived: a new connection logs in, gets a pong, and closes cleanly.
async fn fresh_login_works(connector: &MemoryConnector, auth: &Authenticator) {
    let stream = connector.connect().await.expect("the server is listening");
    let (read_half, write_half) = tokio::io::split(stream);
    let mut reader = FrameReader::new(read_half, DEFAULT_MAX_FRAME_BYTES);
    let mut writer = FrameWriter::new(write_half, DEFAULT_MAX_FRAME_BYTES);
    let login = proto::Login {
        user: "survivor".into(),
        device: "check".into(),
        token: good_token(auth, "survivor"),
        heartbeat_interval_max_s: 60,
        send_ack_is_copy: false,
    };
    let sent = writer.send(&Frame::new(Body::Login(login))).await;
    sent.expect("a fresh connection takes a login");
    let reply = next_reply(&mut reader).await;
    assert!(
        matches!(reply, Some(Body::LoginReply(_))),
        "after the fuzzed connection, a fresh login got {reply:?}"
    );
    let ping = Frame::new(Body::Ping(proto::Ping { id: 7 }));
    writer.send(&ping).await.expect("the session reads");
    let pong = next_reply(&mut reader).await;
    assert!(
        matches!(pong, Some(Body::Pong(proto::Pong { id: 7, .. }))),
        "after the fuzzed connection, a ping got {pong:?}"
    );
    writer.shutdown().await.expect("the pipe is open");
    let after = next_reply(&mut reader).await;
    assert_eq!(after, None, "the server did not close after the client did");
}

/// The next frame that is not a push (the fuzzed session may have sent "survivor" messages).
async fn next_reply<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> Option<Body> {
    loop {
        match reader.next().await {
            Ok(Some(Frame {
                body: Some(Body::NotifyData(_) | Body::Notify(_)),
            })) => {}
            Ok(Some(frame)) => return frame.body,
            Ok(None) => return None,
            Err(error) => panic!("the server sent a bad byte stream: {error}"),
        }
    }
}

thread_local! {
    /// Panics seen on this thread (a current-thread runtime runs the server's tasks here).
    static PANICS: Cell<u64> = const { Cell::new(0) };
}

/// Counts panics per thread: tokio catches a panicking task's panic, so a server task could
/// otherwise die unseen. The previous hook still runs (libFuzzer's aborts).
fn count_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = PANICS.try_with(|n| n.set(n.get() + 1));
            previous(info);
        }));
    });
}

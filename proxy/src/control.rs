//! The control API: a small HTTP/1.1 server speaking JSON, and its client (`imlab proxy
//! ctl`). One request per connection (`Connection: close`); request heads and bodies are
//! bounded, and so are concurrent control connections.
//!
//! - `GET /flows`: the profile, fault windows and every live flow (NAT state, idle time,
//!   bytes, the model's decisions).
//! - `POST /faults` with `{"kind": "latency_spike", "for": "30s", "added": "300ms"}`: a
//!   carrier fault of imlab-carrier's vocabulary (`imlab_carrier::fault`, the words and keys
//!   of a scenario's `[[faults]]`), applied now: `outage`, `partition`, `handover` and every
//!   carrier-scope kind (`latency_spike`, `bandwidth`, `loss_burst`, `reset`, `blackhole`,
//!   `slow_close`, `close_after_bytes`, `nat_rebind`, `max_age`). `for` is model time; the
//!   instant kinds (`handover`, `reset`, `nat_rebind`) take none. With `"at": "5m"` the fault
//!   is scheduled for that model time since the proxy started (at most 1,024 pending).
//! - `PUT /profile?name=NAME` with a TOML carrier table as the body (the keys of a scenario's
//!   `[carriers.X]`, e.g. `preset = "cu-2g"`): later decisions use it; a flow keeps the NAT
//!   timeout it drew when it opened.
//! - `POST /reset`: resets every flow (both sides) and forgets all fault windows and every
//!   scheduled fault.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use imlab_carrier::CarrierTable;
use imlab_carrier::fault::FaultParams;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::proxy::{FlowCommand, Shared, profile_json};
use crate::schedule::{self, ProxyFault, ScheduledFault};

/// Bytes of a request head at most.
const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Bytes of a request body at most.
const BODY_BYTES_MAX: usize = 64 * 1024;
/// Control connections served at once; more are closed at once.
const CONNECTIONS_MAX: usize = 16;
/// A request must arrive within this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of an answer [`request`] reads at most: `GET /flows` took 64,902 bytes for 200 flows
/// (measured), about 3.2 MB at 10,000 (the most a process's files allow).
pub const ANSWER_BYTES_MAX: usize = 16 << 20;

/// Serves the control API on `listener`.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = handle(&shared, stream).await;
        });
    }
}

async fn handle(shared: &Arc<Shared>, mut stream: TcpStream) -> std::io::Result<()> {
    let request = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await;
    let (status, body) = match request {
        Ok(Ok((method, target, body))) => route(shared, &method, &target, &body),
        Ok(Err(message)) => (400, json!({ "error": message })),
        Err(_) => (408, json!({ "error": "request not received in time" })),
    };
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads one request: method, target, body.
async fn read_request(stream: &mut TcpStream) -> Result<(String, String, Vec<u8>), String> {
    let mut buffer = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buffer.len() > HEAD_BYTES_MAX {
            return Err(format!("request head over {HEAD_BYTES_MAX} bytes"));
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the request head ended".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(|_| "request head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_string();
    let target = request_line.next().unwrap_or("").to_string();
    let mut content_length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = value
                .trim()
                .parse()
                .map_err(|_| format!("bad Content-Length {:?}", value.trim()))?;
        }
    }
    if content_length > BODY_BYTES_MAX {
        return Err(format!(
            "body of {content_length} bytes is over {BODY_BYTES_MAX}"
        ));
    }
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < content_length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the body ended".into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(content_length);
    Ok((method, target, body))
}

fn route(shared: &Arc<Shared>, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let result = match (method, path) {
        ("GET", "/flows") => Ok(list(shared)),
        ("POST", "/faults") => fault(shared, body),
        ("PUT", "/profile") => profile(shared, query, body),
        ("POST", "/reset") => Ok(json!({ "flows_reset": reset_all(shared) })),
        (_, "/flows" | "/faults" | "/profile" | "/reset") => {
            return (
                405,
                json!({ "error": format!("{method} is not allowed on {path}") }),
            );
        }
        _ => return (404, json!({ "error": format!("no such endpoint {path}") })),
    };
    match result {
        Ok(value) => (200, value),
        Err(message) => (400, json!({ "error": message })),
    }
}

fn list(shared: &Shared) -> Value {
    let now = shared.now();
    let state = shared.lock();
    let windows = |windows: &[(Duration, Duration)]| -> Vec<[u64; 2]> {
        windows
            .iter()
            .map(|(start, end)| [start.as_millis() as u64, end.as_millis() as u64])
            .collect()
    };
    let flows: Vec<Value> = state
        .flows
        .values()
        .map(|entry| {
            let mut view = entry.view.clone();
            view.idle_ms = now.saturating_sub(entry.last_refresh).as_millis() as u64;
            serde_json::to_value(view).expect("a flow view serializes")
        })
        .collect();
    json!({
        "now_ms": now.as_millis() as u64,
        "time_scale": shared.time_scale,
        "seed": shared.seed,
        "profile": profile_json(&state.profile),
        "outages_ms": windows(&state.blocked.outages),
        "partitions_ms": windows(&state.blocked.partitions),
        "link_faults": state.blocked.link.iter().map(|window| json!({
            "kind": window.fault.name(),
            "start_ms": window.start.as_millis() as u64,
            "end_ms": window.end.as_millis() as u64,
        })).collect::<Vec<_>>(),
        "flows_refused": state.flows_refused,
        "trace_lines_dropped": shared.trace.as_ref().map_or(0, |trace| trace.dropped()),
        "flows": flows,
    })
}

fn fault(shared: &Arc<Shared>, body: &[u8]) -> Result<Value, String> {
    let mut request: serde_json::Map<String, Value> = serde_json::from_slice(body)
        .map_err(|error| format!("body is not a JSON object: {error}"))?;
    let kind = request
        .remove("kind")
        .and_then(|kind| kind.as_str().map(str::to_string))
        .ok_or("key `kind` (a carrier fault: outage, partition, handover, latency_spike, ...) is missing")?;
    let duration = duration_key(&mut request, "for")?;
    let at = duration_key(&mut request, "at")?;
    let params: FaultParams = serde_json::from_value(Value::Object(request))
        .map_err(|error| format!("fault parameters: {error}"))?;
    let fault = ProxyFault::parse(&kind, &params)?;
    let duration = fault.check_duration(duration)?;
    let now = shared.now();
    match at {
        // Model time since the proxy started; a time already past applies now.
        Some(at) if at > now => {
            let pending = shared.scheduled.load(Ordering::Relaxed);
            if pending >= SCHEDULED_MAX {
                return Err(format!(
                    "{pending} faults are already scheduled, at most {SCHEDULED_MAX}: wait for \
                     some to happen, or POST /reset to forget them"
                ));
            }
            shared.scheduled.fetch_add(1, Ordering::Relaxed);
            let scheduled = vec![ScheduledFault {
                fault,
                at,
                every: None,
                duration,
                until: at + Duration::from_nanos(1),
            }];
            let handle = schedule::schedule(shared, scheduled)?;
            let counter = shared.clone();
            tokio::spawn(async move {
                let _ = handle.await;
                counter.scheduled.fetch_sub(1, Ordering::Relaxed);
            });
            Ok(json!({
                "t_ms": now.as_millis() as u64, "event": "scheduled", "kind": fault.name(),
                "at_ms": at.as_millis() as u64,
                "for_ms": (!fault.is_instant()).then_some(duration.as_millis() as u64),
            }))
        }
        _ => Ok(schedule::apply(shared, fault, None, duration)),
    }
}

/// Faults scheduled through the control API and not yet applied, at most.
const SCHEDULED_MAX: usize = 1_024;

/// A duration key of a request (`"30s"`), removed from it.
fn duration_key(
    request: &mut serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<Duration>, String> {
    let Some(text) = request.remove(key) else {
        return Ok(None);
    };
    let text = text
        .as_str()
        .ok_or_else(|| format!("key `{key}` must be a duration string like \"30s\""))?;
    humantime::parse_duration(text)
        .map(Some)
        .map_err(|error| format!("key `{key}`: {text:?}: {error}"))
}

fn profile(shared: &Shared, query: &str, body: &[u8]) -> Result<Value, String> {
    let name = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("name="))
        .unwrap_or("control");
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8")?;
    let table: CarrierTable =
        toml::from_str(text).map_err(|error| format!("carrier table: {error}"))?;
    let profile = table
        .into_profile(name)
        .map_err(|error| format!("carrier table: {error}"))?;
    let described = profile_json(&profile);
    shared.lock().profile = Arc::new(profile);
    shared.log(json!({
        "t_ms": shared.now().as_millis() as u64, "event": "profile", "profile": described.clone(),
    }));
    Ok(json!({ "profile": described }))
}

/// Resets every flow and forgets the fault windows; returns how many flows were reset.
pub(crate) fn reset_all(shared: &Shared) -> usize {
    let mut state = shared.lock();
    shared.generation.fetch_add(1, Ordering::SeqCst);
    state.blocked = imlab_carrier::Blocked::default();
    for entry in state.flows.values_mut() {
        entry.command = Some(FlowCommand::Reset);
        entry.poke.notify_one();
    }
    state.flows.len()
}

/// A control API call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The proxy could not be reached or hung up.
    #[error("control API at {addr}: {source}")]
    Io {
        /// The control address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The proxy answered with an error.
    #[error("control API at {addr} answered {status}: {body}")]
    Status {
        /// The control address.
        addr: String,
        /// HTTP status.
        status: u16,
        /// The answer's body.
        body: String,
    },
}

/// Sends one request to the control API at `addr`; the JSON answer of a 200.
pub async fn request(
    addr: &str,
    method: &str,
    target: &str,
    body: &[u8],
) -> Result<Value, ControlError> {
    let io = |source| ControlError::Io {
        addr: addr.to_string(),
        source,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut answer = Vec::new();
        stream
            .take(ANSWER_BYTES_MAX as u64 + 1)
            .read_to_end(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(answer)
    };
    // A wrong address that takes the connection and never answers, or answers without end,
    // fails the request rather than hanging it or filling memory.
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no whole answer within {REQUEST_TIMEOUT:?}"),
            ))
        })?
        .map_err(io)?;
    if answer.len() > ANSWER_BYTES_MAX {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("an answer of more than {ANSWER_BYTES_MAX} bytes"),
        )));
    }
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    if status != 200 {
        return Err(ControlError::Status {
            addr: addr.to_string(),
            status,
            body: body.to_string(),
        });
    }
    serde_json::from_str(body).map_err(|error| ControlError::Io {
        addr: addr.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
    })
}

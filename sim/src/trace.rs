//! The trace: every observable event of a run, in simulated time, folded into one hash.
//!
//! Events are hashed as they happen (xxh3 over the derived `Hash` of each event, a stable
//! encoding for a given build) so that the hash costs little even at millions of events;
//! with `--trace FILE` they are also written as JSON Lines. The same scenario and seed must
//! give the same hash: anything else is non-determinism, a bug.

use std::hash::{Hash, Hasher};
use std::io::Write;

use serde::Serialize;
use xxhash_rust::xxh3::Xxh3Default;

/// One observable event.
#[derive(Debug, Clone, Hash, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A scheduled fault started or ended.
    Fault {
        /// What.
        what: String,
    },
    /// A carrier proxy accepted a device's connection.
    FlowOpened {
        /// Carrier index.
        carrier: u32,
        /// Flow id within the carrier.
        flow: u64,
        /// Device index.
        device: u32,
        /// "im" or "push".
        target: &'static str,
    },
    /// Bytes crossed a carrier link.
    Frame {
        /// Carrier index.
        carrier: u32,
        /// Flow id.
        flow: u64,
        /// True for phone to server.
        up: bool,
        /// Bytes.
        bytes: u32,
    },
    /// A NAT mapping expired while both ends still held the connection.
    NatExpired {
        /// Carrier index.
        carrier: u32,
        /// Flow id.
        flow: u64,
        /// Device index.
        device: u32,
    },
    /// Something ended a flow's phone side or server side.
    FlowEnded {
        /// Carrier index.
        carrier: u32,
        /// Flow id.
        flow: u64,
        /// "phone", "server".
        side: &'static str,
        /// Why.
        why: &'static str,
    },
    /// A device's client core logged in.
    Connected {
        /// Device index.
        device: u32,
    },
    /// A device's connection ended.
    Disconnected {
        /// Device index.
        device: u32,
        /// The client's cause.
        cause: String,
    },
    /// A device processed a message.
    Delivered {
        /// Device index.
        device: u32,
        /// Inbox seq.
        seq: u64,
        /// Server-wide message id.
        msg_id: u64,
    },
    /// The app queued a message.
    SendQueued {
        /// Device index.
        device: u32,
        /// Client message id.
        client_msg_id: String,
    },
    /// The server acked a send.
    Acked {
        /// Device index.
        device: u32,
        /// Client message id.
        client_msg_id: String,
        /// Sender inbox seq.
        seq: u64,
    },
    /// A heartbeat was sent or answered.
    Heartbeat {
        /// Device index.
        device: u32,
        /// False when sent, true when answered.
        answered: bool,
    },
    /// The server asked the push service to wake a user.
    Push {
        /// User index.
        user: u32,
        /// Inbox seq.
        seq: u64,
    },
    /// A wake-up reached a device over its push channel.
    WakeUp {
        /// Device index.
        device: u32,
    },
    /// An app was killed or restarted, or changed state.
    App {
        /// Device index.
        device: u32,
        /// What happened.
        what: String,
    },
    // New variants go last: the derived Hash includes each variant's index, so a variant
    // inserted above would change every trace hash.
    /// A carrier fault changed a flow without ending it (a NAT rebind, a blackhole).
    FlowFault {
        /// Carrier index.
        carrier: u32,
        /// Flow id.
        flow: u64,
        /// Device index.
        device: u32,
        /// The fault kind.
        fault: &'static str,
    },
}

/// Accumulates the hash and, optionally, the JSON Lines file.
pub struct Trace {
    hasher: Xxh3Default,
    n_events: u64,
    out: Option<std::io::BufWriter<std::fs::File>>,
    write_error: Option<String>,
}

#[derive(Serialize)]
struct Line<'a> {
    at_ms: u64,
    #[serde(flatten)]
    event: &'a Event,
}

impl Trace {
    /// A trace that only hashes.
    pub fn new() -> Trace {
        Trace {
            hasher: Xxh3Default::new(),
            n_events: 0,
            out: None,
            write_error: None,
        }
    }

    /// A trace that also writes JSON Lines to `file`.
    pub fn to_file(file: &std::path::Path) -> std::io::Result<Trace> {
        let mut trace = Trace::new();
        trace.out = Some(std::io::BufWriter::new(std::fs::File::create(file)?));
        Ok(trace)
    }

    /// Records one event at simulated time `at_ms`.
    pub fn record(&mut self, at_ms: u64, event: Event) {
        at_ms.hash(&mut self.hasher);
        event.hash(&mut self.hasher);
        self.n_events += 1;
        if let Some(out) = &mut self.out {
            let line = Line {
                at_ms,
                event: &event,
            };
            let result = serde_json::to_writer(&mut *out, &line)
                .map_err(|e| e.to_string())
                .and_then(|()| out.write_all(b"\n").map_err(|e| e.to_string()));
            if let Err(error) = result {
                self.write_error.get_or_insert(error);
                self.out = None;
            }
        }
    }

    /// The hash so far, as 16 hex digits.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.hasher.finish())
    }

    /// Events recorded.
    pub fn n_events(&self) -> u64 {
        self.n_events
    }

    /// Flushes the file, reporting any write error seen on the way.
    pub fn finish(&mut self) -> Result<(), String> {
        if let Some(out) = &mut self.out
            && let Err(error) = out.flush()
        {
            self.write_error.get_or_insert(error.to_string());
        }
        match self.write_error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl Default for Trace {
    fn default() -> Self {
        Trace::new()
    }
}

//! A connection's cursor writes (DeviceAck), kept off the reader's path and coalesced.
//!
//! A cursor is advisory: a device that reconnects syncs from its own last seq and drops what
//! it already has by seq; the server reads the cursor only as the starting point of the
//! NotifyData ack check. So the reader does not wait for a cursor write before the next
//! frame: on a durable store every write waits for a commit (an fsync), and a reader held
//! there for each DeviceAck capped a connection at a few hundred frames a second. At most one
//! write is in flight per connection; acks that arrive meanwhile only raise the seq the next
//! write carries, so a burst of acks costs one write.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;

use super::Shared;
use crate::store::StoreError;

type CursorWrite<'a> = Pin<Box<dyn Future<Output = Result<u64, StoreError>> + Send + 'a>>;

/// The cursor write in flight, if any, and the highest seq the device has acked.
#[derive(Default)]
pub(crate) struct CursorAcks<'a> {
    in_flight: Option<CursorWrite<'a>>,
    submitted_seq: u64,
    wanted_seq: u64,
}

impl<'a> CursorAcks<'a> {
    /// The device acked `seq`.
    pub fn want(&mut self, seq: u64) {
        self.wanted_seq = self.wanted_seq.max(seq);
    }

    /// Starts a write of the highest acked seq unless one is in flight or nothing is new.
    /// The write is polled once at once, so it is submitted to the store now (a store that
    /// answers at once, the in-memory one, is done here); `acked_seq` gets the result.
    pub fn start(
        &mut self,
        shared: &'a Shared,
        user: &'a str,
        device: &'a str,
        acked_seq: &AtomicU64,
    ) -> Result<(), StoreError> {
        if self.in_flight.is_some() || self.wanted_seq <= self.submitted_seq {
            return Ok(());
        }
        self.submitted_seq = self.wanted_seq;
        let mut write = shared.store.ack_cursor(user, device, self.wanted_seq);
        match (&mut write).now_or_never() {
            Some(result) => {
                acked_seq.fetch_max(result?, Ordering::Relaxed);
            }
            None => self.in_flight = Some(write),
        }
        Ok(())
    }

    /// Waits for the write in flight (forever when none is); cancel-safe, the write stays
    /// in flight. Returns its result, with the write done.
    pub async fn finished(&mut self) -> Result<u64, StoreError> {
        let Some(write) = self.in_flight.as_mut() else {
            return std::future::pending().await;
        };
        let result = write.await;
        self.in_flight = None;
        result
    }
}

//! The carrier model inside a client process: no listener, no second socket. A client's
//! connector asks [`Proxy::connect_inline`] for a connection; the proxy opens the real one to
//! the server (after the model's SYN delay) and hands back an [`InlineStream`], an in-memory
//! pipe whose other end a flow relays through the same model, rules and trace as a proxied
//! connection's. A reset reaches the client as `ConnectionReset`, as a RST would.

use std::io;
use std::task::{Context, Poll};

use imlab_carrier::flow_seed;
use tokio::net::TcpStream;

use crate::flow::{self, Endpoint};
use crate::pipe::{PipeEnd, pipe};
use crate::proxy::Proxy;

/// The client's end of an inline flow: reads what the flow delivers, writes what it relays;
/// after the flow resets it, reads and writes fail with `ConnectionReset`.
pub type InlineStream = PipeEnd;

/// Bytes the in-memory pipe buffers each way; past that its writer waits, as on a full
/// socket buffer. The model's own in-flight bound applies beyond it.
const PIPE_BYTES: usize = 64 * 1024;

/// The pipe says when bytes wait: an idle flow holds no read buffer on the phone's side.
impl crate::flow::ReadSide for PipeEnd {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_ready(cx)
    }
}

/// The relay's end of an inline flow: the phone side of the model.
impl Endpoint for PipeEnd {
    type Read = PipeEnd;
    type Write = PipeEnd;

    fn split(self) -> (PipeEnd, PipeEnd) {
        PipeEnd::split(self)
    }

    /// The client's next read or write fails with `ConnectionReset`.
    fn reset(read: PipeEnd, write: PipeEnd) {
        read.reset(Some(write));
    }
}

impl Proxy {
    /// Opens a flow for an in-process client: `identity` (say, the client's number and its
    /// count of connections) seeds the flow's RNG, so the same client's n-th connection
    /// draws the same NAT timeout and delays in every run with the same seed; `name` labels
    /// it in the control API and the trace. `connect` opens the real connection to the
    /// server; it runs once the model's SYN arrives. Fails as that connection fails, or at
    /// the proxy's `flows_max` bound.
    pub async fn connect_inline(
        &self,
        identity: &[u64],
        name: String,
        connect: impl Future<Output = io::Result<TcpStream>>,
    ) -> io::Result<InlineStream> {
        let shared = self.shared.clone();
        let Some((id, poke)) = shared.register_flow(name) else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the carrier model's flow limit is reached",
            ));
        };
        let seed = flow_seed(shared.seed, identity);
        let (model, upstream) = flow::open(&shared, id, seed, connect).await?;
        let (client, phone) = pipe(PIPE_BYTES);
        tokio::spawn(flow::relay(
            shared,
            id,
            model,
            phone,
            upstream,
            poke,
            bytes::Bytes::new(),
        ));
        Ok(client)
    }
}

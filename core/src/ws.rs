//! imlab over WebSocket (RFC 6455): [`WsListener`] for the server, [`WsConnector`] for the
//! client, each layered over any other seam (TCP, or TLS for `wss`), through tokio-tungstenite.
//!
//! The mapping: one binary WebSocket message carries exactly one `Frame`'s protobuf bytes,
//! without the 4-byte length prefix of the TCP framing (WebSocket frames its messages
//! itself). The frame limit applies to the message: a longer message is refused before it is
//! buffered. Text messages are a protocol error. The subprotocol is `imlab`
//! ([`IMLAB_SUBPROTOCOL`]): a client that offers subprotocols must offer it; one that offers
//! none is served too.
//!
//! The cores keep speaking length-prefixed frames over a byte stream: [`WsStream`] turns each
//! incoming message into a prefixed frame for the reader and cuts what the writer writes back
//! into one message per frame. So the server core runs unchanged behind the [`Listener`]
//! seam, and the WebSocket handshake, like TLS's, runs in the connection's own task, bounded
//! by the login timeout.
//!
//! The client side can also carry a plain byte stream instead ([`WsFraming::Bytes`], MQTT
//! over WebSocket as its specification says: packets in binary messages, a message may hold
//! part of a packet or several).
//!
//! Wrong-protocol peers fail clearly: a client that speaks imlab's plain framing to a
//! WebSocket port gets an Error frame saying so in its own framing; a WebSocket client that
//! reaches a port not speaking HTTP says the server is not a WebSocket server.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Sink, Stream as _};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::{
    Response as ClientResponse, generate_request,
};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::codec::LENGTH_PREFIX_BYTES;
use crate::net::{Connector, Listener, Stream};

/// The subprotocol name of imlab's frames over WebSocket.
pub const IMLAB_SUBPROTOCOL: &str = "imlab";

/// The text of the Error frame a WebSocket server sends a client that spoke plain frames.
pub const NOT_WEBSOCKET_REFUSAL: &str = "this port speaks imlab over WebSocket: the connection \
     did not start with an HTTP upgrade (connect with a WebSocket client, or use the TCP port)";

const HEADER_PROTOCOL: &str = "sec-websocket-protocol";

/// Bytes a WebSocket connection reads from its stream at most at a time, on the server and on
/// the client alike: the read buffer made when bytes come (vendored tungstenite lets it go when
/// a read finds nothing, so an idle connection holds none). tungstenite's default is 128 KiB,
/// allocated for every connection and zeroed up to that on each read: 137 KB of RSS a
/// connection at 10,000 connections, on the server and in the load generator alike (`WS=1
/// bench/conn-memory.sh`), where mosquitto's WebSocket listener holds about 6 KB. A device's
/// frames are a few hundred bytes, so a read rarely finds more; a message longer than this is
/// still read whole: the buffer grows to the message's length (at most the frame limit) and is
/// read into a chunk at a time.
pub const WS_READ_CHUNK_BYTES: usize = 1024;

/// Bytes of a server's answer to a client's upgrade request read at most at a time.
const UPGRADE_READ_BYTES: usize = 1024;

/// The most a server's answer to an upgrade (its head, and the body of a refusal) may take:
/// what tungstenite's own handshake accepts.
const UPGRADE_ANSWER_BYTES_MAX: usize = 64 * 1024;

/// The most of a refusal's body read to show it.
const REFUSAL_BODY_BYTES_MAX: usize = 4 * 1024;

/// The limits both ends of a WebSocket connection apply: no message (and no WebSocket frame)
/// beyond the frame limit is buffered, and reads go `read_chunk_bytes` at a time.
fn config(max_frame_bytes: usize, read_chunk_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
        .read_buffer_size(read_chunk_bytes)
}

/// How the bytes of a byte stream travel in WebSocket messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WsFraming {
    /// imlab's: one binary message per length-prefixed frame, without its prefix.
    #[default]
    Frames,
    /// A plain byte stream (MQTT over WebSocket): what is written at once goes in one binary
    /// message, and messages are read back to back; a packet may span messages.
    Bytes,
}

/// A WebSocket connection as a byte stream: the length-prefixed frames the cores speak, or
/// plain bytes ([`WsFraming`]).
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    max_frame_bytes: usize,
    framing: WsFraming,
    /// Frames received, prefixed, not yet read.
    incoming: BytesMut,
    /// Bytes written that do not make a whole frame yet (at most one frame's worth).
    outgoing: BytesMut,
}

impl<S> fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsStream").finish_non_exhaustive()
    }
}

fn ws_error(error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => error,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, error.to_string())
        }
        other => io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {other}")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    fn new(ws: WebSocketStream<S>, max_frame_bytes: usize, framing: WsFraming) -> WsStream<S> {
        WsStream {
            ws,
            max_frame_bytes,
            framing,
            incoming: BytesMut::new(),
            outgoing: BytesMut::new(),
        }
    }

    /// Sends every whole frame written so far as one binary message each. Ready once none is
    /// left; pending while the WebSocket cannot take one.
    fn poll_send_frames(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.framing == WsFraming::Bytes {
            if self.outgoing.is_empty() {
                return Poll::Ready(Ok(()));
            }
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_error)?;
            // Taken whole; its allocation goes with the message (an idle connection holds
            // none).
            let payload = std::mem::take(&mut self.outgoing).freeze();
            Pin::new(&mut self.ws)
                .start_send(Message::Binary(payload))
                .map_err(ws_error)?;
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.outgoing.len() < LENGTH_PREFIX_BYTES {
                return Poll::Ready(Ok(()));
            }
            let declared = u32::from_be_bytes([
                self.outgoing[0],
                self.outgoing[1],
                self.outgoing[2],
                self.outgoing[3],
            ]) as usize;
            if declared > self.max_frame_bytes {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "frame of {declared} bytes exceeds the limit of {} bytes",
                        self.max_frame_bytes
                    ),
                )));
            }
            if self.outgoing.len() < LENGTH_PREFIX_BYTES + declared {
                return Poll::Ready(Ok(()));
            }
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_error)?;
            self.outgoing.advance(LENGTH_PREFIX_BYTES);
            let payload = if self.outgoing.len() == declared {
                // The last whole frame: its allocation goes with the message.
                std::mem::take(&mut self.outgoing).freeze()
            } else {
                self.outgoing.split_to(declared).freeze()
            };
            Pin::new(&mut self.ws)
                .start_send(Message::Binary(payload))
                .map_err(ws_error)?;
        }
    }

    /// Takes one binary message as a prefixed frame.
    fn take_message(&mut self, payload: &Bytes) -> io::Result<()> {
        if payload.len() > self.max_frame_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "WebSocket message of {} bytes exceeds the frame limit of {} bytes",
                    payload.len(),
                    self.max_frame_bytes
                ),
            ));
        }
        if self.framing == WsFraming::Bytes {
            self.incoming.extend_from_slice(payload);
            return Ok(());
        }
        self.incoming.reserve(LENGTH_PREFIX_BYTES + payload.len());
        self.incoming.put_u32(payload.len() as u32);
        self.incoming.put_slice(payload);
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.incoming.is_empty() {
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(payload))) => this.take_message(&payload)?,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text message: the protocol travels in binary messages",
                    )));
                }
                // Pings are answered by tungstenite itself; pongs need nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(error)) => return Poll::Ready(Err(ws_error(error))),
            }
        }
        let n = buf.remaining().min(this.incoming.len());
        buf.put_slice(&this.incoming[..n]);
        this.incoming.advance(n);
        if this.incoming.is_empty() {
            // Read out: an idle connection holds no buffer of its own, whatever its largest
            // message was.
            this.incoming = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_send_frames(cx))?;
        // Only a partial frame (or, carrying bytes, nothing) is buffered now: there is room
        // for at least one more byte.
        let room = match this.framing {
            WsFraming::Frames => LENGTH_PREFIX_BYTES + this.max_frame_bytes - this.outgoing.len(),
            WsFraming::Bytes => this.max_frame_bytes - this.outgoing.len(),
        };
        let n = room.min(data.len());
        this.outgoing.extend_from_slice(&data[..n]);
        // Hand over what is whole now; if the socket is busy, flush will finish the job.
        if let Poll::Ready(Err(error)) = this.poll_send_frames(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send_frames(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send_frames(cx))?;
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(ws_error(error))),
        }
    }
}

/// A stream whose first bytes were already read: they are read again first.
pub struct Replayed<S> {
    head: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.head.has_remaining() {
            let n = buf.remaining().min(self.head.len());
            buf.put_slice(&self.head[..n]);
            self.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts WebSocket connections over the streams of `L` (TCP, or TLS for `wss`); the
/// upgrade runs in each connection's task (see the module notes).
pub struct WsListener<L> {
    inner: L,
    max_frame_bytes: usize,
}

impl<L: Listener> WsListener<L> {
    /// WebSocket over the connections `inner` accepts; messages of at most
    /// `max_frame_bytes` (the server's frame limit).
    pub fn new(inner: L, max_frame_bytes: usize) -> WsListener<L> {
        WsListener {
            inner,
            max_frame_bytes,
        }
    }
}

/// The server side of one WebSocket upgrade, as [`WsListener`] hands it over.
pub type WsHandshake<S> = Pin<Box<dyn Future<Output = io::Result<WsStream<Replayed<S>>>> + Send>>;

impl<L: Listener> Listener for WsListener<L> {
    type Stream = WsStream<Replayed<L::Stream>>;
    type Handshake = WsHandshake<L::Stream>;

    async fn accept(&mut self) -> io::Result<(Self::Handshake, SocketAddr)> {
        let (handshake, peer) = self.inner.accept().await?;
        let max_frame_bytes = self.max_frame_bytes;
        Ok((
            Box::pin(server_upgrade(handshake, peer, max_frame_bytes)),
            peer,
        ))
    }
}

async fn server_upgrade<S: Stream>(
    handshake: impl Future<Output = io::Result<S>>,
    peer: SocketAddr,
    max_frame_bytes: usize,
) -> io::Result<WsStream<Replayed<S>>> {
    let failed = |error: &dyn fmt::Display| format!("WebSocket upgrade of {peer} failed: {error}");
    let mut stream = handshake.await?;
    // Every upgrade starts with "GET "; imlab's plain framing starts with a length.
    let mut head = [0u8; 4];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|error| io::Error::new(error.kind(), failed(&error)))?;
    if &head != b"GET " {
        crate::tls::refuse_in_frames(stream, NOT_WEBSOCKET_REFUSAL).await;
        let why = format!(
            "the client did not send an HTTP upgrade (first bytes {head:02x?}; a plain imlab \
             client?); answered with an Error frame"
        );
        return Err(io::Error::new(io::ErrorKind::InvalidData, failed(&why)));
    }
    let stream = Replayed {
        head: Bytes::copy_from_slice(&head),
        inner: stream,
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        choose_subprotocol,
        Some(config(max_frame_bytes, WS_READ_CHUNK_BYTES)),
    )
    .await
    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, failed(&error)))?;
    Ok(WsStream::new(ws, max_frame_bytes, WsFraming::Frames))
}

/// Answers with the `imlab` subprotocol when the client offers it, with none when it offers
/// none, and refuses (400, saying why) a client that offers only others (`mqtt`, say).
#[allow(clippy::result_large_err)] // tungstenite's callback type
fn choose_subprotocol(
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    let offered: Vec<&str> = request
        .headers()
        .get_all(HEADER_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(response);
    }
    if offered.contains(&IMLAB_SUBPROTOCOL) {
        response
            .headers_mut()
            .insert(HEADER_PROTOCOL, HeaderValue::from_static(IMLAB_SUBPROTOCOL));
        return Ok(response);
    }
    let mut refusal = ErrorResponse::new(Some(format!(
        "this server speaks the WebSocket subprotocol {IMLAB_SUBPROTOCOL:?}; the client offered {}",
        offered.join(", ")
    )));
    *refusal.status_mut() = StatusCode::BAD_REQUEST;
    Err(refusal)
}

/// Opens a connection with `inner` (TCP, TLS), then upgrades it to WebSocket at a path,
/// offering a subprotocol; the upgrade counts towards the client's connect timeout.
#[derive(Clone)]
pub struct WsConnector<C> {
    inner: C,
    target: SocketAddr,
    url: String,
    subprotocol: Option<String>,
    max_frame_bytes: usize,
    framing: WsFraming,
}

impl<C> fmt::Debug for WsConnector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConnector")
            .field("url", &self.url)
            .field("subprotocol", &self.subprotocol)
            .finish_non_exhaustive()
    }
}

/// What a WebSocket client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsClient {
    /// `ws://host:port/path` (the scheme names no TLS: a TLS layer underneath makes it wss).
    pub url: String,
    /// Offered in `Sec-WebSocket-Protocol` (`imlab`, `mqtt`); the server must choose it.
    pub subprotocol: Option<String>,
    /// How the protocol's bytes travel in messages.
    pub framing: WsFraming,
}

impl WsClient {
    /// For a server called `host` (the `Host` header) at `target`, on `path`, which must
    /// start with `/`.
    pub fn new(
        host: &str,
        target: SocketAddr,
        path: &str,
        subprotocol: Option<&str>,
    ) -> Result<WsClient, String> {
        if !path.starts_with('/') {
            return Err(format!(
                "WebSocket path {path:?} must start with '/' (e.g. /imlab)"
            ));
        }
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let url = format!("ws://{host}:{}{path}", target.port());
        url.as_str()
            .into_client_request()
            .map_err(|error| format!("WebSocket URL {url:?}: {error}"))?;
        Ok(WsClient {
            url,
            subprotocol: subprotocol.map(str::to_string),
            framing: WsFraming::Frames,
        })
    }

    /// The same client carrying a plain byte stream (MQTT over WebSocket).
    pub fn carrying_bytes(mut self) -> WsClient {
        self.framing = WsFraming::Bytes;
        self
    }
}

impl<C: Connector> WsConnector<C> {
    /// WebSocket as `client` says over the connections `inner` opens to `target` (which names
    /// the server in errors); messages of at most `max_frame_bytes`.
    pub fn new(
        inner: C,
        target: SocketAddr,
        client: &WsClient,
        max_frame_bytes: usize,
    ) -> WsConnector<C> {
        WsConnector {
            inner,
            target,
            url: client.url.clone(),
            subprotocol: client.subprotocol.clone(),
            max_frame_bytes,
            framing: client.framing,
        }
    }

    /// An upgrade failure, naming the server and the URL.
    fn failed(&self, kind: io::ErrorKind, why: impl fmt::Display) -> io::Error {
        io::Error::new(
            kind,
            format!(
                "WebSocket upgrade with {} ({}) failed: {why}",
                self.target, self.url
            ),
        )
    }

    /// Reads the server's answer to the upgrade request: its head, and what came after it
    /// (the first WebSocket frames, or a refusal's body). Read a chunk at a time into a
    /// buffer let go with the answer's head: a connection keeps only its read chunk (see
    /// [`WS_READ_CHUNK_BYTES`]). tungstenite's own client handshake hands its 4 KiB read
    /// buffer on as the connection's, whatever the configuration says: 3 KB more a client in
    /// a load generator of tens of thousands.
    async fn read_answer(&self, stream: &mut C::Stream) -> io::Result<(ClientResponse, Vec<u8>)> {
        let mut read = Vec::with_capacity(UPGRADE_READ_BYTES);
        loop {
            match ClientResponse::try_parse(&read) {
                Ok(Some((head, answer))) => return Ok((answer, read[head..].to_vec())),
                Ok(None) => {}
                Err(error) => {
                    return Err(self.failed(
                        io::ErrorKind::InvalidData,
                        format_args!(
                            "the server did not answer in HTTP ({error}): not a WebSocket port \
                             (a plain imlab TCP port? then leave out --ws)"
                        ),
                    ));
                }
            }
            if read.len() >= UPGRADE_ANSWER_BYTES_MAX {
                return Err(self.failed(
                    io::ErrorKind::InvalidData,
                    format_args!(
                        "the server's answer did not end its HTTP head within \
                         {UPGRADE_ANSWER_BYTES_MAX} bytes"
                    ),
                ));
            }
            let n = read_some(stream, &mut read, UPGRADE_READ_BYTES)
                .await
                .map_err(|error| self.failed(error.kind(), error))?;
            if n == 0 {
                return Err(self.failed(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the upgrade: not a WebSocket port \
                     (a plain imlab TCP port? then leave out --ws)",
                ));
            }
        }
    }

    /// The error for a server that answered the upgrade other than with 101: its status, and
    /// the body it sent (up to its `Content-Length`, at most [`REFUSAL_BODY_BYTES_MAX`]; a
    /// server closing early shows what came).
    async fn refused(
        &self,
        stream: &mut C::Stream,
        answer: &ClientResponse,
        mut body: Vec<u8>,
    ) -> io::Error {
        // Without a length, what came with the head is all there is to show.
        let length = answer
            .headers()
            .get("content-length")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<usize>().ok())
            .unwrap_or(body.len())
            .min(REFUSAL_BODY_BYTES_MAX);
        while body.len() < length {
            let missing = length - body.len();
            match read_some(stream, &mut body, missing).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        body.truncate(length);
        let body = String::from_utf8_lossy(&body);
        let body = body.trim();
        let body = if body.is_empty() {
            String::new()
        } else {
            format!(": {body}")
        };
        self.failed(
            io::ErrorKind::InvalidData,
            format_args!(
                "the server refused the upgrade with HTTP {}{body}",
                answer.status()
            ),
        )
    }

    /// Checks a 101 answer as RFC 6455 (4.1) says a client must: the upgrade to websocket,
    /// the key's accept value, and a subprotocol only if one was offered and then that one.
    fn verify(&self, answer: &ClientResponse, key: &str) -> io::Result<()> {
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        };
        let invalid = |why: String| Err(self.failed(io::ErrorKind::InvalidData, why));
        let upgrade = header("upgrade");
        if !upgrade
            .as_deref()
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"))
        {
            return invalid(format!(
                "the server's 101 answer upgrades to {upgrade:?}, not \"websocket\""
            ));
        }
        let connection = header("connection");
        if !connection.as_deref().is_some_and(|value| {
            value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        }) {
            return invalid(format!(
                "the server's 101 answer has Connection {connection:?}, without \"Upgrade\""
            ));
        }
        let accept = header("sec-websocket-accept");
        let expected = derive_accept_key(key.as_bytes());
        if accept.as_deref() != Some(expected.as_str()) {
            return invalid(format!(
                "the server's Sec-WebSocket-Accept {accept:?} is not the one for the key sent \
                 ({expected:?})"
            ));
        }
        let chosen = header(HEADER_PROTOCOL);
        match (&self.subprotocol, &chosen) {
            (Some(offered), Some(chosen)) if chosen.trim() == offered => Ok(()),
            (None, None) => Ok(()),
            (Some(offered), None) => invalid(format!(
                "the server chose no subprotocol; the client offered only {offered:?}"
            )),
            (offered, Some(chosen)) => invalid(format!(
                "the server chose the subprotocol {chosen:?}; the client offered {}",
                offered
                    .as_deref()
                    .map_or("none".to_string(), |offered| format!("{offered:?}"))
            )),
        }
    }
}

/// Reads at most `limit` bytes onto the end of `buffer`.
async fn read_some(
    stream: &mut (impl AsyncRead + Unpin),
    buffer: &mut Vec<u8>,
    limit: usize,
) -> io::Result<usize> {
    buffer.reserve(limit);
    (&mut *stream).take(limit as u64).read_buf(buffer).await
}

impl<C: Connector> Connector for WsConnector<C> {
    type Stream = WsStream<C::Stream>;

    async fn connect(&self) -> io::Result<Self::Stream> {
        let mut stream = self.inner.connect().await?;
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|error| self.failed(io::ErrorKind::InvalidInput, error))?;
        if let Some(subprotocol) = &self.subprotocol {
            let value = HeaderValue::from_str(subprotocol).map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("subprotocol {subprotocol:?}: {error}"),
                )
            })?;
            request.headers_mut().insert(HEADER_PROTOCOL, value);
        }
        let (head, key) = generate_request(request)
            .map_err(|error| self.failed(io::ErrorKind::InvalidInput, error))?;
        stream
            .write_all(&head)
            .await
            .map_err(|error| self.failed(error.kind(), error))?;
        stream
            .flush()
            .await
            .map_err(|error| self.failed(error.kind(), error))?;
        let (answer, tail) = self.read_answer(&mut stream).await?;
        if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.refused(&mut stream, &answer, tail).await);
        }
        self.verify(&answer, &key)?;
        // The bytes after the answer's head are the server's first frames.
        let ws = WebSocketStream::from_partially_read(
            stream,
            tail,
            Role::Client,
            Some(config(self.max_frame_bytes, WS_READ_CHUNK_BYTES)),
        )
        .await;
        Ok(WsStream::new(ws, self.max_frame_bytes, self.framing))
    }
}

//! What a WebSocket connection holds on the heap once it is up and idle, at both ends
//! (`WsListener` and `WsConnector` over TCP), also after a message far longer than a read,
//! and that such a message still arrives whole.

mod counting_alloc;

#[global_allocator]
static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;

use std::net::SocketAddr;

use imlab_core::codec::DEFAULT_MAX_FRAME_BYTES;
use imlab_core::net::{Connector, Listener, TcpConnector};
use imlab_core::ws::{WS_READ_CHUNK_BYTES, WsClient, WsConnector, WsListener, WsStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

type Pair = (
    WsStream<imlab_core::ws::Replayed<tokio::net::TcpStream>>,
    <WsConnector<TcpConnector> as Connector>::Stream,
);

struct Ends {
    listener: WsListener<TcpListener>,
    connector: WsConnector<TcpConnector>,
}

async fn ends() -> Ends {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = tcp.local_addr().unwrap();
    let client = WsClient::new("127.0.0.1", addr, "/imlab", Some("imlab")).unwrap();
    Ends {
        listener: WsListener::new(tcp, DEFAULT_MAX_FRAME_BYTES),
        connector: WsConnector::new(
            TcpConnector { target: addr },
            addr,
            &client,
            DEFAULT_MAX_FRAME_BYTES,
        ),
    }
}

/// One connection, upgraded on both sides.
async fn open(ends: &mut Ends) -> Pair {
    let accept = async {
        let (handshake, _peer) = ends.listener.accept().await.unwrap();
        handshake.await.unwrap()
    };
    let (server, client) = tokio::join!(accept, ends.connector.connect());
    (server, client.unwrap())
}

/// Writes one length-prefixed frame of `payload_len` bytes at `from` and reads it at `to`.
async fn frame_across(
    from: &mut (impl AsyncWrite + Unpin),
    to: &mut (impl AsyncRead + Unpin),
    payload_len: usize,
) {
    let mut frame = (payload_len as u32).to_be_bytes().to_vec();
    frame.extend((0..payload_len).map(|i| (i % 251) as u8));
    let write = async {
        from.write_all(&frame).await.unwrap();
        from.flush().await.unwrap();
    };
    let mut got = vec![0u8; frame.len()];
    let read = async { to.read_exact(&mut got).await.unwrap() };
    tokio::join!(write, read);
    assert!(
        got == frame,
        "the frame of {payload_len} bytes arrived changed"
    );
    // The reader reads on and finds nothing, as a connection's read loop does once it has
    // taken a frame.
    let mut more = [0u8; 1];
    assert!(
        futures::FutureExt::now_or_never(to.read(&mut more)).is_none(),
        "nothing follows the frame"
    );
}

/// `n` connections, each up and idle after a frame each way, as a logged-in device's.
async fn idle_pairs(ends: &mut Ends, n: usize) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for _ in 0..n {
        let (mut server, mut client) = open(ends).await;
        frame_across(&mut client, &mut server, 200).await;
        frame_across(&mut server, &mut client, 200).await;
        pairs.push((server, client));
    }
    pairs
}

/// Connections a count opens: the first as many fill what lasts (the I/O driver's slab
/// pages, lazily made statics) and are closed, the next as many are counted.
const PAIRS: usize = 16;

/// The heap bytes each idle pair of connections holds, both ends together, once each has
/// carried a message of each of `payload_lens` each way and then a small one.
fn heap_per_idle_pair(payload_lens: &[usize]) -> usize {
    let runtime = counting_alloc::current_thread_runtime();
    let mut ends = runtime.block_on(ends());
    drop(runtime.block_on(idle_pairs(&mut ends, PAIRS)));
    // The runtime's thread does all the work, so the count sees both ends of each pair.
    let (pairs, held, _peak) = counting_alloc::count(|| {
        runtime.block_on(async {
            let mut pairs = idle_pairs(&mut ends, PAIRS).await;
            for (server, client) in &mut pairs {
                for &len in payload_lens.iter().chain(&[200]) {
                    frame_across(client, server, len).await;
                    frame_across(server, client, len).await;
                }
            }
            pairs
        })
    });
    drop(pairs);
    held as usize / PAIRS
}

#[test]
fn an_idle_websocket_connection_holds_a_few_kilobytes_at_each_end() {
    let per_pair = heap_per_idle_pair(&[]);
    // Both ends' state (tungstenite's, the streams', the socket registrations), and no
    // buffer: each end's read buffer is let go when a read finds nothing. 1,092 bytes here.
    // With the read buffers kept while idle (a read chunk each), 3,220; with tungstenite's
    // write buffer or one of `WsStream`'s message buffers kept after use, 1,500-1,580 (with
    // the read buffers kept too, up to 4,512); with tungstenite's client handshake, which
    // hands its 4 KiB read buffer on to the connection, and the read buffers kept, 7,584.
    // tungstenite's default read buffer alone is 128 KiB an end.
    // A number, not one made of the constants. The read chunk's size no longer shows here:
    // an idle connection holds no read buffer of any size.
    let bound = 1_092 + 128;
    assert!(
        per_pair <= bound,
        "a connection holds {per_pair} bytes on the heap, both ends together (at most {bound})"
    );
}

#[test]
fn a_message_many_read_chunks_long_arrives_whole_both_ways() {
    let runtime = counting_alloc::current_thread_runtime();
    runtime.block_on(async {
        let mut ends = ends().await;
        let (mut server, mut client) = open(&mut ends).await;
        // The frame limit's largest payload, then small frames again after it.
        let largest = DEFAULT_MAX_FRAME_BYTES;
        assert!(largest > 8 * WS_READ_CHUNK_BYTES);
        for payload_len in [largest, 200, largest - 1, 1] {
            frame_across(&mut client, &mut server, payload_len).await;
            frame_across(&mut server, &mut client, payload_len).await;
        }
    });
}

#[test]
fn an_idle_connection_keeps_nothing_of_its_largest_message() {
    // Connections that carried a message of 60,000 bytes each way (a sync page near the frame
    // limit), then small ones again, and went idle.
    let per_pair = heap_per_idle_pair(&[60_000]);
    // As after small messages only (1,092 bytes here). With any one buffer the large
    // message grew kept (tungstenite's read or write buffer, either of `WsStream`'s), about
    // 120 KB more; with all four, 484,128.
    let bound = 1_092 + 128;
    assert!(
        per_pair <= bound,
        "an idle connection that carried 60,000-byte messages holds {per_pair} bytes on the \
         heap, both ends together (at most {bound})"
    );
}

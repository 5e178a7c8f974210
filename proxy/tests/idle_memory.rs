//! What an idle flow holds on the heap: once its bytes are relayed both ways, a flow keeps no
//! read buffer for either side (a proxy in front of a real server carries thousands of
//! mostly idle connections), and an inline flow's in-memory pipe (`imlab load --carrier`, a
//! flow per client) holds none of the bytes it carried.

mod common;
#[path = "../../core/tests/counting_alloc/mod.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;

use std::net::SocketAddr;
use std::time::Duration;

use imlab_proxy::{InlineStream, Proxy, ProxyConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A phone: connects through the proxy, sends 32 bytes and reads them back.
async fn phone(proxy: SocketAddr) -> TcpStream {
    echo_once(TcpStream::connect(proxy).await.unwrap(), 32).await
}

/// An in-process phone: an inline flow to `upstream`, 1,000 bytes each way (a pipe that kept
/// its bytes' allocation after they were read would hold that much each way).
async fn inline_phone(proxy: &Proxy, upstream: SocketAddr, n: u64) -> InlineStream {
    let stream = proxy
        .connect_inline(&[n, 0], format!("client {n}"), TcpStream::connect(upstream))
        .await
        .unwrap();
    echo_once(stream, 1_000).await
}

/// Sends `len` bytes and reads them back.
async fn echo_once<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, len: usize) -> S {
    let sent = vec![7u8; len];
    stream.write_all(&sent).await.unwrap();
    let mut echoed = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(15), stream.read_exact(&mut echoed))
        .await
        .expect("the echo within 15 s")
        .unwrap();
    assert_eq!(echoed, sent);
    stream
}

/// A short lossless link whose NAT outlives the test.
fn quiet_link(upstream: SocketAddr) -> ProxyConfig {
    let mut profile = imlab_carrier::preset("us-lte").unwrap();
    profile.loss = 0.0;
    profile.rtt_median = Duration::from_millis(2);
    profile.rtt_p99 = Duration::from_millis(4);
    profile.nat_timeout_min = Duration::from_secs(3600);
    profile.nat_timeout_max = Duration::from_secs(3600);
    ProxyConfig {
        upstream,
        profile,
        seed: 7,
        time_scale: 1.0,
        flows_max: 1_000,
        trace: None,
    }
}

/// Phones a count opens: the first as many fill what lasts (the I/O driver's slab pages, the
/// flow table), the next as many are counted.
const FLOWS: u64 = 16;

/// Opens `FLOWS` phones with `open(n)`, then `FLOWS` more under the count: the heap bytes
/// each of those holds once idle, with everything it made.
fn heap_per_idle_flow<T, Fut: Future<Output = T>>(
    runtime: &tokio::runtime::Runtime,
    mut open: impl FnMut(u64) -> Fut,
) -> usize {
    let warm: Vec<T> = runtime.block_on(async {
        let mut warm = Vec::new();
        for n in 0..FLOWS {
            warm.push(open(n).await);
        }
        warm
    });
    let (phones, held, _peak) = counting_alloc::count(|| {
        runtime.block_on(async {
            let mut phones = Vec::new();
            for n in FLOWS..2 * FLOWS {
                phones.push(open(n).await);
            }
            // Every task that is ready runs before the count ends (the flows back in their
            // reads after the last echo).
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            phones
        })
    });
    drop((phones, warm));
    held as usize / FLOWS as usize
}

#[test]
fn an_idle_flow_holds_no_read_buffer() {
    let runtime = counting_alloc::current_thread_runtime();
    let proxy_addr = runtime.block_on(async {
        let upstream = common::echo_server().await;
        let proxy = Proxy::new(quiet_link(upstream)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(proxy.run(listener, std::future::pending::<()>()));
        addr
    });
    let per_flow = heap_per_idle_flow(&runtime, |_| phone(proxy_addr));
    // The flow's task, its model and both sockets, and this test's phone and echo task (its
    // 1 KiB buffer included): 3,181 bytes here (5,653 while the flow's task kept its opening
    // and its arguments beside the relay, 3,693 in a cell of 1,152 bytes, 3,565 while its
    // emptied in-flight queues kept their slots, 192 bytes each). A read buffer kept by
    // either side adds a segment's worth (1,460 bytes).
    let bound = 3_181 + 128;
    assert!(
        per_flow <= bound,
        "an idle flow, with its phone and echo, holds {per_flow} bytes (at most {bound})"
    );
}

#[test]
fn an_idle_inline_flow_holds_no_buffer() {
    let runtime = counting_alloc::current_thread_runtime();
    let (proxy, upstream) = runtime.block_on(async {
        let upstream = common::echo_server().await;
        (Proxy::new(quiet_link(upstream)).unwrap(), upstream)
    });
    let per_flow = heap_per_idle_flow(&runtime, |n| inline_phone(&proxy, upstream, n));
    // The flow's task, its model, its pipe and upstream socket, and this test's echo task
    // (its 1 KiB buffer included): 3,099 bytes here. A read buffer kept on the phone's side
    // adds a segment's worth (1,460 bytes); the pipe's queues keeping their slots, 256; the
    // flow's in-flight queues keeping theirs, 384.
    let bound = 3_099 + 128;
    assert!(
        per_flow <= bound,
        "an idle inline flow, with its echo, holds {per_flow} bytes (at most {bound})"
    );
}

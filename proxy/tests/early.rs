//! A phone that gives up on its connection before its SYN gets through the carrier leaves
//! nothing at the server; one that waits has what it wrote meanwhile delivered once its SYN
//! crosses. The proxy accepts at once, so a phone can write (its Login) and close (its
//! connect timeout) while the model still holds its SYN in an outage.

mod common;

use std::time::Duration;

use imlab_proxy::control::request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A server that reports the first bytes of each connection it accepts, in accept order.
async fn first_bytes_server() -> (std::net::SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = vec![0u8; 64];
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            buffer.truncate(n);
            if tx.send(buffer).await.is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_closes_before_its_syn_crosses_never_reaches_the_server() {
    let (upstream, mut accepted) = first_bytes_server().await;
    let trace_dir = tempfile::tempdir().unwrap();
    let trace = trace_dir.path().join("trace.jsonl");
    let profile = common::nat_profile(Duration::from_secs(600), imlab_carrier::OnExpiry::Rst);
    let proxy = common::proxy(upstream, profile, 1.0, Some(trace.clone())).await;
    // Out of coverage for a second: SYNs wait for it to end.
    request(
        &proxy.control,
        "POST",
        "/faults",
        br#"{"kind": "outage", "for": "1s"}"#,
    )
    .await
    .unwrap();

    // The first phone writes and gives up.
    let mut ghost = TcpStream::connect(proxy.addr).await.unwrap();
    ghost.write_all(b"ghost").await.unwrap();
    drop(ghost);
    common::wait_trace(&trace, "flow 1 ended before its SYN crossed", |lines| {
        lines.iter().any(|line| {
            line["flow"] == 1
                && line["event"] == "ended"
                && line["why"] == "gave_up_before_syn"
                && line["bytes_unsent"] == 5
        })
    })
    .await;

    // The second writes within the same outage and waits: its bytes arrive once its SYN
    // does, and its connection is the first the server accepts.
    let mut phone = TcpStream::connect(proxy.addr).await.unwrap();
    phone.write_all(b"live").await.unwrap();
    let first = tokio::time::timeout(common::WAIT, accepted.recv())
        .await
        .expect("the waiting phone reached the server")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&first), "live");
    drop(phone);
}

//! The carrier model for an in-process client (`Proxy::connect_inline`): the same flows as
//! through the proxy's listener, so an expired `rst` mapping resets the client's next send
//! with `ConnectionReset`, and bytes before that pass both ways.

mod common;

use std::time::Duration;

use imlab_carrier::OnExpiry;
use imlab_proxy::{Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_flow_relays_then_resets_at_the_first_send_after_its_nat_expired() {
    let upstream = common::echo_server().await;
    let proxy = Proxy::new(ProxyConfig {
        upstream,
        // A 1 s NAT, at ten times wall speed: expired after 100 ms of silence.
        profile: common::nat_profile(Duration::from_secs(1), OnExpiry::Rst),
        seed: 3,
        time_scale: 10.0,
        flows_max: 4,
        trace: None,
    })
    .unwrap();
    let mut stream = proxy
        .connect_inline(&[1, 0], "client 1".into(), TcpStream::connect(upstream))
        .await
        .unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(common::WAIT, stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping");

    // Send again until the mapping has expired: that send is answered with a reset.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let error = loop {
        assert!(tokio::time::Instant::now() < deadline, "never reset");
        tokio::time::sleep(Duration::from_millis(150)).await;
        if let Err(error) = stream.write_all(b"late").await {
            break error;
        }
        match tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut echoed)).await {
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => break error,
            Err(_) => panic!("neither an echo nor a reset"),
        }
    };
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    let totals = proxy.totals();
    assert_eq!((totals.nat_expired, totals.resets), (1, 1), "{totals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_bound_refuses_an_inline_connection_and_a_failed_upstream_is_an_error() {
    let upstream = common::echo_server().await;
    let proxy = Proxy::new(ProxyConfig {
        upstream,
        profile: common::nat_profile(Duration::from_secs(60), OnExpiry::Rst),
        seed: 3,
        time_scale: 1.0,
        flows_max: 1,
        trace: None,
    })
    .unwrap();
    let _first = proxy
        .connect_inline(&[1, 0], "client 1".into(), TcpStream::connect(upstream))
        .await
        .unwrap();
    let refused = proxy
        .connect_inline(&[2, 0], "client 2".into(), TcpStream::connect(upstream))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(proxy.flow_counts(), (1, 1));

    drop(_first);
    // A refused upstream comes back as the connect's own error, and leaves no flow behind.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while proxy.flow_counts().0 > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first flow never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failed = proxy
        .connect_inline(&[3, 0], "client 3".into(), TcpStream::connect(closed_addr))
        .await
        .unwrap_err();
    assert_eq!(
        failed.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{failed}"
    );
    assert_eq!(proxy.flow_counts().0, 0);
}

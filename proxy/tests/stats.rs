//! The model's delays on real sockets: the one-way delays the proxy adds follow the profile's
//! RTT distribution (half an RTT each way). The pure model is checked on many samples in
//! imlab-carrier's tests; this is the smaller check that the real-socket driver carries the
//! model's delays out faithfully.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_delays_through_the_proxy_follow_the_profile_median() {
    // The server writes the time it accepted each connection; the phone reads it through the
    // proxy. Each sample is the first chunk of its own flow, so no chunk waits behind another.
    let epoch = Instant::now();
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = upstream.accept().await {
            let sent_us = epoch.elapsed().as_micros() as u64;
            let _ = stream.write_all(&sent_us.to_be_bytes()).await;
            // Keep it open: the phone closes first.
            held.push(stream);
        }
    });
    let mut profile = imlab_carrier::preset("cmcc-3g").unwrap();
    // Loss would add retransmission delays to a few samples; the pure-model test covers it.
    profile.loss = 0.0;
    let proxy = common::proxy(upstream_addr, profile.clone(), 1.0, None).await;
    let n_samples = 300;
    let mut tasks = Vec::new();
    for _ in 0..n_samples {
        // Connect one at a time: 300 SYNs at once can overflow a small listen queue (a
        // machine's somaxconn), and a SYN retried after 1, 3, 7 s would stall the test. The
        // sample starts at the upstream accept, so the connect's own time is not in it.
        let mut phone = tokio::time::timeout(common::WAIT, TcpStream::connect(proxy.addr))
            .await
            .expect("connect to the proxy in time")
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut sent = [0u8; 8];
            phone.read_exact(&mut sent).await.unwrap();
            let arrived_us = epoch.elapsed().as_micros() as u64;
            arrived_us - u64::from_be_bytes(sent)
        }));
    }
    let mut one_way_us = Vec::new();
    for task in tasks {
        one_way_us.push(
            tokio::time::timeout(common::WAIT, task)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    one_way_us.sort_unstable();
    let median_rtt = Duration::from_micros(2 * one_way_us[n_samples / 2]);
    let expected = profile.rtt_median;
    let error = (median_rtt.as_secs_f64() - expected.as_secs_f64()).abs() / expected.as_secs_f64();
    assert!(
        error <= 0.10,
        "RTT median through the proxy {median_rtt:?}, profile {expected:?}"
    );
}

//! The control API steering a running proxy: faults now, a new profile, reset; errors name
//! the key at fault.

mod common;

use std::time::Duration;

use imlab_proxy::control::{ControlError, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                    if stream.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn echo(phone: &mut TcpStream, byte: u8) {
    phone.write_all(&[byte]).await.unwrap();
    let mut reply = [0u8; 1];
    tokio::time::timeout(common::WAIT, phone.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply[0], byte);
}

/// The error message of a refused request.
async fn refused(control: &str, method: &str, target: &str, body: &str) -> String {
    match request(control, method, target, body.as_bytes()).await {
        Err(ControlError::Status {
            status: 400, body, ..
        }) => body,
        other => panic!("{method} {target} {body:?}: expected a 400, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_profile_and_reset_through_the_control_api() {
    let upstream = echo_server().await;
    let profile = common::nat_profile(Duration::from_secs(600), imlab_carrier::OnExpiry::Rst);
    let proxy = common::proxy(upstream, profile, 1.0, None).await;
    let control = proxy.control.as_str();
    let mut phone = TcpStream::connect(proxy.addr).await.unwrap();
    echo(&mut phone, b'a').await;

    // An outage now: the next chunk needs retransmissions to get through.
    let applied = request(
        control,
        "POST",
        "/faults",
        br#"{"kind": "outage", "for": "300ms"}"#,
    )
    .await
    .unwrap();
    assert_eq!(applied["kind"], "outage");
    echo(&mut phone, b'b').await;
    let flow = common::wait_flow(control, "is flow 1", |flow| flow["id"] == 1).await;
    assert!(
        flow["decisions"]["retransmissions"].as_u64().unwrap() >= 1,
        "{flow:#}"
    );
    assert_eq!(flow["decisions"]["delivered_up"], 2, "{flow:#}");

    // Faults outside the proxy's reach, or without their keys, are refused by name.
    let error = refused(control, "POST", "/faults", r#"{"kind": "server_crash"}"#).await;
    assert!(
        error.contains("key `kind`") && error.contains("server_crash"),
        "{error}"
    );
    let error = refused(control, "POST", "/faults", r#"{"kind": "partition"}"#).await;
    assert!(error.contains("needs `for`"), "{error}");

    // A new profile, checked like a scenario's carrier table.
    let error = refused(
        control,
        "PUT",
        "/profile",
        "preset = \"us-lte\"\nloss = 0.7",
    )
    .await;
    assert!(error.contains("key `loss`"), "{error}");
    let error = refused(control, "PUT", "/profile", "preset = \"nope\"").await;
    assert!(
        error.contains("key `preset`") && error.contains("cmcc-3g"),
        "{error}"
    );
    let error = refused(control, "PUT", "/profile", "nat_timeot = \"1s\"").await;
    assert!(error.contains("nat_timeot"), "{error}");
    let changed = request(
        control,
        "PUT",
        "/profile?name=slow",
        b"preset = \"cu-2g\"\nloss = 0.0",
    )
    .await
    .unwrap();
    assert_eq!(changed["profile"]["name"], "slow");
    assert_eq!(changed["profile"]["rtt_median_ms"], 700);
    let listing = request(control, "GET", "/flows", b"").await.unwrap();
    assert_eq!(listing["profile"]["name"], "slow");

    // Reset: the phone's connection is reset.
    let reset = request(control, "POST", "/reset", b"").await.unwrap();
    assert_eq!(reset["flows_reset"], 1);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(common::WAIT, phone.read_to_end(&mut rest))
        .await
        .unwrap();
    assert_eq!(
        read.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
}

/// The fault vocabulary's carrier faults through the control API, in the words and keys of a
/// scenario's `[[faults]]`: a latency spike delays the echo by at least its added delay each
/// way, a reset resets the phone's connection, and misplaced or misspelt keys are refused by
/// name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_faults_of_the_vocabulary_through_the_control_api() {
    let upstream = echo_server().await;
    let profile = common::nat_profile(Duration::from_secs(600), imlab_carrier::OnExpiry::Rst);
    let proxy = common::proxy(upstream, profile, 1.0, None).await;
    let control = proxy.control.as_str();
    let mut phone = TcpStream::connect(proxy.addr).await.unwrap();
    echo(&mut phone, b'a').await;

    let applied = request(
        control,
        "POST",
        "/faults",
        br#"{"kind": "latency_spike", "for": "20s", "added": "300ms"}"#,
    )
    .await
    .unwrap();
    assert_eq!(applied["kind"], "latency_spike");
    let started = std::time::Instant::now();
    echo(&mut phone, b'b').await;
    // A lower bound only: the spike adds 300 ms each way, whatever the machine's load.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    let listing = request(control, "GET", "/flows", b"").await.unwrap();
    assert_eq!(
        listing["link_faults"][0]["kind"], "latency_spike",
        "{listing:#}"
    );

    let error = refused(
        control,
        "POST",
        "/faults",
        r#"{"kind": "latency_spike", "for": "1s", "adde": "1s"}"#,
    )
    .await;
    assert!(error.contains("adde"), "{error}");
    let error = refused(
        control,
        "POST",
        "/faults",
        r#"{"kind": "bandwidth", "for": "1s"}"#,
    )
    .await;
    assert!(error.contains("key `kbps`"), "{error}");
    let error = refused(
        control,
        "POST",
        "/faults",
        r#"{"kind": "reset", "for": "1s"}"#,
    )
    .await;
    assert!(error.contains("takes no `for`"), "{error}");
    let error = refused(
        control,
        "POST",
        "/faults",
        r#"{"kind": "disk_stall", "for": "1s"}"#,
    )
    .await;
    assert!(error.contains("max_age"), "{error}");

    // A reset fault (not the control API's /reset): RST to the phone.
    request(control, "POST", "/faults", br#"{"kind": "reset"}"#)
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(common::WAIT, phone.read_to_end(&mut rest))
        .await
        .unwrap();
    assert_eq!(
        read.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
}

/// A control address that takes the connection and never answers fails the request after
/// its timeout, naming the address (simulated time: at once).
#[tokio::test(start_paused = true)]
async fn a_control_address_that_never_answers_fails_the_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (_held, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    // Simulated time: without the request's own timeout this one fails at once too.
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        request(&addr, "GET", "/flows", b""),
    )
    .await
    .expect("the request gave up on its own")
    .unwrap_err();
    assert!(
        error.to_string() == format!("control API at {addr}: no whole answer within 10s"),
        "{error}"
    );
}

/// An answer past `ANSWER_BYTES_MAX` is refused, not read into memory without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_end_is_cut_off_at_the_bound() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 256];
        let _ = stream.read(&mut head).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
        // A megabyte past the bound, then the end: a reader without the bound would read it
        // all and fail on the JSON instead.
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..=imlab_proxy::control::ANSWER_BYTES_MAX >> 20 {
            if stream.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let error = request(&addr, "GET", "/flows", b"").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "control API at {addr}: an answer of more than {} bytes",
            imlab_proxy::control::ANSWER_BYTES_MAX
        )
    );
}

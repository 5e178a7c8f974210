//! End-to-end tests of imlab over WebSocket: `imlab serve --ws-listen` and
//! `imlab load --ws PATH`, plain and over TLS, on loopback.

mod common;
use common::{imlab, results, serve_announcing, write_identity};

/// Runs the delivery test of `a_short_load_loses_and_duplicates_nothing` (cli_load.rs), scaled
/// down, with `transport_args` against `target`, and checks it names `transport`.
fn check_delivery(target: &str, transport_args: &[&str], transport: &str) {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "load",
        "--target",
        target,
        "--clients",
        "100",
        "--duration",
        "2s",
        "--msg-rate",
        "300",
        "--connect-rate",
        "1000",
        "--drain",
        "2s",
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend(transport_args);
    let output = imlab(&args);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{transport}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results = results(out.path());
    let messages = &results["messages"];
    assert_eq!(results["transport"], transport, "{results}");
    assert_eq!(messages["sent"], 600, "{transport}: {results}");
    assert_eq!(messages["acked"], 600, "{transport}: {results}");
    assert_eq!(
        messages["expected_deliveries"], 600,
        "{transport}: {results}"
    );
    assert_eq!(messages["delivered"], 600, "{transport}: {results}");
    assert_eq!(messages["lost"], 0, "{transport}: {results}");
    assert_eq!(messages["duplicated"], 0, "{transport}: {results}");
    assert_eq!(results["connections"]["peak_concurrent"], 100, "{results}");
}

#[test]
fn imlab_over_websocket_passes_the_same_delivery_test_as_over_tcp() {
    let (_server, addrs) = serve_announcing(&["--ws-listen", "127.0.0.1:0"], 2);
    let (tcp, ws) = (&addrs[0], &addrs[1]);
    check_delivery(tcp, &[], "tcp");
    check_delivery(ws, &["--ws", "/imlab"], "ws");
}

#[test]
fn imlab_over_websocket_over_tls_is_wss() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_identity(dir.path());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (_server, addrs) = serve_announcing(
        &[
            "--ws-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
        2,
    );
    check_delivery(&addrs[1], &["--ws", "/", "--tls", "--ca", cert], "wss");
}

#[test]
fn the_wrong_client_on_either_port_fails_fast_naming_the_mismatch() {
    let (_server, addrs) = serve_announcing(&["--ws-listen", "127.0.0.1:0"], 2);
    let (tcp, ws) = (&addrs[0], &addrs[1]);
    let short = ["--clients", "2", "--duration", "1s", "--drain", "0s"];
    let run = |target: &str, extra: &[&str]| {
        let mut args = vec!["load", "--target", target];
        args.extend(short);
        args.extend(extra);
        let started = std::time::Instant::now();
        let output = imlab(&args);
        (output, started.elapsed())
    };
    for ((output, elapsed), expected) in [
        // A plain client on the WebSocket port: the server answers in its framing.
        (
            run(ws, &[]),
            "this port speaks imlab over WebSocket".to_string(),
        ),
        // A WebSocket client on the plain port.
        (
            run(tcp, &["--ws", "/"]),
            format!("WebSocket upgrade with {tcp} (ws://127.0.0.1:"),
        ),
    ] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("no client could log in"), "{stderr}");
        assert!(stderr.contains(&expected), "{expected}: {stderr}");
        // Fast: the ramp's refusal check, not the 30 s login wait.
        assert!(elapsed.as_secs() < 20, "{elapsed:?}: {stderr}");
    }
    // The WebSocket client on the plain port is told what the port is not.
    let (output, _) = run(tcp, &["--ws", "/"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a WebSocket port"), "{stderr}");
}

#[test]
fn a_ws_path_must_start_with_a_slash() {
    let output = imlab(&[
        "load",
        "--target",
        "127.0.0.1:9",
        "--clients",
        "2",
        "--duration",
        "1s",
        "--ws",
        "imlab",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--ws: WebSocket path \"imlab\" must start with '/'"),
        "{stderr}"
    );
}

//! End-to-end tests of `imlab serve --tls-cert/--tls-key` and `imlab load --tls --ca` on
//! loopback, with rcgen certificates written to a temporary directory.

mod common;

use std::path::Path;

use common::{ChildGuard, imlab, results, serve_on, write_identity};

/// A temporary directory for one test.
fn temp_dir(name: &str) -> common::KeptOnPanic {
    common::temp_dir("cli-tls", name)
}

fn serve(extra: &[&str]) -> (ChildGuard, String) {
    serve_on("127.0.0.1:0", extra)
}

fn serve_tls(cert: &Path, key: &Path) -> (ChildGuard, String) {
    serve(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
}

#[test]
fn a_tls_load_loses_and_duplicates_nothing() {
    let dir_guard = temp_dir("load");
    let dir = dir_guard.path();
    let (cert, key) = write_identity(dir);
    let (mut server, addr) = serve_tls(&cert, &key);
    let out = dir.join("out");
    let output = imlab(&[
        "load",
        "--target",
        &addr,
        "--tls",
        "--ca",
        cert.to_str().unwrap(),
        "--clients",
        "50",
        "--duration",
        "2s",
        "--msg-rate",
        "200",
        "--drain",
        "2s",
        "--out",
        out.to_str().unwrap(),
    ]);
    server.kill();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results = results(&out);
    let messages = &results["messages"];
    assert_eq!(messages["sent"], 400, "{results}");
    assert_eq!(messages["acked"], 400, "{results}");
    assert_eq!(messages["lost"], 0, "{results}");
    assert_eq!(messages["duplicated"], 0, "{results}");
    assert_eq!(results["connections"]["failed"], 0, "{results}");
    assert_eq!(results["connections"]["peak_concurrent"], 50, "{results}");
}

#[test]
fn tls_runs_over_connections_from_chosen_source_addresses() {
    let dir_guard = temp_dir("sources");
    let dir = dir_guard.path();
    let (cert, key) = write_identity(dir);
    let (mut server, addr) = serve_tls(&cert, &key);
    let out = dir.join("out");
    let output = imlab(&[
        "load",
        "--target",
        &addr,
        "--tls",
        "--ca",
        cert.to_str().unwrap(),
        "--tls-server-name",
        "localhost",
        "--source-ips",
        "127.0.0.2-127.0.0.3",
        "--clients",
        "20",
        "--duration",
        "1s",
        "--msg-rate",
        "50",
        "--drain",
        "1s",
        "--out",
        out.to_str().unwrap(),
    ]);
    server.kill();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let results = results(&out);
    assert_eq!(results["messages"]["acked"], 50, "{results}");
    assert_eq!(results["messages"]["lost"], 0, "{results}");
    assert_eq!(results["connections"]["peak_concurrent"], 20, "{results}");
}

#[test]
fn bad_certificate_files_and_flags_are_clear_errors() {
    let dir_guard = temp_dir("bad-files");
    let dir = dir_guard.path();
    let (cert, key) = write_identity(dir);
    let missing = dir.join("missing.pem");
    let (missing, cert, key) = (
        missing.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    for (args, expected) in [
        (
            vec!["serve", "--tls-cert", missing, "--tls-key", key],
            missing,
        ),
        (
            vec!["serve", "--tls-cert", cert, "--tls-key", missing],
            missing,
        ),
        // The certificate file holds no key.
        (
            vec!["serve", "--tls-cert", cert, "--tls-key", cert],
            "no private key",
        ),
        (vec!["serve", "--tls-cert", cert], "--tls-key"),
        (vec!["serve", "--tls-key", key], "--tls-cert"),
        (
            vec![
                "load",
                "--target",
                "127.0.0.1:7400",
                "--clients",
                "2",
                "--duration",
                "1s",
                "--tls",
            ],
            "--tls needs --ca",
        ),
        (
            vec![
                "load",
                "--target",
                "127.0.0.1:7400",
                "--clients",
                "2",
                "--duration",
                "1s",
                "--tls",
                "--ca",
                missing,
            ],
            missing,
        ),
    ] {
        let output = imlab(&args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_protocol_mismatch_fails_fast_and_says_why() {
    let dir_guard = temp_dir("mismatch");
    let dir = dir_guard.path();
    let (cert, key) = write_identity(dir);
    let (mut tls_server, tls_addr) = serve_tls(&cert, &key);
    let (mut plain_server, plain_addr) = serve(&[]);
    let short = ["--clients", "2", "--duration", "1s", "--drain", "0s"];
    let ca = cert.to_str().unwrap();

    // Plaintext client, TLS server: the server answers in the client's framing.
    let mut args = vec!["load", "--target", &tls_addr];
    args.extend(short);
    let plain_to_tls = imlab(&args);
    // TLS client, plaintext server.
    let mut args = vec!["load", "--target", &plain_addr, "--tls", "--ca", ca];
    args.extend(short);
    let tls_to_plain = imlab(&args);
    // TLS client that trusts another certificate.
    let stranger_guard = temp_dir("mismatch-stranger");
    let stranger = stranger_guard.path();
    let (other_cert, _) = write_identity(stranger);
    let mut args = vec!["load", "--target", &tls_addr, "--tls", "--ca"];
    args.push(other_cert.to_str().unwrap());
    args.extend(short);
    let untrusted = imlab(&args);

    for server in [&mut tls_server, &mut plain_server] {
        server.kill();
    }
    for (output, expected) in [
        (plain_to_tls, "this server requires TLS".to_string()),
        (
            tls_to_plain,
            format!("TLS handshake with {plain_addr} failed"),
        ),
        (untrusted, format!("TLS handshake with {tls_addr} failed")),
    ] {
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no client could log in"), "{stderr}");
        assert!(stderr.contains(&expected), "{stderr}");
    }
}

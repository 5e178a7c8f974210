//! The vendored turmoil's edits (vendor/README.md) must not change what a simulation does.
//! Its connecting host picks an ephemeral port from a count of the sockets on each local port
//! instead of a scan of its sockets: the first test pins what the scan did (the next port
//! after the last one given, skipping every port a live socket holds, a port free again once
//! its socket is gone). A stepping host takes what arrived for it from its own links instead
//! of scanning every link: the second pins the order upstream's scan delivered in.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

const PORT: u16 = 9000;
const FIRST: u16 = 49_152;

/// A simulation whose hosts have only four ephemeral ports, so that the port search wraps.
fn four_port_sim() -> turmoil::Sim<'static> {
    let mut sim = turmoil::Builder::new()
        .ephemeral_ports(FIRST..=FIRST + 3)
        .rng_seed(1)
        .simulation_duration(Duration::from_secs(60))
        .build();
    sim.host("server", || async {
        let listener = TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), PORT)).await?;
        // Hold every accepted stream until its client closes it, then close it too.
        loop {
            let (mut stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let mut byte = [0; 1];
                let _ = stream.read(&mut byte).await;
            });
        }
    });
    sim
}

async fn connect() -> turmoil::Result<TcpStream> {
    Ok(TcpStream::connect(("server", PORT)).await?)
}

/// Closes `stream` once the server has closed its side too (the server's socket is gone
/// then: a later connect from the same port is a new connection to it).
async fn close(mut stream: TcpStream) -> turmoil::Result {
    stream.shutdown().await?;
    let mut byte = [0; 1];
    assert_eq!(stream.read(&mut byte).await?, 0, "the server sends nothing");
    Ok(())
}

fn port(stream: &TcpStream) -> u16 {
    stream.local_addr().unwrap().port()
}

#[test]
fn a_wrapped_search_skips_held_ports_and_reuses_closed_ones() {
    let mut sim = four_port_sim();
    sim.client("phone", async {
        let a = connect().await?;
        let b = connect().await?;
        assert_eq!((port(&a), port(&b)), (FIRST, FIRST + 1));
        // Two short-lived connections take the last two ports and give them back.
        let c = connect().await?;
        assert_eq!(port(&c), FIRST + 2);
        close(c).await?;
        let d = connect().await?;
        assert_eq!(port(&d), FIRST + 3);
        close(d).await?;
        // The search wraps to the first port: it and the next are still held by `a` and
        // `b`, so the port `c` gave back is the one chosen.
        let e = connect().await?;
        assert_eq!(
            port(&e),
            FIRST + 2,
            "held ports skipped, a closed one reused"
        );
        // Now `b` goes: the search continues after `e` to the free last port, then wraps
        // past `a` to `b`'s old one.
        close(b).await?;
        let f = connect().await?;
        assert_eq!(port(&f), FIRST + 3);
        let g = connect().await?;
        assert_eq!(port(&g), FIRST + 1);
        drop((a, e, f, g));
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn a_host_takes_its_links_messages_in_the_order_the_links_were_made() {
    // Every pair of hosts has a link, made as hosts are added: (server, c1), (server, c2),
    // (c1, c2), (server, c3), ... Three SYNs sent in one step with the same latency reach
    // the server in one step, and its accept queue holds them in the order of its links.
    let mut sim = turmoil::Builder::new()
        .rng_seed(1)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(10))
        .build();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let log = accepted.clone();
    sim.host("server", move || {
        let log = log.clone();
        async move {
            let listener = TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), PORT)).await?;
            let mut held = Vec::new();
            loop {
                let (stream, peer) = listener.accept().await?;
                log.lock()
                    .unwrap()
                    .push(turmoil::reverse_lookup(peer.ip()).unwrap());
                held.push(stream);
            }
        }
    });
    for name in ["c1", "c2", "c3"] {
        sim.client(name, async {
            connect().await?;
            Ok(())
        });
    }
    sim.run().unwrap();
    assert_eq!(*accepted.lock().unwrap(), ["c1", "c2", "c3"]);
}

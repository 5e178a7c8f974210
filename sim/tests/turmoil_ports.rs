//! The vendored turmoil (vendor/README.md) picks a connecting host's ephemeral port from a
//! count of the sockets on each local port instead of a scan of its sockets. This test pins
//! what the scan did: the next port after the last one given, skipping every port a live
//! socket holds, and a port free again once its socket is gone.

use std::net::{IpAddr, Ipv4Addr};
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

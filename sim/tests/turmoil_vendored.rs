//! The vendored turmoil's edits (vendor/README.md) must not change what a simulation does.
//! Its connecting host picks an ephemeral port from a count of the sockets on each local port
//! instead of a scan of its sockets: the first test pins what the scan did (the next port
//! after the last one given, skipping every port a live socket holds, a port free again once
//! its socket is gone). A stepping host takes what arrived for it from its own links instead
//! of scanning every link: the second pins the order upstream's scan delivered in. A stream
//! socket queues what arrived in a small queue of its own instead of a tokio channel: three
//! tests pin what the channel did (a reader spends its task's cooperative budget, a reset
//! stream gives what arrived before the reset, a socket whose reader is gone answers with a
//! reset). A writer takes its seq from its stream's flow control instead of looking its socket
//! up: the reset test and one more pin when a write is refused (its own socket reset away) and
//! when it is not (the peer's socket gone). The next segment in order skips the reorder
//! buffer: a test pins the order in which segments that arrive out of order are read. Only
//! links with messages on them are ticked: a test pins the clock an idle link's next
//! message is delayed from. Steps in which nothing would happen can run as one: the last two
//! tests pin where the skip stops (before a timer's step, at a queued task or a message).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// A simulation with a fixed latency, so that segments sent in one step arrive in one step.
fn fixed_latency_sim(tcp_capacity: usize) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(1)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .tcp_capacity(tcp_capacity)
        .simulation_duration(Duration::from_secs(10))
        .build()
}

async fn accept_one() -> turmoil::Result<TcpStream> {
    let listener = TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), PORT)).await?;
    Ok(listener.accept().await?.0)
}

/// Accepts one connection, writes `n` segments of one byte each (0, 1, 2, ... mod 256) in one
/// step, and holds the connection until the client closes it.
async fn serve_one_byte_segments(n: usize) -> turmoil::Result {
    let mut stream = accept_one().await?;
    for i in 0..n {
        stream.write_all(&[i as u8]).await?;
    }
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await?;
    Ok(())
}

#[test]
fn a_reader_of_a_long_queue_yields_when_its_task_budget_is_spent() {
    // 300 one-byte segments wait in the client's queue. Reading them one by one in one poll
    // of the task, the reader spends tokio's budget (128 a poll) and yields, so another task
    // of the host runs before the last byte is read, as with tokio's channel.
    const SEGMENTS: usize = 300;
    let mut sim = fixed_latency_sim(1024);
    sim.host("server", || serve_one_byte_segments(SEGMENTS));
    sim.client("phone", async {
        let mut stream = connect().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (ticks, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let ticker = tokio::spawn({
            let (ticks, done) = (ticks.clone(), done.clone());
            async move {
                while !done.load(Ordering::Relaxed) {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut seen = Vec::with_capacity(SEGMENTS);
        for i in 0..SEGMENTS {
            let mut byte = [0; 1];
            stream.read_exact(&mut byte).await?;
            assert_eq!(byte[0], i as u8, "segment {i}");
            seen.push(ticks.load(Ordering::Relaxed));
        }
        done.store(true, Ordering::Relaxed);
        ticker.await?;
        assert_eq!(
            seen[0], 0,
            "nothing made the reader wait for the first segment"
        );
        assert!(
            seen[SEGMENTS - 1] > 0,
            "the reader never yielded while taking {SEGMENTS} segments"
        );
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn a_reset_stream_gives_what_arrived_before_the_reset() {
    // The server closes with the phone's byte unread, which resets the connection: the
    // phone's socket goes, but "abc", which arrived before the reset, is still read. A write
    // then is refused (broken pipe): the writer takes its seq from its stream, not from a
    // lookup of its socket, and the socket's going closed the stream's sending direction, as
    // the lookup that found no socket refused it.
    let mut sim = fixed_latency_sim(64);
    sim.host("server", || async {
        let mut stream = accept_one().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream.write_all(b"abc").await?;
        drop(stream);
        std::future::pending::<()>().await;
        Ok(())
    });
    sim.client("phone", async {
        let mut stream = connect().await?;
        stream.write_all(b"x").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut buf = [0; 8];
        let n = stream.read(&mut buf).await?;
        assert_eq!(&buf[..n], b"abc");
        let end = stream.read(&mut buf).await;
        assert_eq!(
            end.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset)
        );
        let late = stream.write(b"y").await;
        assert_eq!(
            late.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::BrokenPipe)
        );
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn data_for_a_socket_whose_reader_is_gone_is_answered_with_a_reset() {
    // The phone drops its read half (nothing unread, so its socket stays for the write
    // half) and says so; what the server sends then has no reader and resets the server.
    let mut sim = fixed_latency_sim(64);
    sim.client("server", async {
        let mut stream = accept_one().await?;
        let mut go = [0; 2];
        stream.read_exact(&mut go).await?;
        stream.write_all(b"abc").await?;
        let mut buf = [0; 8];
        let end = stream.read(&mut buf).await;
        assert_eq!(
            end.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset)
        );
        Ok(())
    });
    sim.client("phone", async {
        let (read, mut write) = connect().await?.into_split();
        drop(read);
        write.write_all(b"go").await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(write);
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn a_peer_whose_socket_is_gone_leaves_this_sides_writes_open() {
    // The accepting side's socket goes when the server drops its stream (a FIN, nothing
    // unread); its closing closes only its own sending direction. The phone's socket stays,
    // so the phone's write still goes out, and the server's answer to it, a reset, is what
    // takes the phone's socket.
    let mut sim = fixed_latency_sim(64);
    sim.host("server", || async {
        drop(accept_one().await?);
        std::future::pending::<()>().await;
        Ok(())
    });
    sim.client("phone", async {
        let mut stream = connect().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            stream.write(b"late").await?,
            4,
            "the phone's socket is still there"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let again = stream.write(b"again").await;
        assert_eq!(
            again.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::BrokenPipe),
            "the server's reset took the phone's socket"
        );
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn segments_that_arrive_out_of_order_are_read_in_order() {
    // Each segment draws its own latency, so 200 segments written in one step arrive out of
    // order: the early ones wait in the socket's reorder buffer, and the next one in order
    // goes to the reader with every parked one that follows it, the last to arrive too (no
    // later arrival would release what it left parked). Several seeds, several orders.
    for seed in 1..=SEEDS {
        out_of_order_run(seed);
    }
}

const SEEDS: u64 = 32;

fn out_of_order_run(seed: u64) {
    const SEGMENTS: usize = 200;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(50))
        .tcp_capacity(1024)
        .simulation_duration(Duration::from_secs(10))
        .build();
    sim.host("server", || serve_one_byte_segments(SEGMENTS));
    sim.client("phone", async {
        let mut stream = connect().await?;
        let mut bytes = vec![0; SEGMENTS];
        stream.read_exact(&mut bytes).await?;
        let expected: Vec<u8> = (0..SEGMENTS).map(|i| i as u8).collect();
        assert_eq!(bytes, expected);
        Ok(())
    });
    if let Err(error) = sim.run() {
        panic!("seed {seed}: {error}");
    }
}

#[test]
fn a_link_idle_for_seconds_delays_its_next_message_from_the_networks_time() {
    // Only links with messages on them are ticked; an idle link's clock is set when it is
    // reached. A connect after two idle seconds waits for its SYN's 50 ms from the time it
    // is sent (turmoil completes a connect when the SYN is delivered), as upstream's
    // every-link tick gave: with a clock left at the link's last tick, the 50 ms would count
    // from then and the SYN would arrive at the next step.
    // Three idle hosts add links that stay idle throughout.
    let mut sim = turmoil::Builder::new()
        .rng_seed(1)
        .min_message_latency(Duration::from_millis(50))
        .max_message_latency(Duration::from_millis(50))
        .simulation_duration(Duration::from_secs(10))
        .build();
    let took = Arc::new(Mutex::new(None));
    let seen = took.clone();
    sim.host("server", || async {
        let _held = accept_one().await?;
        std::future::pending::<()>().await;
        Ok(())
    });
    for idle in ["idle-1", "idle-2", "idle-3"] {
        sim.host(idle, std::future::pending);
    }
    sim.client("phone", async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let started = tokio::time::Instant::now();
        let _stream = connect().await?;
        *seen.lock().unwrap() = Some(started.elapsed());
        Ok(())
    });
    sim.run().unwrap();
    let took = took.lock().unwrap().expect("connected");
    assert!(
        (Duration::from_millis(50)..Duration::from_millis(55)).contains(&took),
        "connect took {took:?}, not the SYN's 50 ms"
    );
}

/// Where the simulation skips steps in which nothing would happen (`Sim::idle_steps`,
/// `Sim::skip_idle`): a host that sleeps for 10 s and then sends, a host that answers what
/// arrives. Skipping stops before the step in which the sleep ends, so the message leaves and
/// its answer arrives at the same moments as when every step runs; a task queued to run or a
/// message on the network allows no skip at all.
#[test]
fn idle_steps_are_skipped_up_to_the_next_timer_and_no_further() {
    /// The moments (ms of simulated time) the answer arrived, and the steps skipped.
    fn run(skip: bool, seed: u64) -> (Vec<u128>, u64) {
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            .tick_duration(Duration::from_millis(100))
            .simulation_duration(Duration::from_secs(60))
            .build();
        sim.host("server", || async {
            let listener = TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), PORT)).await?;
            let (mut stream, _) = listener.accept().await?;
            let mut byte = [0; 1];
            while stream.read(&mut byte).await? == 1 {
                stream.write_all(&byte).await?;
            }
            Ok(())
        });
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let seen = arrived.clone();
        sim.client("phone", async move {
            let mut stream = connect().await?;
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(10_050)).await;
                stream.write_all(&[7]).await?;
                let mut byte = [0; 1];
                stream.read_exact(&mut byte).await?;
                seen.lock()
                    .unwrap()
                    .push(turmoil::sim_elapsed().unwrap().as_millis());
            }
            Ok(())
        });
        let mut skipped = 0;
        loop {
            if sim.step().unwrap() {
                break;
            }
            if skip {
                let idle = sim.idle_steps(u64::MAX);
                skipped += idle;
                if sim.skip_idle(idle).unwrap() {
                    break;
                }
            }
        }
        let arrived = arrived.lock().unwrap().clone();
        (arrived, skipped)
    }
    // The network's latencies are drawn from the seed: each seed moves the moments.
    for seed in 1..=4 {
        let (every_step, none) = run(false, seed);
        let (skipping, skipped) = run(true, seed);
        assert_eq!(none, 0);
        assert_eq!(every_step.len(), 3, "seed {seed}: {every_step:?}");
        assert_eq!(skipping, every_step, "seed {seed}");
        // Three sleeps of 100 steps and a half: all but the few around each wake-up skipped.
        assert!(
            (280..=300).contains(&skipped),
            "seed {seed}: {skipped} steps skipped"
        );
    }
}

/// No step is idle while a host has a task queued to run or a message is on the network.
#[test]
fn a_queued_task_or_a_message_in_flight_allows_no_skip() {
    let mut sim = turmoil::Builder::new()
        .rng_seed(1)
        .tick_duration(Duration::from_millis(100))
        .simulation_duration(Duration::from_secs(60))
        .build();
    let go = Arc::new(tokio::sync::Notify::new());
    let woken = go.clone();
    let sent = Arc::new(AtomicBool::new(false));
    let done = sent.clone();
    sim.host("server", || async {
        let listener = TcpListener::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), PORT)).await?;
        let (mut stream, _) = listener.accept().await?;
        let mut byte = [0; 1];
        while stream.read(&mut byte).await? == 1 {}
        Ok(())
    });
    sim.client("phone", async move {
        let mut stream = connect().await?;
        woken.notified().await;
        stream.write_all(&[7]).await?;
        done.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    });
    // Connected and waiting: nothing is due on any host, however far ahead.
    for _ in 0..5 {
        sim.step().unwrap();
    }
    assert_eq!(sim.idle_steps(1_000), 1_000);
    // Woken from outside the simulation: its task is queued, so no step is idle.
    go.notify_one();
    assert_eq!(sim.idle_steps(1_000), 0);
    sim.step().unwrap();
    assert!(sent.load(Ordering::SeqCst));
    // Its byte is on the network now.
    assert_eq!(sim.idle_steps(1_000), 0);
}

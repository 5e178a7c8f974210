//! Load for `bench/proxy-overhead.sh`: an echo server, and a closed-loop echo client that
//! reports round trips per second and latency percentiles as one JSON line. The proxy under
//! test is the `imlab proxy` binary (or `proxy_bench proxy`, the same library), run as its own
//! process so its CPU time can be read from /proc.
//!
//! Usage:
//!   proxy_bench echo ADDR
//!   proxy_bench proxy LISTEN UPSTREAM        (zero-delay, zero-loss profile)
//!   proxy_bench ping TARGET CONNECTIONS SECONDS MESSAGE_BYTES

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    match args.first().map(String::as_str) {
        Some("echo") => runtime.block_on(echo(args[1].parse().unwrap())),
        Some("proxy") => {
            runtime.block_on(proxy(args[1].parse().unwrap(), args[2].parse().unwrap()))
        }
        Some("ping") => runtime.block_on(ping(
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
        )),
        _ => eprintln!(
            "usage: proxy_bench echo ADDR | proxy LISTEN UPSTREAM | ping TARGET N SECONDS BYTES"
        ),
    }
}

async fn echo(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    loop {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// The zero-delay, zero-loss profile: the proxy's overhead floor.
pub fn zero_profile() -> imlab_carrier::CarrierProfile {
    let mut profile = imlab_carrier::preset("us-lte").unwrap();
    profile.name = "zero".into();
    profile.rtt_median = Duration::ZERO;
    profile.rtt_p99 = Duration::ZERO;
    profile.loss = 0.0;
    profile.bandwidth_kbps = u32::MAX;
    profile
}

async fn proxy(listen: SocketAddr, upstream: SocketAddr) {
    let proxy = imlab_proxy::Proxy::new(imlab_proxy::ProxyConfig {
        upstream,
        profile: zero_profile(),
        seed: 1,
        time_scale: 1.0,
        flows_max: 9_000,
        trace: None,
    })
    .unwrap();
    let listener = TcpListener::bind(listen).await.unwrap();
    proxy.run(listener, std::future::pending()).await;
}

async fn ping(target: SocketAddr, connections: usize, seconds: u64, message_bytes: usize) {
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(target).await.unwrap();
        stream.set_nodelay(true).unwrap();
        streams.push(stream);
    }
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for mut stream in streams {
        tasks.push(tokio::spawn(async move {
            let message = vec![7u8; message_bytes];
            let mut reply = vec![0u8; message_bytes];
            let mut latencies_us = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                stream.write_all(&message).await.unwrap();
                stream.read_exact(&mut reply).await.unwrap();
                latencies_us.push(sent.elapsed().as_micros() as u64);
            }
            latencies_us
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    println!(
        "{{\"connections\":{connections},\"round_trips_per_s\":{:.0},\"mbit_per_s_each_way\":{:.1},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        all.len() as f64 / elapsed,
        all.len() as f64 * message_bytes as f64 * 8.0 / elapsed / 1e6,
        at(0.5),
        at(0.99),
        all[all.len() - 1]
    );
}

//! The server core's 1:1 message rate on loopback with one client pair.
//!
//! Alice pipelines Sends (a window of unacked sends) to Bob over raw frames; Bob acks what he
//! receives. Reports messages per second from the first send to Bob's last delivery, and the
//! ack rate. Prints a table.
//!
//! Run: `cargo bench -p imlab-core --bench loopback` (`-- N WINDOW` to change the defaults).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use imlab_core::auth::Authenticator;
use imlab_core::clock::SystemClock;
use imlab_core::codec::DEFAULT_MAX_FRAME_BYTES;
use imlab_core::framed::{FrameReader, FrameWriter};
use imlab_core::proto::{self, Body, Frame};
use imlab_core::server::{LoggingPushProvider, Server, ServerConfig, ServerDeps};
use imlab_core::store::MemoryStore;
use tokio::net::TcpStream;

type Conn = (
    FrameReader<tokio::net::tcp::OwnedReadHalf>,
    FrameWriter<tokio::net::tcp::OwnedWriteHalf>,
);

async fn login(addr: std::net::SocketAddr, user: &str) -> Conn {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::new(read, DEFAULT_MAX_FRAME_BYTES);
    let mut writer = FrameWriter::new(write, DEFAULT_MAX_FRAME_BYTES);
    let login = proto::Login {
        user: user.into(),
        device: "d".into(),
        token: String::new(),
        heartbeat_interval_max_s: 300,
        send_ack_is_copy: false,
    };
    writer.send(&Frame::new(Body::Login(login))).await.unwrap();
    reader.next().await.unwrap().unwrap();
    (reader, writer)
}

async fn run(n_messages: u64, window: u64) -> (f64, f64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(Server::new(
        ServerConfig {
            outbox_len_max: 65_536,
            ..ServerConfig::default()
        },
        ServerDeps {
            store: Arc::new(MemoryStore::new()),
            clock: Arc::new(SystemClock),
            push: Arc::new(LoggingPushProvider),
            auth: Authenticator::Dev,
        },
    ));
    let running = server.clone();
    tokio::spawn(async move { running.run(listener, std::future::pending()).await });
    let (mut alice_in, mut alice_out) = login(addr, "alice").await;
    let (mut bob_in, mut bob_out) = login(addr, "bob").await;

    let start = Instant::now();
    let bob = tokio::spawn(async move {
        let mut received = 0u64;
        while received < n_messages {
            let frame = bob_in.next().await.unwrap().unwrap();
            if let Some(Body::NotifyData(data)) = frame.body {
                received += 1;
                if received.is_multiple_of(64) || received == n_messages {
                    let seq = data.message.unwrap().seq;
                    let ack = Frame::new(Body::DeviceAck(proto::DeviceAck { seq }));
                    bob_out.send(&ack).await.unwrap();
                }
            }
        }
        start.elapsed()
    });
    let body = Bytes::from(vec![b'x'; 200]);
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < n_messages {
        while sent < n_messages && sent - acked < window {
            let send = Frame::new(Body::Send(proto::Send {
                client_msg_id: format!("d-{sent}"),
                to: Some(proto::send::To::PeerUser("bob".into())),
                body: body.clone(),
            }));
            alice_out.feed(&send).unwrap();
            sent += 1;
        }
        alice_out.flush().await.unwrap();
        let frame = alice_in.next().await.unwrap().unwrap();
        if let Some(Body::SendAck(_)) = frame.body {
            acked += 1;
        }
    }
    let acked_in = start.elapsed();
    let delivered_in = bob.await.unwrap();
    (
        n_messages as f64 / delivered_in.as_secs_f64(),
        n_messages as f64 / acked_in.as_secs_f64(),
    )
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n_messages = args.first().copied().unwrap_or(200_000);
    let window = args.get(1).copied().unwrap_or(256);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| run | messages | window | delivered msg/s | acked msg/s |");
    println!("|-----|----------|--------|-----------------|-------------|");
    let mut delivered_rates = Vec::new();
    for run_n in 1..=3 {
        let (delivered, acked) = runtime.block_on(run(n_messages, window));
        delivered_rates.push(delivered);
        println!("| {run_n} | {n_messages} | {window} | {delivered:.0} | {acked:.0} |");
    }
    delivered_rates.sort_by(f64::total_cmp);
    println!("median delivered msg/s: {:.0}", delivered_rates[1]);
}

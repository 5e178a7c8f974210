//! The push service (a model of APNs/FCM) and both ends of it.
//!
//! - The IM server's [`SimPushProvider`] queues notices (bounded) for a task on the server
//!   host, which forwards them as JSON lines to the push host.
//! - The push host keeps one channel per device, opened by the device's OS through its
//!   carrier (the same NAT as the app's connection), and writes a wake-up (a `Notify` frame)
//!   to every registered device of the user. A dead channel (an expired NAT mapping) swallows
//!   the wake-up, as on real 5-minute NATs.
//! - The device side ([`push_channel`]) logs in, keeps the channel alive with the GCM
//!   heartbeat (15 min on Wi-Fi, 28 min on mobile data) and hands wake-ups to the app.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use imlab_core::codec::DEFAULT_MAX_FRAME_BYTES;
use imlab_core::framed::{FrameReader, FrameWriter};
use imlab_core::proto::{self, Body, Frame};
use imlab_core::server::{PushNotice, PushProvider};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use turmoil::net::{TcpListener, TcpStream};

use crate::pipe::PipeEnd;
use crate::proxy::{TARGET_PUSH, open_via_carrier};
use crate::trace::Event;
use crate::world::{PUSH_DEVICE_PORT, PUSH_SERVER_PORT, Shared};

/// Notices the server queues for the push service at most; more are dropped (and counted).
const NOTICE_QUEUE_LEN_MAX: usize = 4_096;
/// A device channel silent this long is dropped by the push host.
const CHANNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(42 * 60);
/// Wake-ups queued per device channel at most.
const WAKE_QUEUE_LEN_MAX: usize = 16;

#[derive(Debug, Serialize, Deserialize)]
struct NoticeLine {
    user: String,
    seq: u64,
}

/// The server's push provider inside the simulation.
pub struct SimPushProvider {
    /// Weak: the world holds the server (`Shared::server`), which holds this provider; a
    /// strong reference back made a cycle that kept every finished run's world, store and
    /// ledger alive (a fuzz or sweep process grew by each case's world).
    shared: Weak<Shared>,
    queue: mpsc::Sender<PushNotice>,
}

impl SimPushProvider {
    /// A provider and the forwarding task to run on the server host.
    pub fn new(shared: &Arc<Shared>) -> (SimPushProvider, impl Future<Output = ()> + use<>) {
        let (queue, notices) = mpsc::channel(NOTICE_QUEUE_LEN_MAX);
        let shared = Arc::downgrade(shared);
        (SimPushProvider { shared, queue }, forward(notices))
    }
}

impl PushProvider for SimPushProvider {
    fn push(&self, notice: PushNotice) {
        // The world outlives its hosts, so it is there while the server runs.
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let user: u32 = notice
            .user
            .trim_start_matches('u')
            .parse()
            .unwrap_or(u32::MAX);
        shared.trace(Event::Push {
            user,
            seq: notice.seq,
        });
        Shared::count(&shared.counters.pushes_sent);
        if self.queue.try_send(notice).is_err() {
            Shared::count(&shared.counters.wakeups_lost);
        }
    }
}

/// Forwards queued notices to the push host, reconnecting as needed.
async fn forward(mut notices: mpsc::Receiver<PushNotice>) {
    let mut connection: Option<TcpStream> = None;
    while let Some(notice) = notices.recv().await {
        let line = serde_json::to_string(&NoticeLine {
            user: notice.user,
            seq: notice.seq,
        })
        .expect("a notice serializes");
        for _ in 0..2 {
            if connection.is_none() {
                connection = TcpStream::connect(("push", PUSH_SERVER_PORT)).await.ok();
            }
            let Some(stream) = connection.as_mut() else {
                break;
            };
            if stream
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_ok()
            {
                break;
            }
            connection = None;
        }
    }
}

type Channels =
    Arc<std::sync::Mutex<BTreeMap<String, BTreeMap<String, (u64, crate::queue::Sender<()>)>>>>;

/// Runs the push host.
pub async fn push_host(shared: Arc<Shared>) -> turmoil::Result {
    let channels: Channels = Arc::default();
    let devices = TcpListener::bind(("0.0.0.0", PUSH_DEVICE_PORT)).await?;
    let server = TcpListener::bind(("0.0.0.0", PUSH_SERVER_PORT)).await?;
    let notices_shared = shared.clone();
    let notices_channels = channels.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = server.accept().await {
            tokio::spawn(read_notices(
                notices_shared.clone(),
                notices_channels.clone(),
                stream,
            ));
        }
    });
    let mut next_channel = 0u64;
    loop {
        let (stream, _) = devices.accept().await?;
        next_channel += 1;
        tokio::spawn(serve_channel(
            shared.clone(),
            channels.clone(),
            stream,
            next_channel,
        ));
    }
}

async fn read_notices(shared: Arc<Shared>, channels: Channels, stream: TcpStream) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(notice) = serde_json::from_str::<NoticeLine>(&line) else {
            continue;
        };
        if shared.push_down.load(Ordering::Relaxed) {
            Shared::count(&shared.counters.wakeups_lost);
            continue;
        }
        let channels = channels.lock().unwrap_or_else(|p| p.into_inner());
        let mut delivered = false;
        if let Some(devices) = channels.get(&notice.user) {
            for (_, wake) in devices.values() {
                delivered |= wake.try_send(()).is_ok();
            }
        }
        if !delivered {
            Shared::count(&shared.counters.wakeups_lost);
        }
    }
}

async fn serve_channel(
    shared: Arc<Shared>,
    channels: Channels,
    stream: TcpStream,
    channel_id: u64,
) {
    let (read, write) = stream.into_split();
    let mut input = FrameReader::new(read, DEFAULT_MAX_FRAME_BYTES);
    let mut out = FrameWriter::new(write, DEFAULT_MAX_FRAME_BYTES);
    let Ok(Some(Frame {
        body: Some(Body::Login(login)),
    })) = input.next().await
    else {
        return;
    };
    let device = crate::world::device_index(&login.device)
        .filter(|device| *device < shared.layout.devices.len());
    let (wake_tx, mut wakes) = crate::queue::bounded(WAKE_QUEUE_LEN_MAX);
    channels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(login.user.clone())
        .or_default()
        .insert(login.device.clone(), (channel_id, wake_tx));
    loop {
        tokio::select! {
            biased;
            // Like FCM's servers, drop a channel silent for longer than 1.5 times the longest
            // GCM heartbeat: its device is gone (a dead NAT mapping never says so).
            () = tokio::time::sleep(CHANNEL_IDLE_TIMEOUT) => break,
            frame = input.next() => match frame {
                Ok(Some(Frame { body: Some(Body::Ping(ping)) })) => {
                    let pong = Frame::new(Body::Pong(proto::Pong { id: ping.id, server_time_ms: 0 }));
                    if out.send(&pong).await.is_err() {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                _ => break,
            },
            Some(()) = wakes.recv() => {
                let wake = Frame::new(Body::Notify(proto::Notify { max_seq: 0 }));
                if out.send(&wake).await.is_err() {
                    break;
                }
                if let Some(device) = device {
                    shared.ledger(|l| l.devices[device].wakeups_written += 1);
                }
            }
        }
    }
    let mut channels = channels.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(devices) = channels.get_mut(&login.user)
        && devices
            .get(&login.device)
            .is_some_and(|(id, _)| *id == channel_id)
    {
        devices.remove(&login.device);
    }
}

/// The device's OS-level push channel: keeps a connection to the push host through the
/// device's current carrier and signals `wake` for every wake-up. Runs until the cell host
/// stops.
pub async fn push_channel(
    shared: Arc<Shared>,
    device: usize,
    wake: crate::queue::Sender<()>,
    mut carrier: tokio::sync::watch::Receiver<usize>,
) {
    let user = crate::world::user_id(shared.layout.devices[device].user);
    let device_id = crate::world::device_id(device as u32);
    let mut attempt = 0u32;
    loop {
        carrier.mark_unchanged();
        if let Ok(stream) = open_via_carrier(&shared, device, TARGET_PUSH) {
            attempt = 0;
            // The OS drops the channel when the device changes network, and reconnects.
            tokio::select! {
                biased;
                () = serve_push_connection(&shared, device, stream, &user, &device_id, &wake) => {}
                _ = carrier.changed() => continue,
            }
        }
        attempt = attempt.saturating_add(1);
        // GCM reconnects with backoff; a short one keeps the model simple.
        let backoff = Duration::from_secs(10 * u64::from(attempt.min(6)));
        tokio::select! {
            biased;
            () = tokio::time::sleep(backoff) => {}
            _ = carrier.changed() => {}
        }
    }
}

async fn serve_push_connection(
    shared: &Shared,
    device: usize,
    stream: PipeEnd,
    user: &str,
    device_id: &str,
    wake: &crate::queue::Sender<()>,
) {
    let (read, write) = tokio::io::split(stream);
    let mut input = FrameReader::new(read, DEFAULT_MAX_FRAME_BYTES);
    let mut out = FrameWriter::new(write, DEFAULT_MAX_FRAME_BYTES);
    let login = Frame::new(Body::Login(proto::Login {
        user: user.to_string(),
        device: device_id.to_string(),
        token: String::new(),
        heartbeat_interval_max_s: 0,
        send_ack_is_copy: false,
    }));
    if out.send(&login).await.is_err() {
        return;
    }
    let mut ping_id = 0u64;
    loop {
        let carrier = shared.device_carrier[device].load(Ordering::Relaxed);
        let interval = if shared.scenario.carriers[carrier].wifi {
            Duration::from_secs(15 * 60)
        } else {
            Duration::from_secs(28 * 60)
        };
        let frame = tokio::time::timeout(interval, input.next()).await;
        match frame {
            Ok(Ok(Some(Frame {
                body: Some(Body::Notify(_)),
            }))) => {
                let _ = wake.try_send(());
            }
            Ok(Ok(Some(_))) => {}
            Ok(_) => return,
            Err(_) => {
                ping_id += 1;
                let ping = Frame::new(Body::Ping(proto::Ping { id: ping_id }));
                if out.send(&ping).await.is_err() {
                    return;
                }
                // The channel is dead if the Pong does not come within 20 s.
                match tokio::time::timeout(Duration::from_secs(20), input.next()).await {
                    Ok(Ok(Some(Frame {
                        body: Some(Body::Notify(_)),
                    }))) => {
                        let _ = wake.try_send(());
                    }
                    Ok(Ok(Some(_))) => {}
                    _ => return,
                }
            }
        }
    }
}

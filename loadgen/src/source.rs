//! Local source addresses and the open-file limit: what bounds how many connections one
//! load-generator process can hold.
//!
//! The target's addresses are dealt round the clients ([`SourceConnector`]), each client
//! moving on to the next address when a connect fails.
//!
//! One source address has about 28,000 ephemeral ports towards one target; spreading clients
//! over several loopback addresses (`--source-ips 127.0.0.2-127.0.0.9`) lifts that. The
//! open-file hard limit bounds one process whatever the addresses: beyond it, `--workers`
//! splits the clients over processes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use imlab_core::net::Connector;
use tokio::net::{TcpSocket, TcpStream};

/// Addresses one run may use at most.
const SOURCE_IPS_MAX: usize = 65_536;

/// Parses `A-B` (inclusive), `A/PREFIX` or a single address; all must be loopback.
pub fn parse_source_ips(text: &str) -> Result<Vec<IpAddr>, String> {
    let bad = |why: &str| format!("--source-ips {text:?}: {why}");
    let parse = |s: &str| {
        s.trim()
            .parse::<Ipv4Addr>()
            .map_err(|_| bad(&format!("{s:?} is not an IPv4 address")))
    };
    let (first, last) = if let Some((a, b)) = text.split_once('-') {
        (u32::from(parse(a)?), u32::from(parse(b)?))
    } else if let Some((a, prefix)) = text.split_once('/') {
        let prefix: u32 = prefix
            .parse()
            .map_err(|_| bad("the prefix must be a number"))?;
        if !(16..=32).contains(&prefix) {
            return Err(bad("the prefix must be in 16..=32"));
        }
        let base = u32::from(parse(a)?) & (u32::MAX << (32 - prefix));
        (base, base | (u32::MAX >> prefix))
    } else {
        let one = u32::from(parse(text)?);
        (one, one)
    };
    if first > last {
        return Err(bad("the range is empty"));
    }
    if (last - first) as usize >= SOURCE_IPS_MAX {
        return Err(bad(&format!("more than {SOURCE_IPS_MAX} addresses")));
    }
    let ips: Vec<IpAddr> = (first..=last)
        .map(|ip| IpAddr::V4(Ipv4Addr::from(ip)))
        .collect();
    if let Some(outside) = ips.iter().find(|ip| !ip.is_loopback()) {
        return Err(bad(&format!(
            "{outside} is not a loopback address (127.0.0.0/8)"
        )));
    }
    Ok(ips)
}

/// The target's addresses (one, or a gateway tier's: every address `--target` resolved to),
/// with each one's TCP connects and failed connects, counted as they happen.
#[derive(Debug)]
pub struct TargetAddresses {
    addresses: Vec<SocketAddr>,
    /// How long a TCP connect to one address may take when there are several, so that a
    /// blackholed address leaves the client time for the next ones within its connect
    /// timeout.
    attempt_timeout: Duration,
    connects: Vec<AtomicU64>,
    failures: Vec<AtomicU64>,
}

/// One address's counts so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressCounts {
    /// The address.
    pub address: SocketAddr,
    /// TCP connects it accepted.
    pub connects: u64,
    /// TCP connects to it that failed (refused, unreachable, reset), each then tried on the
    /// next address.
    pub failures: u64,
}

impl TargetAddresses {
    /// For `addresses`, at least one, with `connect_timeout` the devices' time for a whole
    /// connect: a TCP connect to one of several addresses gets an equal share of it.
    pub fn new(addresses: Vec<SocketAddr>, connect_timeout: Duration) -> Arc<TargetAddresses> {
        assert!(!addresses.is_empty(), "a target has an address");
        let counters = || addresses.iter().map(|_| AtomicU64::new(0)).collect();
        Arc::new(TargetAddresses {
            attempt_timeout: connect_timeout / addresses.len() as u32,
            connects: counters(),
            failures: counters(),
            addresses,
        })
    }

    /// The addresses, in `--target`'s order.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// The address client `client` (its number in the run) tries first: clients are dealt
    /// round the addresses, as round-robin DNS or a client's IP list spreads phones.
    pub fn first_of(&self, client: u32) -> usize {
        client as usize % self.addresses.len()
    }

    /// Every address's counts so far.
    pub fn counts(&self) -> Vec<AddressCounts> {
        (0..self.addresses.len())
            .map(|i| AddressCounts {
                address: self.addresses[i],
                connects: self.connects[i].load(Ordering::Relaxed),
                failures: self.failures[i].load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// Connects from a chosen local address, with TCP_NODELAY, to the client's first address of
/// the target and, when a connect there fails, to the next ones in turn (as a phone with an
/// IP list moves on to the next gateway); the error of a connect every address refused is
/// the last one's, with the addresses named. With several addresses, a TCP connect to one
/// that does not answer in its share of the connect timeout counts as failed there (a
/// blackholed address), so the next ones are tried in time.
#[derive(Debug, Clone)]
pub struct SourceConnector {
    /// The server's addresses.
    pub targets: Arc<TargetAddresses>,
    /// Which of them this connector tries first.
    pub first: usize,
    /// The local address to bind; `None` lets the kernel choose.
    pub source: Option<IpAddr>,
}

impl SourceConnector {
    /// The address this connector tries first.
    pub fn target(&self) -> SocketAddr {
        self.targets.addresses[self.first]
    }

    async fn connect_to(&self, target: SocketAddr) -> io::Result<TcpStream> {
        let socket = match target {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = self.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Connector for SourceConnector {
    type Stream = TcpStream;

    async fn connect(&self) -> io::Result<TcpStream> {
        let targets = &self.targets;
        let n = targets.addresses.len();
        let mut failed = None;
        for k in 0..n {
            let i = (self.first + k) % n;
            let connecting = self.connect_to(targets.addresses[i]);
            let connected = if n == 1 {
                connecting.await
            } else {
                tokio::time::timeout(targets.attempt_timeout, connecting)
                    .await
                    .unwrap_or_else(|_| {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "no answer from {} in {:?}",
                                targets.addresses[i], targets.attempt_timeout
                            ),
                        ))
                    })
            };
            match connected {
                Ok(stream) => {
                    targets.connects[i].fetch_add(1, Ordering::Relaxed);
                    return Ok(stream);
                }
                Err(error) => {
                    targets.failures[i].fetch_add(1, Ordering::Relaxed);
                    failed = Some(error);
                }
            }
        }
        let error = failed.expect("a target has an address");
        if n == 1 {
            return Err(error);
        }
        // The kind stays the last failure's: the client core counts a refused connect as one.
        let tried: Vec<String> = (0..n)
            .map(|k| targets.addresses[(self.first + k) % n].to_string())
            .collect();
        Err(io::Error::new(
            error.kind(),
            format!(
                "every address failed ({}); the last: {error}",
                tried.join(", ")
            ),
        ))
    }
}

/// File descriptors a process needs besides its client sockets.
pub const SPARE_FDS: u64 = 64;

/// Raises the open-file soft limit to the hard limit; returns the limit now in force.
pub fn raise_open_file_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Clients one process can hold under `limit` open files.
pub fn clients_per_process_max(limit: u64) -> u64 {
    limit.saturating_sub(SPARE_FDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_parse_or_say_why_not() {
        assert_eq!(parse_source_ips("127.0.0.2-127.0.0.4").unwrap().len(), 3);
        assert_eq!(parse_source_ips("127.0.0.0/30").unwrap().len(), 4);
        assert_eq!(
            parse_source_ips("127.0.0.9").unwrap(),
            vec!["127.0.0.9".parse::<IpAddr>().unwrap()]
        );
        assert!(
            parse_source_ips("127.0.0.9-127.0.0.2")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            parse_source_ips("10.0.0.1-10.0.0.3")
                .unwrap_err()
                .contains("not a loopback")
        );
        assert!(
            parse_source_ips("127.0.0.x")
                .unwrap_err()
                .contains("not an IPv4 address")
        );
        assert!(
            parse_source_ips("127.0.0.0/8")
                .unwrap_err()
                .contains("16..=32")
        );
    }
}

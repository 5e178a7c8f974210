//! Transports under every protocol: TCP from a chosen source address, the carrier model,
//! TLS over them, each
//! device's connector built the same way whatever the protocol speaks.
//!
//! [`DynConnector`] erases the connector's type so that a protocol adapter is written once,
//! not once per stack of transports; it costs one allocation per connect.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use imlab_core::net::{Connector, Stream};
use imlab_core::tls::{TlsClient, TlsConnector};

use crate::carrier::Carriers;
use crate::source::SourceConnector;

/// Any opened stream.
pub type BoxStream = Box<dyn Stream>;

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<BoxStream>> + Send>>;

/// A connector of any type, behind one pointer.
#[derive(Clone)]
pub struct DynConnector {
    connect: Arc<dyn Fn() -> ConnectFuture + Send + Sync>,
}

impl std::fmt::Debug for DynConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynConnector")
    }
}

impl DynConnector {
    /// Erases `connector`'s type.
    pub fn new<C: Connector>(connector: C) -> DynConnector {
        let connector = Arc::new(connector);
        DynConnector {
            connect: Arc::new(move || {
                let connector = connector.clone();
                Box::pin(async move {
                    let stream = connector.connect().await?;
                    Ok(Box::new(stream) as BoxStream)
                })
            }),
        }
    }
}

impl Connector for DynConnector {
    type Stream = BoxStream;

    fn connect(&self) -> impl Future<Output = io::Result<BoxStream>> + Send {
        (self.connect)()
    }
}

/// How devices reach the target.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The target's address.
    pub target: SocketAddr,
    /// Local addresses to spread connections over (empty: the kernel's choice).
    pub source_ips: Vec<std::net::IpAddr>,
    /// TLS over every connection (`None`: plaintext).
    pub tls: Option<TlsClient>,
}

impl Transport {
    /// The word results use for it.
    pub fn name(&self) -> &'static str {
        if self.tls.is_some() { "tls" } else { "tcp" }
    }

    /// Device `client`'s connector, in layers: TCP from its source address (so
    /// `--source-ips` applies under everything), its carrier's model if the run has carriers,
    /// then TLS if asked for.
    pub fn connector(&self, client: u32, carriers: Option<&Carriers>) -> DynConnector {
        let source = SourceConnector {
            target: self.target,
            source: (!self.source_ips.is_empty())
                .then(|| self.source_ips[client as usize % self.source_ips.len()]),
        };
        match carriers {
            None => self.tls_over(source),
            Some(carriers) => self.tls_over(carriers.connector(client, source)),
        }
    }

    fn tls_over<C: Connector>(&self, inner: C) -> DynConnector {
        match &self.tls {
            None => DynConnector::new(inner),
            Some(tls) => DynConnector::new(TlsConnector::new(inner, self.target, tls)),
        }
    }
}

//! TLS over the two network seams: [`TlsListener`] for the server, [`TlsConnector`] for the
//! client, both rustls with the ring provider (no aws-lc) through tokio-rustls.
//!
//! Where the server's handshake runs: [`Listener::accept`] hands the server a
//! [`Listener::Handshake`] future, not a finished stream, and the server awaits it inside the
//! connection's own task, bounded by the login timeout. [`TlsListener`]'s accept is therefore
//! only a TCP accept; a client that is slow, silent or hostile during its handshake holds up
//! nobody else, and one that never finishes is closed at the login timeout like one that
//! never logs in. Plain TCP, turmoil and memory pipes have nothing to do and hand back a
//! ready future ([`crate::net::no_handshake`]), so the simulator's path is unchanged. (A
//! stream type that handshakes lazily on first read would have hidden the same work inside
//! `poll_read`, where the server could neither time it apart from the login nor log why it
//! failed, and where a reader and a writer polling it at once would fight over one waker.)
//!
//! Wrong-protocol peers fail clearly instead of hanging: a TLS server answers a client whose
//! first byte is not a TLS handshake record with a plaintext imlab Error frame saying TLS is
//! required, and a TLS client that gets a non-TLS answer says the server is likely plaintext.
//!
//! There is no built-in root store (this build runs offline): clients trust exactly the CA
//! or self-signed certificates they are given ([`TlsClient::from_ca_file`]).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::framed::FrameWriter;
use crate::net::{Connector, Listener};
use crate::proto::{self, Body, ErrorCode, Frame};

/// The first byte of a TLS handshake record (a ClientHello starts with it).
const TLS_HANDSHAKE_RECORD_TYPE: u8 = 0x16;

/// How long a TLS server spends telling a plaintext client to use TLS before closing.
const PLAINTEXT_REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes of a plaintext client's request read (and dropped) before closing, so the close is a
/// FIN that lets the refusal arrive, not a reset that can destroy it.
const PLAINTEXT_DRAIN_BYTES_MAX: usize = 64 * 1024;

/// The text of the Error frame a TLS server sends a plaintext client.
pub const PLAINTEXT_REFUSAL: &str =
    "this server requires TLS: the connection did not start with a TLS handshake";

/// Why a TLS setup could not be built. Every variant names the file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A PEM file held no certificate.
    #[error(
        "{}: no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)",
        path.display()
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file held no private key.
    #[error(
        "{}: no private key found (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" \
         or \"BEGIN EC PRIVATE KEY\" block)",
        path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file could not be parsed.
    #[error("{}: not valid PEM: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The certificate chain and key were read but rustls refused them.
    #[error(
        "the certificate in {} and the key in {} are not a usable TLS identity: {reason}",
        cert.display(),
        key.display()
    )]
    BadIdentity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// A certificate to trust was refused as a trust anchor.
    #[error("{source_name}: certificate {index} cannot be trusted as a CA: {reason}")]
    BadTrustAnchor {
        /// The file (or other source) it came from.
        source_name: String,
        /// Its position in the file, from 0.
        index: usize,
        /// What rustls said.
        reason: String,
    },
    /// The name to verify the server's certificate against is neither a DNS name nor an IP.
    #[error("TLS server name {name:?} is neither a DNS name nor an IP address")]
    BadServerName {
        /// The name given.
        name: String,
    },
    /// rustls refused the configuration itself.
    #[error("building the TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Every certificate in a PEM file, in order; an error if there is none.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::BadPem {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => TlsError::BadPem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key.
pub fn server_config_from_files(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certificates = read_certificates(cert_path)?;
    let key = read_private_key(key_path)?;
    server_config(certificates, key).map_err(|error| match error {
        TlsError::Config(reason) => TlsError::BadIdentity {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            reason,
        },
        other => other,
    })
}

/// A server configuration from a certificate chain (leaf first) and its private key.
pub fn server_config(
    certificates: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    Ok(Arc::new(config))
}

/// Accepts TCP connections (TCP_NODELAY set) whose TLS handshake the server then runs in
/// each connection's task (see the module notes).
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl TlsListener {
    /// TLS with `config` over connections accepted on `tcp`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// The server side of one TLS handshake, as [`TlsListener`] hands it over.
pub type TlsHandshake =
    Pin<Box<dyn Future<Output = io::Result<tokio_rustls::server::TlsStream<TcpStream>>> + Send>>;

impl Listener for TlsListener {
    type Stream = tokio_rustls::server::TlsStream<TcpStream>;
    type Handshake = TlsHandshake;

    async fn accept(&mut self) -> io::Result<(TlsHandshake, SocketAddr)> {
        let (stream, peer) = self.tcp.accept().await?;
        stream.set_nodelay(true)?;
        let acceptor = self.acceptor.clone();
        Ok((Box::pin(server_handshake(acceptor, stream, peer)), peer))
    }
}

async fn server_handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let failed = |error: &dyn fmt::Display| format!("TLS handshake with {peer} failed: {error}");
    let mut first = [0u8; 1];
    let peeked = stream
        .peek(&mut first)
        .await
        .map_err(|error| io::Error::new(error.kind(), failed(&error)))?;
    if peeked == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            failed(&"the client closed the connection before sending anything"),
        ));
    }
    if first[0] != TLS_HANDSHAKE_RECORD_TYPE {
        refuse_plaintext(stream).await;
        let why = format!(
            "the client spoke plaintext (first byte {:#04x}, not a TLS handshake record); \
             answered with an Error frame",
            first[0]
        );
        return Err(io::Error::new(io::ErrorKind::InvalidData, failed(&why)));
    }
    acceptor
        .accept(stream)
        .await
        .map_err(|error| io::Error::new(error.kind(), failed(&error)))
}

/// Tells a plaintext client, in its own framing, that TLS is required, then closes.
async fn refuse_plaintext(stream: TcpStream) {
    refuse_in_frames(stream, PLAINTEXT_REFUSAL).await;
}

/// Answers a client that spoke imlab's plain framing where another protocol was due (TLS,
/// a WebSocket upgrade) with an Error frame saying `text`, then closes. Reads (and drops) a
/// bounded amount of what the client sent, so the close is a FIN that lets the Error arrive,
/// not a reset that can destroy it. Bounded in time by [`PLAINTEXT_REFUSAL_TIMEOUT`].
pub(crate) async fn refuse_in_frames<S>(mut stream: S, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = Frame::new(Body::Error(proto::Error::new(ErrorCode::BadFrame, text)));
    let _ = tokio::time::timeout(PLAINTEXT_REFUSAL_TIMEOUT, async {
        let mut writer = FrameWriter::new(&mut stream, DEFAULT_MAX_FRAME_BYTES);
        if writer.send(&frame).await.is_err() || writer.shutdown().await.is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        let mut drained_bytes = 0;
        while drained_bytes < PLAINTEXT_DRAIN_BYTES_MAX {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained_bytes += n,
            }
        }
    })
    .await;
}

/// A client's TLS settings: the certificates it trusts and the name it expects the server's
/// certificate to carry.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts every certificate in the PEM file `ca_path` (a CA, or the server's own
    /// self-signed certificate). `server_name` is the DNS name or IP the server's certificate
    /// must carry; `None` uses the target's IP address.
    pub fn from_ca_file(ca_path: &Path, server_name: Option<&str>) -> Result<TlsClient, TlsError> {
        let certificates = read_certificates(ca_path)?;
        TlsClient::trusting(certificates, &ca_path.display().to_string(), server_name)
    }

    /// Trusts `certificates` (from `source_name`, for error messages).
    pub fn trusting(
        certificates: Vec<CertificateDer<'static>>,
        source_name: &str,
        server_name: Option<&str>,
    ) -> Result<TlsClient, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for (index, certificate) in certificates.into_iter().enumerate() {
            roots
                .add(certificate)
                .map_err(|error| TlsError::BadTrustAnchor {
                    source_name: source_name.to_string(),
                    index,
                    reason: error.to_string(),
                })?;
        }
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_string()).map_err(|_| TlsError::BadServerName {
                    name: name.to_string(),
                })
            })
            .transpose()?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
        })
    }

    /// The name verified for a server at `target`.
    pub fn server_name_for(&self, target: SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(target.ip().into()))
    }
}

/// Opens a connection with `inner` (TCP, or TCP from a chosen source address), then runs the
/// TLS handshake over it; the handshake counts towards the client's connect timeout.
#[derive(Clone)]
pub struct TlsConnector<C> {
    inner: C,
    target: SocketAddr,
    server_name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl<C> fmt::Debug for TlsConnector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("target", &self.target)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl<C: Connector> TlsConnector<C> {
    /// TLS with `tls` over the connections `inner` opens to `target` (which names the server
    /// in errors, and is the name verified unless `tls` sets one).
    pub fn new(inner: C, target: SocketAddr, tls: &TlsClient) -> TlsConnector<C> {
        TlsConnector {
            inner,
            target,
            server_name: tls.server_name_for(target),
            connector: tokio_rustls::TlsConnector::from(tls.config.clone()),
        }
    }
}

impl<C: Connector> Connector for TlsConnector<C> {
    type Stream = tokio_rustls::client::TlsStream<C::Stream>;

    async fn connect(&self) -> io::Result<Self::Stream> {
        let stream = self.inner.connect().await?;
        self.connector
            .connect(self.server_name.clone(), stream)
            .await
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!(
                        "TLS handshake with {} failed: {error}{}",
                        self.target,
                        handshake_hint(&error)
                    ),
                )
            })
    }
}

/// A word on the likely cause of the two client-side failures whose rustls text is cryptic.
fn handshake_hint(error: &io::Error) -> &'static str {
    let Some(error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "";
    };
    match error {
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            " (the server did not answer in TLS: is it a plaintext server?)"
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))
            if other.to_string().contains("CaUsedAsEndEntity") =>
        {
            " (the server presents a CA certificate: serve a certificate issued by the CA, or \
             a self-signed one made with basicConstraints CA:FALSE)"
        }
        _ => "",
    }
}

//! The server to load: `HOST:PORT` as the user typed it (an IP address, `[v6]:port` or a host
//! name), or several separated by commas, parsed purely and resolved once, at the start of a
//! run. A name may resolve to several addresses (round-robin DNS in front of a gateway tier),
//! and a list names them outright (an HTTPDNS answer's IP list): [`Targets::resolve_all`]
//! keeps every address, and [`crate::source::SourceConnector`] spreads clients over them.

use std::net::{SocketAddr, ToSocketAddrs};

/// What `--target` accepts, for error messages.
const EXAMPLES: &str = "use HOST:PORT, e.g. 127.0.0.1:7400, localhost:7400 or im.example.com:443";

/// A parsed `--target`: host (name or address) and port, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A host name, an IPv4 address or an IPv6 address (without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl Target {
    /// Parses `HOST:PORT` or `[V6]:PORT`; the error names the input and shows examples (clap
    /// puts the flag's name before it).
    pub fn parse(text: &str) -> Result<Target, String> {
        let fail = |why: &str| format!("{text:?}: {why}; {EXAMPLES}");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, rest) = rest
                .split_once(']')
                .ok_or_else(|| fail("an IPv6 address needs a closing ']'"))?;
            let port = rest
                .strip_prefix(':')
                .ok_or_else(|| fail("no port after the address"))?;
            (host, port)
        } else {
            let (host, port) = text.rsplit_once(':').ok_or_else(|| fail("no port"))?;
            if host.contains(':') {
                return Err(fail("write an IPv6 address in brackets, like [::1]:7400"));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(fail("no host"));
        }
        if host.contains(char::is_whitespace) || host.contains('/') {
            return Err(fail("the host is not a name or an address"));
        }
        let port: u32 = port
            .parse()
            .map_err(|_| fail(&format!("port {port:?} is not a number")))?;
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| fail(&format!("port {port} is not in 1..=65535")))?;
        Ok(Target {
            host: host.to_string(),
            port,
        })
    }

    /// Whether the host is written as an IP address (no name to resolve or to verify).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// Addresses a run spreads its clients over at most: a load generator's client takes one
/// address of the list, so more addresses than that only shows a misconfigured name.
pub const TARGET_ADDRESSES_MAX: usize = 256;

/// `--target`: one `HOST:PORT`, or several separated by commas, all one service (a gateway
/// tier behind one name, or its addresses listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// As typed, in order; at least one.
    pub entries: Vec<Target>,
}

impl Targets {
    /// Parses a comma-separated list of `HOST:PORT`; an error names the entry.
    pub fn parse(text: &str) -> Result<Targets, String> {
        let entries = text
            .split(',')
            .map(|entry| {
                let entry = entry.trim();
                if entry.is_empty() {
                    return Err(format!(
                        "{text:?}: an empty entry in the list; separate HOST:PORT entries with \
                         single commas, e.g. 10.0.0.1:7400,10.0.0.2:7400"
                    ));
                }
                Target::parse(entry)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if entries.len() > TARGET_ADDRESSES_MAX {
            return Err(format!(
                "{} entries, more than the {TARGET_ADDRESSES_MAX} addresses a run spreads its \
                 clients over",
                entries.len()
            ));
        }
        Ok(Targets { entries })
    }

    /// The first entry: the one a WebSocket request's `Host` names.
    pub fn first(&self) -> &Target {
        &self.entries[0]
    }

    /// The host name a TLS certificate must name when `--tls-server-name` does not say: the
    /// entries' one host name; `None` when every entry is an IP address (each connection then
    /// checks its own address). Entries naming different hosts are refused: they need
    /// `--tls-server-name`.
    pub fn tls_name(&self) -> Result<Option<&str>, String> {
        let mut names = self
            .entries
            .iter()
            .filter(|t| !t.is_ip())
            .map(|t| t.host.as_str());
        let Some(name) = names.next() else {
            return Ok(None);
        };
        match names.find(|other| *other != name) {
            None => Ok(Some(name)),
            Some(other) => Err(format!(
                "--target {self} names two hosts ({name} and {other}): say which name their \
                 certificates carry with --tls-server-name"
            )),
        }
    }

    /// Every address of every entry (the system resolver, once), in the resolver's order and
    /// the list's, each once. The error names the entry.
    pub fn resolve_all(&self) -> Result<Vec<SocketAddr>, String> {
        let mut all: Vec<SocketAddr> = Vec::new();
        for entry in &self.entries {
            let resolved = (entry.host.as_str(), entry.port)
                .to_socket_addrs()
                .map_err(|error| {
                    format!("--target {entry}: cannot resolve {:?}: {error}", entry.host)
                })?;
            let mut any = false;
            for address in resolved {
                any = true;
                if all.contains(&address) {
                    continue;
                }
                if all.len() == TARGET_ADDRESSES_MAX {
                    return Err(format!(
                        "--target {self}: more than {TARGET_ADDRESSES_MAX} addresses, the most a \
                         run spreads its clients over"
                    ));
                }
                all.push(address);
            }
            if !any {
                return Err(format!("--target {entry}: {:?} has no address", entry.host));
            }
        }
        Ok(all)
    }
}

impl std::fmt::Display for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Targets {
    type Err = String;

    fn from_str(text: &str) -> Result<Targets, String> {
        Targets::parse(text)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Target, String> {
        Target::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, host: &str, port: u16) {
        let target = Target::parse(text).unwrap();
        assert_eq!((target.host.as_str(), target.port), (host, port), "{text}");
        assert_eq!(target.to_string(), text, "prints as typed");
    }

    #[test]
    fn addresses_and_names_parse_without_resolving() {
        check("127.0.0.1:7400", "127.0.0.1", 7400);
        check("localhost:7400", "localhost", 7400);
        check("im.example.com:443", "im.example.com", 443);
        check("10.1.2.3:65535", "10.1.2.3", 65535);
        check("[::1]:7400", "::1", 7400);
        assert!(Target::parse("10.1.2.3:1").unwrap().is_ip());
        assert!(!Target::parse("im.example.com:443").unwrap().is_ip());
    }

    #[test]
    fn bad_targets_are_named_with_an_example() {
        for (text, why) in [
            ("127.0.0.1", "no port"),
            ("im.example.com", "no port"),
            ("127.0.0.1:99999", "port 99999 is not in 1..=65535"),
            ("127.0.0.1:0", "port 0 is not in 1..=65535"),
            ("127.0.0.1:http", "port \"http\" is not a number"),
            (":7400", "no host"),
            ("::1:7400", "in brackets"),
            ("[::1]7400", "no port after"),
        ] {
            let error = Target::parse(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
            assert!(error.contains(&format!("{text:?}")), "{error}");
            assert!(error.contains("e.g. 127.0.0.1:7400"), "{error}");
        }
    }

    #[test]
    fn names_resolve_at_start_and_unknown_names_are_named() {
        // localhost resolves from /etc/hosts; nothing is sent anywhere.
        let addresses = Targets::parse("localhost:7400")
            .unwrap()
            .resolve_all()
            .unwrap();
        assert!(
            addresses.iter().all(|a| a.ip().is_loopback()),
            "{addresses:?}"
        );
        assert!(addresses.iter().all(|a| a.port() == 7400), "{addresses:?}");
        // `.invalid` never resolves (RFC 2606).
        let error = Targets::parse("im.nowhere.invalid:443")
            .unwrap()
            .resolve_all()
            .unwrap_err();
        assert!(
            error.starts_with("--target im.nowhere.invalid:443: cannot resolve"),
            "{error}"
        );
    }

    #[test]
    fn a_list_of_targets_parses_resolves_every_address_once_and_names_its_tls_host() {
        let list = Targets::parse("127.0.0.1:7400, localhost:7400,127.0.0.2:7401").unwrap();
        assert_eq!(list.entries.len(), 3);
        assert_eq!(
            list.to_string(),
            "127.0.0.1:7400,localhost:7400,127.0.0.2:7401"
        );
        // localhost is 127.0.0.1 here (/etc/hosts): kept once, in the list's order.
        let addresses = list.resolve_all().unwrap();
        assert_eq!(addresses[0], "127.0.0.1:7400".parse().unwrap());
        assert_eq!(addresses.last(), Some(&"127.0.0.2:7401".parse().unwrap()));
        let unique: std::collections::BTreeSet<_> = addresses.iter().collect();
        assert_eq!(unique.len(), addresses.len(), "{addresses:?}");
        assert_eq!(list.tls_name(), Ok(Some("localhost")));
        assert_eq!(list.first().host, "127.0.0.1");

        let addresses_only = Targets::parse("10.0.0.1:443,10.0.0.2:443").unwrap();
        assert_eq!(
            addresses_only.tls_name(),
            Ok(None),
            "each address checks its own"
        );
        let two_names = Targets::parse("a.example.com:443,b.example.com:443").unwrap();
        let error = two_names.tls_name().unwrap_err();
        assert!(error.contains("--tls-server-name"), "{error}");

        for (text, why) in [
            ("127.0.0.1:7400,", "an empty entry"),
            ("127.0.0.1:7400,,127.0.0.2:7400", "an empty entry"),
            ("127.0.0.1:7400,127.0.0.2", "\"127.0.0.2\": no port"),
        ] {
            let error = Targets::parse(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        let too_many = (0..=TARGET_ADDRESSES_MAX)
            .map(|i| format!("127.0.{}.{}:7400", i / 250, i % 250 + 1))
            .collect::<Vec<_>>()
            .join(",");
        let error = Targets::parse(&too_many).unwrap_err();
        assert!(error.contains("more than the 256"), "{error}");
        let error = Targets::parse("127.0.0.1:7400,im.nowhere.invalid:443")
            .unwrap()
            .resolve_all()
            .unwrap_err();
        assert!(
            error.starts_with("--target im.nowhere.invalid:443: cannot resolve"),
            "names the entry: {error}"
        );
    }
}

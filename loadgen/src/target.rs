//! The server to load: `HOST:PORT` as the user typed it (an IP address, `[v6]:port` or a host
//! name), parsed purely and resolved once, at the start of a run.

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

    /// Resolves the host (the system resolver, once); the first address wins. The error names
    /// the target.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        let mut addresses = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|error| format!("--target {self}: cannot resolve {:?}: {error}", self.host))?;
        addresses
            .next()
            .ok_or_else(|| format!("--target {self}: {:?} has no address", self.host))
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
        let address = Target::parse("localhost:7400").unwrap().resolve().unwrap();
        assert!(address.ip().is_loopback(), "{address}");
        assert_eq!(address.port(), 7400);
        // `.invalid` never resolves (RFC 2606).
        let error = Target::parse("im.nowhere.invalid:443")
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(
            error.starts_with("--target im.nowhere.invalid:443: cannot resolve"),
            "{error}"
        );
    }
}

//! Egress and execution policy: what a user's config may make this host do.
//!
//! A multi-tenant daemon must not become a way into its host's network or machine. HTTP servers
//! whose address is loopback, private, link-local, shared (CGNAT) or a cloud metadata address are
//! refused unless the operator allows that class; the addresses checked are the ones the
//! connection then uses (pinned in the HTTP client), so DNS cannot change between check and use.
//! Stdio servers may run only commands on the operator's allow-list.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::PolicyConfig;
use crate::error::Error;

/// The class of an address, for the egress decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Routable on the internet.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, RFC 6598 (CGNAT), unique-local, link-local, cloud metadata.
    Private,
    /// Unspecified, multicast, broadcast, reserved: never a server.
    Forbidden,
}

/// Classifies `ip` (IPv4-mapped IPv6 addresses are classified as their IPv4 address).
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || a == 0 || a >= 240 {
        AddressClass::Forbidden
    } else if ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0)
        || (a == 198 && (b == 18 || b == 19))
    {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() || ip.is_multicast() {
        AddressClass::Forbidden
    } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 || ip.to_ipv4().is_some() {
        // Unique-local (includes fd00:ec2::254, a metadata address), link-local, and the
        // deprecated IPv4-compatible form.
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

/// Whether the policy lets a server live at `ip`.
pub fn address_allowed(policy: &PolicyConfig, ip: IpAddr) -> bool {
    match classify(ip) {
        AddressClass::Public => true,
        AddressClass::Loopback => policy.allow_loopback,
        AddressClass::Private => policy.allow_private,
        AddressClass::Forbidden => false,
    }
}

/// Resolves the host of `url` and checks every address against the policy. Returns the host
/// and the addresses to pin. `user`/`server` name the error.
pub async fn resolve_allowed(
    policy: &PolicyConfig,
    url: &url::Url,
    user: &str,
    server: &str,
) -> Result<(String, Vec<SocketAddr>), Error> {
    let host = url.host_str().ok_or_else(|| Error::invalid("transport.url", "has no host"))?.to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        _ => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| Error::unreachable(user, server, "its host name does not resolve"))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Error::unreachable(user, server, "its host name does not resolve"));
    }
    if let Some(bad) = addrs.iter().find(|a| !address_allowed(policy, a.ip())) {
        return Err(Error::invalid(
            "transport.url",
            format!(
                "server {server} of user {user} resolves to a {:?} address ({}), which policy refuses",
                classify(bad.ip()),
                bad.ip()
            ),
        ));
    }
    Ok((host, addrs))
}

/// Checks a stdio command against the allow-list.
pub fn check_command(policy: &PolicyConfig, command: &str) -> Result<(), Error> {
    if policy.stdio_allowed_commands.iter().any(|c| c == command) {
        Ok(())
    } else {
        Err(Error::invalid("transport.command", format!("{command:?} is not in policy.stdio_allowed_commands")))
    }
}

/// The checks that need no network: a stdio command on the allow-list; an HTTP URL whose host
/// is an IP literal of an allowed class. Run when a config is put, for an early clear error.
pub fn precheck(policy: &PolicyConfig, transport: &crate::model::Transport) -> Result<(), Error> {
    match transport {
        crate::model::Transport::Stdio { command, .. } => check_command(policy, command),
        crate::model::Transport::Http { url } => {
            let url = url::Url::parse(url).map_err(|e| Error::invalid("transport.url", e))?;
            let ip = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            match ip {
                Some(ip) if !address_allowed(policy, ip) => Err(Error::invalid(
                    "transport.url",
                    format!("{ip} is a {:?} address, which policy refuses", classify(ip)),
                )),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        let cases = [
            ("8.8.8.8", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.8.9.1", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("0.0.0.0", AddressClass::Forbidden),
            ("255.255.255.255", AddressClass::Forbidden),
            ("224.0.0.1", AddressClass::Forbidden),
            ("::1", AddressClass::Loopback),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("fd00:ec2::254", AddressClass::Private),
            ("fe80::1", AddressClass::Private),
            ("2606:4700::1111", AddressClass::Public),
            ("::", AddressClass::Forbidden),
        ];
        for (ip, class) in cases {
            assert_eq!(classify(ip.parse().unwrap()), class, "{ip}");
        }
    }

    #[test]
    fn policy_decides() {
        let mut p = PolicyConfig::default();
        assert!(!address_allowed(&p, "127.0.0.1".parse().unwrap()));
        assert!(!address_allowed(&p, "169.254.169.254".parse().unwrap()));
        p.allow_loopback = true;
        assert!(address_allowed(&p, "127.0.0.1".parse().unwrap()));
        assert!(!address_allowed(&p, "10.0.0.1".parse().unwrap()));
        p.allow_private = true;
        assert!(address_allowed(&p, "10.0.0.1".parse().unwrap()));
        assert!(!address_allowed(&p, "0.0.0.0".parse().unwrap()));
    }

    #[test]
    fn commands_need_the_allow_list() {
        let mut p = PolicyConfig::default();
        assert!(check_command(&p, "node").is_err());
        p.stdio_allowed_commands = vec!["/usr/bin/node".into()];
        assert!(check_command(&p, "/usr/bin/node").is_ok());
        assert!(check_command(&p, "node").is_err());
    }

    #[tokio::test]
    async fn resolution_is_checked() {
        let p = PolicyConfig::default();
        let url = url::Url::parse("http://localhost:1/mcp").unwrap();
        let err = resolve_allowed(&p, &url, "u", "s").await.unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::InvalidRequest);
        let allow = PolicyConfig { allow_loopback: true, ..PolicyConfig::default() };
        let (host, addrs) = resolve_allowed(&allow, &url, "u", "s").await.unwrap();
        assert_eq!(host, "localhost");
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 1));
    }
}

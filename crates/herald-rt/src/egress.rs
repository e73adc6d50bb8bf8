//! Egress guard: which peer addresses an outbound request may connect to.
//!
//! Webhook URLs are supplied by tenants, so without a guard a tenant could make Herald
//! POST to the cloud metadata service, to an admin port on loopback or into the private
//! network Herald runs in (server-side request forgery). Every address a name resolves
//! to is classified here *after* resolution, and the connection is then made to exactly
//! the address that was checked, so a DNS answer that changes between check and connect
//! (rebinding) cannot slip through.
//!
//! Everything in this module is pure: addresses in, verdicts out.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// What kind of network an address belongs to, as far as egress is concerned.
///
/// Only [`AddressClass::Public`] is reachable by default; every other class needs an
/// allowlist entry ([`EgressPolicy::allow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// A globally routable unicast address.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16) and the deprecated IPv6 site-local fec0::/10.
    Private,
    /// IPv6 unique local addresses, fc00::/7.
    UniqueLocal,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// Carrier-grade NAT shared address space, 100.64.0.0/10 (RFC 6598).
    SharedCgnat,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 0.0.0.0/8 ("this network"), ::.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32 (RFC 5737, RFC 3849).
    Documentation,
    /// 198.18.0.0/15, 2001:2::/48 (RFC 2544, RFC 5180).
    Benchmarking,
    /// Instance metadata services: 169.254.169.254, fd00:ec2::254.
    CloudMetadata,
    /// Other special-purpose space: 192.0.0.0/24, 240.0.0.0/4, 100::/64, IPv4-compatible
    /// IPv6 (::/96).
    Reserved,
}

impl AddressClass {
    /// A short human-readable name, used in refusal messages.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::LinkLocal => "link-local",
            AddressClass::SharedCgnat => "shared (CGNAT)",
            AddressClass::Multicast => "multicast",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Documentation => "documentation",
            AddressClass::Benchmarking => "benchmarking",
            AddressClass::CloudMetadata => "cloud metadata",
            AddressClass::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The address a packet to `ip` would really go to: IPv4-mapped (`::ffff:a.b.c.d`)
/// addresses are IPv4 on the wire, so they are judged as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Classifies an address for the egress guard.
pub fn classify(ip: IpAddr) -> AddressClass {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix_len: u8) -> bool {
    let mask = if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix_len: u8) -> bool {
    let mask = if prefix_len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix_len))
    };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    // Order matters: the metadata address sits inside link-local, broadcast inside 240/4.
    const TABLE: &[([u8; 4], u8, AddressClass)] = &[
        ([169, 254, 169, 254], 32, AddressClass::CloudMetadata),
        ([255, 255, 255, 255], 32, AddressClass::Broadcast),
        ([0, 0, 0, 0], 8, AddressClass::Unspecified),
        ([10, 0, 0, 0], 8, AddressClass::Private),
        ([100, 64, 0, 0], 10, AddressClass::SharedCgnat),
        ([127, 0, 0, 0], 8, AddressClass::Loopback),
        ([169, 254, 0, 0], 16, AddressClass::LinkLocal),
        ([172, 16, 0, 0], 12, AddressClass::Private),
        ([192, 0, 0, 0], 24, AddressClass::Reserved),
        ([192, 0, 2, 0], 24, AddressClass::Documentation),
        ([192, 168, 0, 0], 16, AddressClass::Private),
        ([198, 18, 0, 0], 15, AddressClass::Benchmarking),
        ([198, 51, 100, 0], 24, AddressClass::Documentation),
        ([203, 0, 113, 0], 24, AddressClass::Documentation),
        ([224, 0, 0, 0], 4, AddressClass::Multicast),
        ([240, 0, 0, 0], 4, AddressClass::Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map_or(AddressClass::Public, |(_, _, class)| *class)
}

/// An IPv4 address carried in an IPv6 one, and the prefix that carries it.
struct Carried {
    v4: Ipv4Addr,
    prefix: [u16; 8],
    prefix_len: u8,
}

impl Carried {
    /// The IPv4 address `ip` carries, for the prefixes whose packets end up at it
    /// (through a NAT64 or 6to4 gateway, or SIIT's translation): that address decides
    /// where `ip` leads. (The mapped form, `::ffff:a.b.c.d`, is the IPv4 address itself:
    /// [`canonical`].)
    fn in_v6(ip: Ipv6Addr) -> Option<Carried> {
        let o = ip.octets();
        let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
        let prefixes = [
            // NAT64's well-known prefix (RFC 6052).
            ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, last),
            // 6to4 (RFC 3056): the address in bits 16..48.
            (
                [0x2002, 0, 0, 0, 0, 0, 0, 0],
                16,
                Ipv4Addr::new(o[2], o[3], o[4], o[5]),
            ),
            // SIIT's IPv4-translated addresses (`::ffff:0:a.b.c.d`, RFC 6145).
            ([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, last),
        ];
        prefixes
            .into_iter()
            .find(|(prefix, prefix_len, _)| in_v6(ip, *prefix, *prefix_len))
            .map(|(prefix, prefix_len, v4)| Carried {
                v4,
                prefix,
                prefix_len,
            })
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(carried) = Carried::in_v6(ip) {
        return classify_v4(carried.v4);
    }
    const TABLE: &[([u16; 8], u8, AddressClass)] = &[
        (
            [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254],
            128,
            AddressClass::CloudMetadata,
        ),
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, AddressClass::Reserved),
        ([0x0100, 0, 0, 0, 0, 0, 0, 0], 64, AddressClass::Reserved),
        // The local-use NAT64 prefix (RFC 8215): a network's own translator, embedding
        // an IPv4 address where its prefix length puts it; refused whole (an operator
        // who translates through it allows it by name).
        (
            [0x0064, 0xff9b, 0x0001, 0, 0, 0, 0, 0],
            48,
            AddressClass::Reserved,
        ),
        // Teredo (RFC 4380): the client's IPv4 address, obfuscated, in the last 32 bits;
        // a tunnel, not a receiver.
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, AddressClass::Reserved),
        (
            [0x2001, 0x0002, 0, 0, 0, 0, 0, 0],
            48,
            AddressClass::Benchmarking,
        ),
        (
            [0x2001, 0x0db8, 0, 0, 0, 0, 0, 0],
            32,
            AddressClass::Documentation,
        ),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, AddressClass::UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, AddressClass::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, AddressClass::Private),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, AddressClass::Multicast),
    ];
    TABLE
        .iter()
        .find(|(net, len, _)| in_v6(ip, *net, *len))
        .map_or(AddressClass::Public, |(_, _, class)| *class)
}

/// An IP network in CIDR notation, e.g. `127.0.0.0/8` or `fd00::/8`.
///
/// Parsing is strict: host bits below the prefix must be zero (`10.0.0.1/8` is refused
/// rather than silently widened), so what the operator wrote is what is allowed. A bare
/// address is a single-host network (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// Why a CIDR string was refused (the caller's configuration is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("invalid CIDR {input:?}: not an IP address")]
    InvalidAddress {
        /// The text that was refused.
        input: String,
    },
    /// The prefix length is not a number or exceeds 32 (IPv4) / 128 (IPv6).
    #[error("invalid CIDR {input:?}: prefix length must be 0..={max}")]
    InvalidPrefixLength {
        /// The text that was refused.
        input: String,
        /// Largest prefix length for the address family.
        max: u8,
    },
    /// Bits below the prefix are set.
    #[error("invalid CIDR {input:?}: host bits set (did you mean {suggestion}?)")]
    HostBitsSet {
        /// The text that was refused.
        input: String,
        /// The network with host bits cleared.
        suggestion: String,
    },
}

impl Cidr {
    /// Parses `addr/len` or a bare address.
    pub fn parse(input: &str) -> Result<Cidr, CidrError> {
        let trimmed = input.trim();
        let (addr_text, len_text) = match trimmed.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (trimmed, None),
        };
        let network = IpAddr::from_str(addr_text).map_err(|_| CidrError::InvalidAddress {
            input: input.to_owned(),
        })?;
        let max: u8 = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len_text {
            None => max,
            Some(text) => {
                // `u8::from_str` accepts a leading '+', which no CIDR syntax does.
                let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
                match text.parse::<u8>() {
                    Ok(len) if valid && len <= max => len,
                    _ => {
                        return Err(CidrError::InvalidPrefixLength {
                            input: input.to_owned(),
                            max,
                        })
                    }
                }
            }
        };
        let masked = mask(network, prefix_len);
        if masked != network {
            return Err(CidrError::HostBitsSet {
                input: input.to_owned(),
                suggestion: format!("{masked}/{prefix_len}"),
            });
        }
        Ok(Cidr {
            network,
            prefix_len,
        })
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies in this network. IPv4-mapped IPv6 addresses match IPv4
    /// networks (they are the same destination), and so do the IPv6 addresses that
    /// carry an IPv4 one to a gateway (NAT64, 6to4, SIIT): those match an IPv6 network
    /// only when it lies inside their prefix, so that allowing IPv6 (`::/0`) does not
    /// allow IPv4's private addresses through a translator.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if let IpAddr::V6(v6) = ip {
            if let Some(carried) = Carried::in_v6(v6) {
                return match self.network {
                    IpAddr::V4(net) => in_v4(carried.v4, net.octets(), self.prefix_len),
                    IpAddr::V6(net) => {
                        self.prefix_len >= carried.prefix_len
                            && in_v6(net, carried.prefix, carried.prefix_len)
                            && in_v6(v6, net.segments(), self.prefix_len)
                    }
                };
            }
        }
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(v4)) => in_v4(v4, net.octets(), self.prefix_len),
            (IpAddr::V6(net), IpAddr::V6(v6)) => in_v6(v6, net.segments(), self.prefix_len),
            // An IPv6 network written inside the mapped prefix (::ffff:0:0/96) still
            // covers the IPv4 addresses it maps; a wider one (`::/0`, allowing IPv6)
            // covers none: allowing IPv6 networks must not allow IPv4's private ones.
            (IpAddr::V6(net), IpAddr::V4(v4)) => {
                self.prefix_len >= 96
                    && in_v6(net, MAPPED_PREFIX, 96)
                    && in_v6(v4.to_ipv6_mapped(), net.segments(), self.prefix_len)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

/// `::ffff:0:0/96`, where IPv4-mapped addresses live.
const MAPPED_PREFIX: [u16; 8] = [0, 0, 0, 0, 0, 0xffff, 0, 0];

fn mask(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = if prefix_len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix_len))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = if prefix_len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix_len))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        Cidr::parse(s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Most allowlist entries in one policy: the list is scanned linearly per new
/// connection, and an operator needing more is probably expressing a broader network.
pub const ALLOW_ENTRIES_MAX: usize = 64;

/// The egress rules of one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<Cidr>,
    /// Refuse `http://` URLs (plaintext) outright.
    pub require_https: bool,
}

/// Why a peer address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ip} is a {class} address and no allowlist entry permits it")]
pub struct EgressRefusal {
    /// The refused address.
    pub ip: IpAddr,
    /// Its class.
    pub class: AddressClass,
}

/// The allowlist already holds [`ALLOW_ENTRIES_MAX`] entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress allowlist is full ({ALLOW_ENTRIES_MAX} entries)")]
pub struct AllowlistFull;

impl EgressPolicy {
    /// The default policy: only public addresses, plain http permitted.
    pub fn new() -> EgressPolicy {
        EgressPolicy::default()
    }

    /// Permits a non-public network (e.g. `127.0.0.0/8` for tests and benches).
    pub fn allow(&mut self, cidr: Cidr) -> Result<&mut EgressPolicy, AllowlistFull> {
        if self.allow.contains(&cidr) {
            return Ok(self);
        }
        if self.allow.len() >= ALLOW_ENTRIES_MAX {
            return Err(AllowlistFull);
        }
        self.allow.push(cidr);
        Ok(self)
    }

    /// The allowlist entries.
    pub fn allowed(&self) -> &[Cidr] {
        &self.allow
    }

    /// Whether a connection to `ip` is permitted.
    pub fn check(&self, ip: IpAddr) -> Result<(), EgressRefusal> {
        let class = classify(ip);
        if class == AddressClass::Public || self.allow.iter().any(|cidr| cidr.contains(ip)) {
            Ok(())
        } else {
            Err(EgressRefusal {
                ip: canonical(ip),
                class,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classifier_table() {
        use AddressClass::*;
        let cases: &[(&str, AddressClass)] = &[
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("93.184.216.34", Public),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("172.15.255.255", Public),
            ("192.168.1.1", Private),
            ("192.169.0.1", Public),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("100.128.0.1", Public),
            ("100.63.255.255", Public),
            ("169.254.1.1", LinkLocal),
            ("169.254.169.254", CloudMetadata),
            ("169.254.169.253", LinkLocal),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("255.255.255.255", Broadcast),
            ("255.255.255.254", Reserved),
            ("240.0.0.1", Reserved),
            ("224.0.0.1", Multicast),
            ("239.255.255.255", Multicast),
            ("192.0.0.8", Reserved),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("198.20.0.1", Public),
            // IPv6
            ("2606:4700:4700::1111", Public),
            ("::1", Loopback),
            ("::", Unspecified),
            ("fc00::1", UniqueLocal),
            ("fdff:ffff::1", UniqueLocal),
            ("fd00:ec2::254", CloudMetadata),
            ("fd00:ec2::253", UniqueLocal),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Private),
            ("ff02::1", Multicast),
            ("2001:db8::1", Documentation),
            ("2001:2::1", Benchmarking),
            ("100::1", Reserved),
            ("::7f00:1", Reserved), // IPv4-compatible (deprecated)
            // IPv4-mapped forms are judged as the IPv4 address they are.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:169.254.169.254", CloudMetadata),
            ("::ffff:100.64.0.1", SharedCgnat),
            ("::ffff:8.8.8.8", Public),
            ("::ffff:0.0.0.0", Unspecified),
            ("::ffff:255.255.255.255", Broadcast),
            // NAT64 and 6to4 embed an IPv4 destination.
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::a9fe:a9fe", CloudMetadata),
            ("64:ff9b::808:808", Public),
            ("2002:c0a8:0101::1", Private),
            ("2002:0808:0808::1", Public),
            // SIIT's IPv4-translated form embeds one too.
            ("::ffff:0:7f00:1", Loopback),
            ("::ffff:0:a9fe:a9fe", CloudMetadata),
            ("::ffff:0:808:808", Public),
            // The local-use NAT64 prefix and Teredo: refused whole.
            ("64:ff9b:1::7f00:1", Reserved),
            ("64:ff9b:1::a9fe:a9fe", Reserved),
            ("64:ff9b:1:ffff::808:808", Reserved),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Reserved),
            // Just outside them: public.
            ("64:ff9b:2::1", Public),
            ("2001:1::1", Public),
        ];
        for (text, expected) in cases {
            assert_eq!(classify(ip(text)), *expected, "classify({text})");
        }
    }

    #[test]
    fn cidr_parse_table() {
        let ok: &[(&str, &str, u8)] = &[
            ("127.0.0.0/8", "127.0.0.0", 8),
            ("10.0.0.0/8", "10.0.0.0", 8),
            ("0.0.0.0/0", "0.0.0.0", 0),
            ("192.168.1.7", "192.168.1.7", 32),
            (" 10.1.0.0/16 ", "10.1.0.0", 16),
            ("::1", "::1", 128),
            ("fd00::/8", "fd00::", 8),
            ("::/0", "::", 0),
            ("::ffff:0:0/96", "::ffff:0:0", 96),
        ];
        for (text, net, len) in ok {
            let cidr = Cidr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(cidr.network(), ip(net), "{text}");
            assert_eq!(cidr.prefix_len(), *len, "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "not an IP"),
            ("localhost/8", "not an IP"),
            ("10.0.0/8", "not an IP"),
            ("10.0.0.0/33", "prefix length"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0.0/+8", "prefix length"),
            ("10.0.0.0/-1", "prefix length"),
            ("10.0.0.0/8/8", "prefix length"),
            ("::/129", "prefix length"),
            ("10.0.0.1/8", "host bits"),
            ("127.0.0.1/8", "did you mean 127.0.0.0/8"),
            ("fd00::1/8", "host bits"),
        ];
        for (text, expected) in bad {
            let err = Cidr::parse(text).expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn cidr_contains_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.0/8", "127.0.0.1", true),
            ("127.0.0.0/8", "127.255.0.1", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("127.0.0.0/8", "::1", false),
            ("10.1.0.0/16", "10.1.200.3", true),
            ("10.1.0.0/16", "10.2.0.1", false),
            ("0.0.0.0/0", "203.0.113.1", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("::/0", "2001:db8::1", true),
            ("::1", "::1", true),
            ("::1", "::2", false),
            ("fd00::/8", "fd12:3456::1", true),
            ("fd00::/8", "fc00::1", false),
            ("::ffff:0:0/96", "10.0.0.1", true),
            ("::ffff:10.0.0.0/104", "10.1.2.3", true),
            ("::ffff:10.0.0.0/104", "11.0.0.1", false),
            // Allowing IPv6 networks does not allow IPv4 addresses through their mapped form.
            ("::/0", "127.0.0.1", false),
            ("::/0", "::ffff:169.254.169.254", false),
            ("::/1", "10.0.0.1", false),
            ("::/16", "10.0.0.1", false),
            ("::/95", "10.0.0.1", false),
            // Nor through the prefixes that carry them to a gateway (NAT64, 6to4, SIIT).
            ("::/0", "64:ff9b::a9fe:a9fe", false),
            ("::/0", "64:ff9b::10.0.0.1", false),
            ("2000::/3", "2002:7f00:1::1", false),
            ("::/0", "::ffff:0:127.0.0.1", false),
            ("64:ff9b::/32", "64:ff9b::10.0.0.1", false),
            // An IPv4 network covers its addresses in those forms; the prefix itself,
            // allowed whole or in part, covers what it carries.
            ("10.0.0.0/8", "64:ff9b::10.0.0.1", true),
            ("10.0.0.0/8", "2002:a00:1::", true),
            ("10.0.0.0/8", "::ffff:0:10.0.0.1", true),
            ("10.0.0.0/8", "64:ff9b::11.0.0.1", false),
            ("64:ff9b::/96", "64:ff9b::10.0.0.1", true),
            ("64:ff9b::10.0.0.0/104", "64:ff9b::10.9.0.1", true),
            ("64:ff9b::10.0.0.0/104", "64:ff9b::11.0.0.1", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
        ];
        for (net, addr, expected) in cases {
            let cidr = Cidr::parse(net).unwrap();
            assert_eq!(cidr.contains(ip(addr)), *expected, "{net} contains {addr}");
        }
    }

    #[test]
    fn policy_refuses_non_public_unless_allowed() {
        let mut policy = EgressPolicy::new();
        let refused = policy.check(ip("127.0.0.1")).unwrap_err();
        assert_eq!(refused.class, AddressClass::Loopback);
        assert!(refused
            .to_string()
            .contains("127.0.0.1 is a loopback address"));
        let refused = policy.check(ip("::ffff:169.254.169.254")).unwrap_err();
        assert_eq!(
            refused.ip,
            ip("169.254.169.254"),
            "reported in canonical form"
        );
        assert_eq!(refused.class, AddressClass::CloudMetadata);
        assert!(policy.check(ip("8.8.8.8")).is_ok());

        policy.allow(Cidr::parse("127.0.0.0/8").unwrap()).unwrap();
        assert!(policy.check(ip("127.0.0.1")).is_ok());
        assert!(policy.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(
            policy.check(ip("::1")).is_err(),
            "IPv6 loopback not allowed"
        );
        assert!(policy.check(ip("10.0.0.1")).is_err());
    }

    #[test]
    fn allowlist_is_bounded() {
        let mut policy = EgressPolicy::new();
        for i in 0..ALLOW_ENTRIES_MAX {
            let cidr = Cidr::parse(&format!("10.{}.0.0/16", i)).unwrap();
            policy.allow(cidr).unwrap();
        }
        // Re-adding an existing entry is not an error and does not grow the list.
        policy.allow(Cidr::parse("10.0.0.0/16").unwrap()).unwrap();
        assert_eq!(policy.allowed().len(), ALLOW_ENTRIES_MAX);
        assert_eq!(
            policy.allow(Cidr::parse("192.168.0.0/16").unwrap()),
            Err(AllowlistFull)
        );
    }

    proptest! {
        #[test]
        fn mapped_v4_is_judged_like_v4(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            prop_assert_eq!(classify(mapped), classify(IpAddr::V4(v4)));
        }

        #[test]
        fn cidr_roundtrips_and_contains_its_network(raw in any::<u32>(), len in 0u8..=32) {
            let net = mask(IpAddr::V4(Ipv4Addr::from(raw)), len);
            let cidr = Cidr::parse(&format!("{net}/{len}")).unwrap();
            prop_assert!(cidr.contains(net));
            prop_assert!(cidr.contains(IpAddr::V4(Ipv4Addr::from(raw))));
            prop_assert_eq!(Cidr::parse(&cidr.to_string()).unwrap(), cidr);
        }

        #[test]
        fn v6_cidr_contains_exactly_masked_matches(raw in any::<u128>(), probe in any::<u128>(), len in 0u8..=128) {
            let net = mask(IpAddr::V6(Ipv6Addr::from(raw)), len);
            let cidr = Cidr::parse(&format!("{net}/{len}")).unwrap();
            let probe = IpAddr::V6(Ipv6Addr::from(probe));
            // A mapped probe is judged as IPv4: only a network inside the mapped prefix
            // covers it.
            let mapped = matches!(canonical(probe), IpAddr::V4(_));
            let inside_mapped = len >= 96 && mask(net, 96) == ip("::ffff:0:0");
            prop_assert_eq!(
                cidr.contains(probe),
                mask(probe, len) == net && (!mapped || inside_mapped)
            );
        }
    }
}

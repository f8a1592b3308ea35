//! Callback URLs of push-mode workspaces, checked against SSRF.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A push workspace's callback URL: http(s), and unless private targets are
/// allowed, not a loopback, link-local, private or otherwise internal address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl(String);

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("`{0}` is not a valid URL")]
    Malformed(String),
    /// Not http or https.
    #[error("the URL must use http or https, not `{0}`")]
    Scheme(String),
    /// Points at an internal address.
    #[error("the URL points at a loopback, link-local or private address ({0}); start the server with --allow-private-urls to permit it")]
    Private(String),
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10, carrier-grade NAT
        || (a == 100 && (64..128).contains(&b))
}

/// The IPv4 address an IPv6 address carries, in the forms that reach an
/// IPv4 host through translation or tunnelling: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated but still
/// routed by some stacks), SIIT-translated (`::ffff:0:a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`), 6to4 (`2002:AABB:CCDD::/48`) and Teredo (client
/// address inverted in the last 32 bits). Without this, `[::127.0.0.1]` or
/// `[64:ff9b::7f00:1]` would slip past a check that only looks at IPv6
/// ranges and reach loopback through the translator.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        // `::` and `::1` are IPv6's own unspecified and loopback.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!u32::from(low))),
        _ => None,
    }
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_internal_v4(v4);
    }
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        // 64:ff9b:1::/48, NAT64 for local use (RFC 8215): whatever it
        // translates to is a private network's choice.
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
}

/// True for addresses a server should not be tricked into calling.
pub fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

impl CallbackUrl {
    /// Parses and checks a callback URL.
    pub fn parse(raw: &str, allow_private: bool) -> Result<Self, UrlError> {
        let parsed =
            url::Url::parse(raw.trim()).map_err(|_| UrlError::Malformed(raw.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(parsed.scheme().to_owned()));
        }
        let host = parsed
            .host()
            .ok_or_else(|| UrlError::Malformed(raw.to_owned()))?;
        if !allow_private {
            let internal = match host {
                url::Host::Ipv4(ip) => is_internal_v4(ip),
                url::Host::Ipv6(ip) => is_internal_v6(ip),
                url::Host::Domain(name) => {
                    let name = name.trim_end_matches('.').to_ascii_lowercase();
                    name == "localhost"
                        || name.ends_with(".localhost")
                        || name.ends_with(".internal")
                        || name.ends_with(".local")
                }
            };
            if internal {
                return Err(UrlError::Private(host.to_string()));
            }
        }
        Ok(Self(parsed.as_str().trim_end_matches('/').to_owned()))
    }

    /// The URL, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_table() {
        let cases = [
            ("https://agent.example.com/a2a", false, true),
            ("http://203.0.113.7:8000", false, false),
            ("http://8.8.8.8:8000/", false, true),
            ("ftp://agent.example.com", false, false),
            ("not a url", false, false),
            ("http://127.0.0.1:9000", false, false),
            ("http://127.0.0.1:9000", true, true),
            ("http://localhost:9000", false, false),
            ("http://10.1.2.3", false, false),
            ("http://172.16.0.1", false, false),
            ("http://192.168.1.1", false, false),
            ("http://169.254.169.254/latest/meta-data", false, false),
            ("http://100.64.0.1", false, false),
            ("http://0.0.0.0", false, false),
            ("http://[::1]:80", false, false),
            ("http://[fe80::1]", false, false),
            ("http://[fd00::1]", false, false),
            ("http://[::ffff:127.0.0.1]", false, false),
            ("http://[2001:4860:4860::8888]", false, true),
            ("http://metadata.google.internal", false, false),
            // IPv6 forms that carry an IPv4 address: judged by that address.
            ("http://[::127.0.0.1]", false, false),
            ("http://[::7f00:1]", false, false),
            ("http://[::10.0.0.1]", false, false),
            ("http://[::8.8.8.8]", false, true),
            ("http://[::ffff:10.0.0.1]", false, false),
            ("http://[::ffff:8.8.8.8]", false, true),
            ("http://[::ffff:0:127.0.0.1]", false, false),
            ("http://[64:ff9b::7f00:1]", false, false),
            ("http://[64:ff9b::127.0.0.1]", false, false),
            ("http://[64:ff9b::a9fe:a9fe]", false, false),
            ("http://[64:ff9b::192.168.0.1]", false, false),
            ("http://[64:ff9b::8.8.8.8]", false, true),
            ("http://[64:ff9b:1::808:808]", false, false),
            ("http://[2002:7f00:1::]", false, false),
            ("http://[2002:a00:1::1]", false, false),
            ("http://[2002:c0a8:101::1]", false, false),
            ("http://[2002:808:808::1]", false, true),
            // Teredo: the client address is stored inverted.
            (
                "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]",
                false,
                false,
            ),
            ("http://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]", false, true),
            ("http://[64:ff9b::7f00:1]", true, true),
        ];
        for (raw, allow, ok) in cases {
            assert_eq!(
                CallbackUrl::parse(raw, allow).is_ok(),
                ok,
                "case {raw:?} allow_private={allow}"
            );
        }
    }
}

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

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
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

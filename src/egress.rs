//! Outbound HTTP to push-mode workspaces, guarded against SSRF.
//!
//! A callback URL is checked when it is set (`CallbackUrl::parse` refuses
//! internal IP literals and local names), but a public name can resolve —
//! or be re-pointed later (DNS rebinding) — to an internal address. The
//! client built here resolves every name itself and refuses to connect
//! unless at least one address is public, and then only to public ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::is_internal_ip;

/// Resolves names to their public addresses only.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PublicOnlyResolver;

/// Keeps the public addresses of a resolution.
pub(crate) fn public_addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    addrs
        .into_iter()
        .filter(|a| !is_internal_ip(a.ip()))
        .collect()
}

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public = public_addrs(resolved);
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback, link-local or private addresses"
                )
                .into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The client for calls to push-mode workspaces. With `allow_private`
/// (development, tests) names resolve normally.
pub(crate) fn workspace_client(allow_private: bool) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // A redirect could point anywhere; workspaces answer directly.
        .redirect(reqwest::redirect::Policy::none());
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn only_public_addresses_are_kept() {
        let addrs: Vec<SocketAddr> = [
            "127.0.0.1:80",
            "10.0.0.1:80",
            "[::1]:80",
            "93.184.216.34:80",
            "[2001:db8::1]:80",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let kept = public_addrs(addrs);
        assert_eq!(
            kept,
            vec![
                "93.184.216.34:80".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:80".parse().unwrap()
            ]
        );
    }

    #[test]
    fn ipv6_forms_of_internal_ipv4_are_dropped_at_connect_time() {
        let addrs: Vec<SocketAddr> = [
            "[::127.0.0.1]:80",
            "[::ffff:127.0.0.1]:80",
            "[64:ff9b::7f00:1]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "[2002:7f00:1::]:80",
            "[2002:c0a8:101::1]:80",
            "[64:ff9b::808:808]:80",
            "[2002:808:808::1]:80",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let kept = public_addrs(addrs);
        assert_eq!(
            kept,
            vec![
                "[64:ff9b::808:808]:80".parse::<SocketAddr>().unwrap(),
                "[2002:808:808::1]:80".parse().unwrap()
            ]
        );
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        let err = PublicOnlyResolver
            .resolve(Name::from_str("localhost").unwrap())
            .await
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("resolves only to loopback"),
            "{err}"
        );
    }
}

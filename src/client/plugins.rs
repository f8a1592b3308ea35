//! Plugins: publish a `.tar.gz` and list what is published.

use std::time::Duration;

use reqwest::{header, Method};

use super::{Client, PluginView, Result, REQUEST_TIMEOUT};

impl Client {
    /// `PUT /plugins/:name` with a `.tar.gz` body.
    pub(crate) async fn publish_plugin(&self, name: &str, tarball: Vec<u8>) -> Result<PluginView> {
        self.json(
            self.request(Method::PUT, &format!("plugins/{name}"))
                .header(header::CONTENT_TYPE, "application/gzip")
                .body(tarball)
                .timeout(Duration::from_secs(600)),
        )
        .await
    }

    /// `GET /plugins`.
    pub(crate) async fn list_plugins(&self) -> Result<Vec<PluginView>> {
        self.json(
            self.request(Method::GET, "plugins")
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }
}

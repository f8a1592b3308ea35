//! Hostile and out-of-range input, found by an adversarial run: settings
//! that do not fit, NUL characters, oversized bodies, slow clients,
//! revoked tokens on live streams, file modes, and IPv6 forms of internal
//! addresses.

use std::time::Duration;

use molecule::app::Application;
use molecule::config::Config;
use molecule::domain::AuthToken;

/// A retention that does not fit a `chrono` duration used to fall back to
/// zero, which the sweep reads as "everything is past retention".
#[tokio::test]
async fn a_retention_or_ttl_that_does_not_fit_is_refused_at_start_up() {
    let cases: [(&str, fn(&mut Config)); 3] = [
        ("--activity-retention", |c| {
            c.activity_retention = humantime::parse_duration("1000000000y").unwrap()
        }),
        ("--ack-retention", |c| {
            c.ack_retention = Duration::from_secs(u64::MAX)
        }),
        ("--upload-ttl", |c| {
            c.upload_ttl = humantime::parse_duration("200y").unwrap()
        }),
    ];
    for (flag, tweak) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::with_defaults(dir.path(), AuthToken::generate());
        config.listen = "127.0.0.1:0".parse().unwrap();
        tweak(&mut config);
        let err = Application::build(config)
            .await
            .err()
            .unwrap_or_else(|| panic!("{flag}: a period that does not fit was accepted"));
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!("{flag} is ")) && text.contains("longer than the 100 years"),
            "{flag}: {text}"
        );
        // Refused before anything was created.
        assert!(!dir.path().join("molecule.db").exists(), "{flag}");
    }
}

//! PostgreSQL going away and coming back: requests are answered 503 fast
//! while it is down (not after a long pool timeout, never 500), and the
//! server recovers by itself when it returns.
//!
//! The outage is real: the server reaches PostgreSQL through a TCP relay
//! this test runs on 127.0.0.1; stopping the relay cuts every connection and
//! refuses new ones, restarting it on the same port brings the database back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{fresh_postgres_url, spawn_app_with, Engine, Options};

/// A TCP relay to `upstream` on `listen`; aborting it drops every relayed
/// connection with it.
fn relay(listener: TcpListener, upstream: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            conns.spawn(async move {
                if let Ok(mut server) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_database_is_answered_503_fast_and_recovers() {
    let Some(direct) = fresh_postgres_url().await else {
        return;
    };
    let mut parsed = url::Url::parse(&direct).unwrap();
    let upstream: SocketAddr = format!(
        "{}:{}",
        parsed.host_str().unwrap().replace("localhost", "127.0.0.1"),
        parsed.port().unwrap_or(5432)
    )
    .parse()
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut running = relay(listener, upstream);
    parsed.set_port(Some(port)).unwrap();
    let via_relay = parsed.to_string();
    let app = spawn_app_with(Options::new(Engine::Postgres).tweak(move |c| {
        c.database_url = via_relay;
    }))
    .await
    .unwrap();
    let ws = app.create_poll_workspace("w").await;
    let (status, _) = app.get("/ready", "").await;
    assert_eq!(status, StatusCode::OK);

    // Down: every pooled connection is cut, new ones are refused.
    running.abort();
    let _ = running.await;
    for _ in 0..3 {
        for path in ["/ready".to_owned(), format!("/workspaces/{}", ws.id)] {
            let started = Instant::now();
            let (status, body) = app.get(&path, &app.admin_token).await;
            let took = started.elapsed();
            eprintln!("{path} while down: {status} in {took:?}");
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
            assert!(body["error"].is_string(), "{body}");
            assert!(took < Duration::from_millis(2500), "{path} took {took:?}");
        }
    }

    // Back: the server notices by itself.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    running = relay(listener, upstream);
    let started = Instant::now();
    loop {
        let (status, body) = app
            .get(&format!("/workspaces/{}", ws.id), &app.admin_token)
            .await;
        if status == StatusCode::OK {
            assert_eq!(body["id"], ws.id.as_str());
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovered in {:?}", started.elapsed());
    let (status, _) = app.get("/ready", "").await;
    assert_eq!(status, StatusCode::OK);
    running.abort();
}

/// A PostgreSQL that is stopping or starting may answer a new connection
/// with bytes that are no protocol answer (a `0x00` to the SSLRequest was
/// seen during a restart): the database is unavailable, so 503 like the
/// other outages, never 500; and the server recovers when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_answering_garbage_is_answered_503_not_500() {
    let Some(direct) = fresh_postgres_url().await else {
        return;
    };
    let mut parsed = url::Url::parse(&direct).unwrap();
    let upstream: SocketAddr = format!(
        "{}:{}",
        parsed.host_str().unwrap().replace("localhost", "127.0.0.1"),
        parsed.port().unwrap_or(5432)
    )
    .parse()
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let running = relay(listener, upstream);
    parsed.set_port(Some(port)).unwrap();
    let via_relay = parsed.to_string();
    let app = spawn_app_with(Options::new(Engine::Postgres).tweak(move |c| {
        c.database_url = via_relay;
    }))
    .await
    .unwrap();
    let ws = app.create_poll_workspace("w").await;

    // Every pooled connection is cut; each new one reads one 0x00 byte.
    running.abort();
    let _ = running.await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let garbage = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.write_all(&[0]).await;
        }
    });
    for _ in 0..3 {
        for path in ["/ready".to_owned(), format!("/workspaces/{}", ws.id)] {
            let (status, body) = app.get(&path, &app.admin_token).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
            assert!(body["error"].is_string(), "{body}");
        }
    }

    garbage.abort();
    let _ = garbage.await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let running = relay(listener, upstream);
    let started = Instant::now();
    loop {
        let (status, body) = app
            .get(&format!("/workspaces/{}", ws.id), &app.admin_token)
            .await;
        if status == StatusCode::OK {
            assert_eq!(body["id"], ws.id.as_str());
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = app.get("/ready", "").await;
    assert_eq!(status, StatusCode::OK);
    running.abort();
}

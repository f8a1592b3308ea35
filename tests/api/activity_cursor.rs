//! A poller's cursor and a retention sweep that commits between the two
//! reads of `list_activity`: the poller must get its "cursor expired"
//! answer, never a page that silently jumps over the swept rows.
//!
//! The interleaving cannot be forced from outside (the two reads are
//! microseconds apart), so the store offers one test hook that runs between
//! them; the sweep it runs is a real one, through a second store on the
//! same database, as another replica's would be.

use std::sync::Arc;

use chrono::Duration as Span;
use molecule::domain::{now, AuthToken, DeliveryMode, WorkspaceId};
use molecule::store::*;

use crate::helpers::{fresh_postgres_url, Engine};
use crate::on_both_engines;

async fn open_pair(
    engine: Engine,
) -> Option<(
    Arc<dyn Store>,
    Arc<dyn Store>,
    BetweenReads,
    tempfile::TempDir,
)> {
    let dir = tempfile::tempdir().unwrap();
    let url = match engine {
        Engine::Sqlite => format!("sqlite://{}", dir.path().join("t.db").display()),
        Engine::Postgres => fresh_postgres_url().await?,
    };
    let other = connect(&url).await.unwrap();
    other.migrate().await.unwrap();
    let (poller, hook): (Arc<dyn Store>, BetweenReads) = match engine {
        Engine::Sqlite => {
            let s = SqliteStore::connect(&url).await.unwrap();
            let hook = s.between_activity_reads();
            (Arc::new(s), hook)
        }
        Engine::Postgres => {
            let s = PostgresStore::connect(&url).await.unwrap();
            let hook = s.between_activity_reads();
            (Arc::new(s), hook)
        }
    };
    Some((poller, other, hook, dir))
}

on_both_engines!(a_sweep_between_the_reads_expires_the_cursor);
async fn a_sweep_between_the_reads_expires_the_cursor(engine: Engine) {
    let Some((poller, other, hook, _dir)) = open_pair(engine).await else {
        return;
    };
    let ws = WorkspaceId::new();
    let t0 = now();
    poller
        .create_workspace(
            ws,
            &NewWorkspace {
                name: "w".into(),
                delivery_mode: DeliveryMode::Poll,
                url: None,
                parent_id: None,
                tier: molecule::domain::Tier::DEFAULT,
                runtime: "external".into(),
                model: "m".into(),
            },
            AuthToken::generate().key(),
            t0,
        )
        .await
        .unwrap();
    let row = NewActivity {
        activity_type: "a2a_receive".into(),
        ..Default::default()
    };
    // Three old rows, then two recent ones.
    let mut ids = Vec::new();
    for i in 0..5 {
        let at = if i < 3 { t0 - Span::days(30) } else { t0 };
        ids.push(poller.insert_activity(ws, &row, at).await.unwrap().id);
    }
    // The poller has consumed the first row; a sweep of the old ones
    // commits between its two reads.
    let sweeper = other.clone();
    hook.set(move || {
        let sweeper = sweeper.clone();
        Box::pin(async move {
            let swept = sweeper
                .sweep_activity(t0 - Span::days(1), 100)
                .await
                .unwrap();
            assert_eq!(swept, 3);
        })
    });
    let page = poller
        .list_activity(
            ws,
            &ActivityQuery {
                since_id: ids[0],
                activity_type: None,
                limit: 100,
                ..ActivityQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(hook.ran(), "the hook did not run between the reads");
    assert_eq!(
        page,
        ActivityPage::CursorExpired {
            swept_through: ids[2]
        }
    );
    // The state left behind: only the two recent rows.
    let ActivityPage::Rows(rows) = other
        .list_activity(
            ws,
            &ActivityQuery {
                since_id: 0,
                activity_type: None,
                limit: 100,
                ..ActivityQuery::default()
            },
        )
        .await
        .unwrap()
    else {
        panic!("a cursor of 0 never expires");
    };
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), ids[3..]);
}

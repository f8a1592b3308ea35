//! The reach cache: the ids each workspace may reach, as the reach query
//! of `store::fleet` last answered them, kept with the tree generation
//! that answer was read at.
//!
//! The generation is the `reach_generation` row (migration 0023): the
//! database's own triggers count every change the reach rule reads (a
//! workspace created or purged, a parent moved, a removal or restore) in
//! the transaction that makes it. A cached answer is used only when a
//! statement reading the generation now finds the same number, so it is
//! exactly what the reach query would answer at that moment, whichever
//! replica or tool changed the tree and whether or not an event about it
//! arrived. Only ids are kept: what a peer listing shows (name, card,
//! status) is read afresh by id on every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::WorkspaceId;

/// At most this many ids in all (16 bytes each): past it the cache starts
/// over. A fleet of 10,000 workspaces in 100 teams of 100, every one
/// asked, holds about a million.
const MAX_IDS: usize = 4 << 20;

/// The answers of one generation; any other generation seen empties it.
#[derive(Default)]
struct Answers {
    tree: i64,
    by_workspace: HashMap<WorkspaceId, Arc<[WorkspaceId]>>,
    held: usize,
}

impl Answers {
    /// Starts over at generation `tree` unless it is already there.
    fn at(&mut self, tree: i64) -> &mut Self {
        if self.tree != tree {
            self.tree = tree;
            self.by_workspace.clear();
            self.held = 0;
        }
        self
    }
}

/// See the module docs. Part of each `SqlStore`.
#[derive(Default)]
pub(crate) struct ReachCache(Mutex<Answers>);

impl ReachCache {
    fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation and ids last cached for `id`, whatever the
    /// generation now: the caller checks it against the database.
    pub(crate) fn last(&self, id: WorkspaceId) -> Option<(i64, Arc<[WorkspaceId]>)> {
        let answers = self.answers();
        let ids = answers.by_workspace.get(&id)?.clone();
        Some((answers.tree, ids))
    }

    /// Keeps `ids`, the reach of `id` read at generation `tree`.
    pub(crate) fn keep(&self, id: WorkspaceId, tree: i64, ids: Arc<[WorkspaceId]>) {
        let mut answers = self.answers();
        let answers = answers.at(tree);
        if answers.held + ids.len() > MAX_IDS {
            answers.by_workspace.clear();
            answers.held = 0;
        }
        answers.held += ids.len();
        if let Some(old) = answers.by_workspace.insert(id, ids) {
            answers.held -= old.len();
        }
    }

    /// Generation `tree` was read now: the answers of any other are stale.
    pub(crate) fn seen(&self, tree: i64) {
        self.answers().at(tree);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_per_generation_and_dropped_when_it_moves() {
        let cache = ReachCache::default();
        let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
        assert!(cache.last(a).is_none());
        cache.keep(a, 7, Arc::from(vec![a, b]));
        let (tree, ids) = cache.last(a).expect("kept");
        assert_eq!((tree, &ids[..]), (7, &[a, b][..]));
        // Another answer of the same generation stays beside it.
        cache.keep(b, 7, Arc::from(vec![b]));
        assert_eq!(cache.last(a).map(|(t, _)| t), Some(7));
        assert_eq!(cache.answers().held, 3);
        // Replacing an answer counts only the new one.
        cache.keep(b, 7, Arc::from(vec![a, b]));
        assert_eq!(cache.answers().held, 4);
        // A later generation (or an earlier one: a database restored from
        // a backup) drops everything of the old one.
        cache.seen(8);
        assert!(cache.last(a).is_none() && cache.last(b).is_none());
        assert_eq!(cache.answers().held, 0);
        cache.keep(a, 3, Arc::from(vec![a]));
        assert_eq!(cache.last(a).map(|(t, ids)| (t, ids.len())), Some((3, 1)));
        assert!(cache.last(b).is_none());
    }
}

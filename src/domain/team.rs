//! The communication rule: who may talk to whom inside the workspace tree.
//!
//! Workspaces form a forest through `parent_id`. A workspace may reach
//! itself, its siblings (same parent; root workspaces are siblings of each
//! other), and any ancestor or descendant up to [`MAX_LEVELS`] levels away;
//! the operator may reach anyone. Everything that routes a message or
//! reveals a peer (A2A, peer calls, `/registry/:id/peers`,
//! `/registry/discover/:target`, the A2A catalog, TEAM memory) asks this
//! one function, so the rule cannot differ between routes.
//!
//! The rule needs each side's ancestor chain: the store reads one with a
//! single bounded query (`WorkspaceStore::ancestor_chain`), and a listing
//! of every workspace builds them all at once ([`Tree`]).

use std::collections::HashMap;

use super::WorkspaceId;

/// How many levels apart an ancestor and a descendant may still reach
/// each other.
pub const MAX_LEVELS: usize = 32;

/// A workspace's place in the tree: its id, its parent's, and its
/// ancestors (parent first, at most [`MAX_LEVELS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The workspace.
    pub id: WorkspaceId,
    /// Its parent; `None` for a root workspace.
    pub parent_id: Option<WorkspaceId>,
    /// Its parent, grandparent, … up to [`MAX_LEVELS`] of them.
    pub ancestors: Vec<WorkspaceId>,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator: may reach every workspace.
    Operator,
    /// A workspace, at its place in the tree.
    Workspace(Node),
}

/// The sentence a refusal carries: it names the rule.
pub const RULE: &str = "a workspace may only reach its siblings (workspaces with the same parent; root workspaces are siblings of each other) and its ancestors and descendants up to 32 levels away";

/// True when `from` may reach `to` under the communication rule. A
/// workspace reaching itself is allowed (it is trivially "in its team").
pub fn may_reach(from: &Caller, to: &Node) -> bool {
    match from {
        Caller::Operator => true,
        Caller::Workspace(from) => {
            from.id == to.id
                // siblings: same parent, or both roots
                || from.parent_id == to.parent_id
                // to is one of my ancestors (within the bound)
                || from.ancestors.iter().take(MAX_LEVELS).any(|a| *a == to.id)
                // I am one of to's ancestors (within the bound)
                || to.ancestors.iter().take(MAX_LEVELS).any(|a| *a == from.id)
        }
    }
}

/// The places of every workspace of a listing, each ancestor chain built
/// from the listing's parent links (for the routes that filter a whole
/// listing by the rule).
#[derive(Debug, Default)]
pub struct Tree(HashMap<WorkspaceId, Option<WorkspaceId>>);

impl Tree {
    /// The tree of `(id, parent_id)` pairs.
    pub fn new(links: impl IntoIterator<Item = (WorkspaceId, Option<WorkspaceId>)>) -> Self {
        Self(links.into_iter().collect())
    }

    /// The place of `id` (its chain stops at a parent the listing lacks).
    pub fn node(&self, id: WorkspaceId) -> Node {
        let parent_id = self.0.get(&id).copied().flatten();
        let mut ancestors = Vec::new();
        let mut next = parent_id;
        while let Some(p) = next {
            if ancestors.len() == MAX_LEVELS || ancestors.contains(&p) {
                break;
            }
            ancestors.push(p);
            next = self.0.get(&p).copied().flatten();
        }
        Node {
            id,
            parent_id,
            ancestors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_table() {
        // root_a ── mid ── leaf
        //       └── mid2 ── leaf2
        // root_b
        let root_a = WorkspaceId::new();
        let root_b = WorkspaceId::new();
        let mid = WorkspaceId::new();
        let mid2 = WorkspaceId::new();
        let leaf = WorkspaceId::new();
        let leaf2 = WorkspaceId::new();
        let tree = Tree::new([
            (root_a, None),
            (root_b, None),
            (mid, Some(root_a)),
            (mid2, Some(root_a)),
            (leaf, Some(mid)),
            (leaf2, Some(mid2)),
        ]);
        let ws = |id| Caller::Workspace(tree.node(id));
        let cases = [
            ("child reaches its parent", ws(mid), root_a, true),
            ("parent reaches its child", ws(root_a), mid, true),
            ("siblings reach each other", ws(mid), mid2, true),
            ("root siblings reach each other", ws(root_a), root_b, true),
            ("itself", ws(leaf), leaf, true),
            ("cousins are refused", ws(leaf), leaf2, false),
            ("grandchild reaches its grandparent", ws(leaf), root_a, true),
            ("grandparent reaches its grandchild", ws(root_a), leaf, true),
            ("uncle is refused", ws(leaf), mid2, false),
            ("nephew is refused", ws(mid2), leaf, false),
            ("another root's child is refused", ws(root_b), mid, false),
            (
                "a child cannot reach a root that is not its ancestor",
                ws(mid),
                root_b,
                false,
            ),
            ("operator reaches a leaf", Caller::Operator, leaf2, true),
            ("operator reaches a root", Caller::Operator, root_b, true),
        ];
        for (case, from, to, expected) in cases {
            assert_eq!(may_reach(&from, &tree.node(to)), expected, "{case}");
        }
    }

    #[test]
    fn ancestors_reach_down_32_levels_and_no_further() {
        let chain: Vec<WorkspaceId> = (0..=MAX_LEVELS + 1).map(|_| WorkspaceId::new()).collect();
        let tree = Tree::new(
            chain
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, i.checked_sub(1).map(|p| chain[p]))),
        );
        let root = Caller::Workspace(tree.node(chain[0]));
        let at_32 = tree.node(chain[MAX_LEVELS]);
        let at_33 = tree.node(chain[MAX_LEVELS + 1]);
        assert!(may_reach(&root, &at_32));
        assert!(may_reach(&Caller::Workspace(at_32), &tree.node(chain[0])));
        assert!(!may_reach(&root, &at_33));
        assert!(!may_reach(&Caller::Workspace(at_33), &tree.node(chain[0])));
    }
}

//! The communication rule: who may talk to whom inside the workspace tree.
//!
//! Workspaces form a forest through `parent_id`. A workspace may reach its
//! parent, its children and its siblings (same parent; root workspaces are
//! siblings of each other); the operator may reach anyone. Everything that
//! routes a message or reveals a peer (A2A peer calls, `/registry/:id/peers`,
//! `/registry/discover/:target`) asks this one function, so the rule cannot
//! differ between routes.

use super::WorkspaceId;

/// A workspace's place in the tree: its id and its parent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// The workspace.
    pub id: WorkspaceId,
    /// Its parent; `None` for a root workspace.
    pub parent_id: Option<WorkspaceId>,
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The operator: may reach every workspace.
    Operator,
    /// A workspace, at its place in the tree.
    Workspace(Node),
}

/// The sentence a refusal carries: it names the rule.
pub const RULE: &str = "a workspace may only reach its parent, its children and its siblings (workspaces with the same parent; root workspaces are siblings of each other)";

/// True when `from` may reach `to` under the communication rule. A
/// workspace reaching itself is allowed (it is trivially "in its team").
pub fn may_reach(from: Caller, to: Node) -> bool {
    match from {
        Caller::Operator => true,
        Caller::Workspace(from) => {
            from.id == to.id
                // to is my parent
                || from.parent_id == Some(to.id)
                // to is my child
                || to.parent_id == Some(from.id)
                // siblings: same parent, or both roots
                || from.parent_id == to.parent_id
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: WorkspaceId, parent: Option<WorkspaceId>) -> Node {
        Node {
            id,
            parent_id: parent,
        }
    }

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
        let n_root_a = node(root_a, None);
        let n_root_b = node(root_b, None);
        let n_mid = node(mid, Some(root_a));
        let n_mid2 = node(mid2, Some(root_a));
        let n_leaf = node(leaf, Some(mid));
        let n_leaf2 = node(leaf2, Some(mid2));
        let ws = Caller::Workspace;
        let cases = [
            ("child reaches its parent", ws(n_mid), n_root_a, true),
            ("parent reaches its child", ws(n_root_a), n_mid, true),
            ("siblings reach each other", ws(n_mid), n_mid2, true),
            (
                "root siblings reach each other",
                ws(n_root_a),
                n_root_b,
                true,
            ),
            ("itself", ws(n_leaf), n_leaf, true),
            ("cousins are refused", ws(n_leaf), n_leaf2, false),
            ("grandparent is refused", ws(n_leaf), n_root_a, false),
            ("grandchild is refused", ws(n_root_a), n_leaf, false),
            ("uncle is refused", ws(n_leaf), n_mid2, false),
            (
                "another root's child is refused",
                ws(n_root_b),
                n_mid,
                false,
            ),
            (
                "a child cannot reach a root that is not its parent",
                ws(n_mid),
                n_root_b,
                false,
            ),
            ("operator reaches a leaf", Caller::Operator, n_leaf2, true),
            ("operator reaches a root", Caller::Operator, n_root_b, true),
        ];
        for (case, from, to, expected) in cases {
            assert_eq!(may_reach(from, to), expected, "{case}");
        }
    }
}

//! Unit tests of the inbox wire format: every item round-trips through its row.

use super::*;

fn round_trips(item: InboxItem) -> InboxRow {
    let row = item.row();
    assert_eq!(InboxItem::parse(&row), Ok(item.clone()), "{row:?}");
    row
}

#[test]
fn a_message_row_keeps_its_wire_shape() {
    let to = WorkspaceId::new();
    let peer = WorkspaceId::new();
    let rpc = message_send_rpc(json!("r1"), json!({"message": {"parts": []}}));
    let row = round_trips(InboxItem::Message(Message {
        sender: Some(Sender::Peer(peer)),
        to: Some(to),
        text: "hi".into(),
        parts: json!([{"kind": "text", "text": "hi"}]),
        message_id: Some("m1".into()),
        rpc: Some(rpc.clone()),
        traceparent: None,
    }));
    assert_eq!(row.activity_type, "a2a_receive");
    assert_eq!(row.method.as_deref(), Some("message/send"));
    assert_eq!(row.source_id, Some(peer.to_string()));
    assert_eq!(row.target_id, Some(to.to_string()));
    assert_eq!(row.request_body, Some(rpc));
    assert_eq!(
        row.data,
        Some(
            json!({"source": "peer_agent", "source_id": peer.to_string(), "text": "hi",
            "parts": [{"kind": "text", "text": "hi"}], "message_id": "m1"})
        )
    );
}

#[test]
fn a_message_without_data_reads_its_parts_from_the_request() {
    let row = InboxRow {
        activity_type: INBOX_TYPE.into(),
        method: Some(MESSAGE_SEND.into()),
        request_body: Some(json!({"params": {"message": {"parts": [
            {"kind": "text", "text": "a"}, {"kind": "text", "text": "b"}]}}})),
        ..InboxRow::default()
    };
    let Ok(InboxItem::Message(m)) = InboxItem::parse(&row) else {
        panic!("not a message");
    };
    assert_eq!(
        (m.text.as_str(), m.sender, m.message_id),
        ("a\nb", None, None)
    );
}

#[test]
fn delegation_rows_keep_their_wire_shape() {
    let id = DelegationId::new();
    let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
    let row = round_trips(InboxItem::Delegate(Delegate {
        delegation_id: id,
        caller: Caller::Workspace(a),
        callee: b,
        task: "do it\nnow".into(),
        deadline: None,
        idempotency_key: "k".into(),
        traceparent: None,
    }));
    assert_eq!(row.summary.as_deref(), Some("do it"));
    assert_eq!(
        row.data,
        Some(json!({"delegation_id": id, "task": "do it\nnow", "deadline": null}))
    );
    let row = round_trips(InboxItem::DelegationResult(DelegationResult {
        delegation_id: id,
        caller: Caller::Workspace(a),
        callee: b,
        status: DelegationStatus::Failed,
        task_preview: "do it".into(),
        result_preview: None,
        error_detail: Some("boom".into()),
    }));
    assert_eq!(row.summary.as_deref(), Some("delegation failed: do it"));
    assert_eq!(row.status.as_deref(), Some("failed"));
    assert_eq!(
        row.data,
        Some(
            json!({"delegation_id": id, "status": "failed", "result_preview": null,
            "error_detail": "boom"})
        )
    );
}

#[test]
fn upload_restart_and_agent_rows_round_trip() {
    let ws = WorkspaceId::new();
    let row = round_trips(InboxItem::ChatUpload(ChatUpload::staged(
        ws,
        FileId::new(),
        "a.txt".into(),
        "text/plain".into(),
        2048,
        "00".into(),
    )));
    assert_eq!(row.summary.as_deref(), Some("file a.txt (2.0 KiB)"));
    assert_eq!(row.request_body, row.data);
    round_trips(InboxItem::RestartRequested);
    round_trips(InboxItem::AgentMessage(AgentMessage {
        from: ws,
        text: "done".into(),
        attachments: vec![json!({"uri": "x"})],
    }));
    round_trips(InboxItem::ForwardedUpload(ForwardedUpload {
        to: ws,
        filename: "b".into(),
        mimetype: json!("text/plain"),
        size: Some(3),
        sha256: Value::Null,
        uri: json!("workspace:/b"),
    }));
}

#[test]
fn unknown_kinds_are_kept_and_broken_known_ones_are_unreadable() {
    let other = InboxRow {
        activity_type: "tool_call".into(),
        summary: Some("x".into()),
        ..InboxRow::default()
    };
    assert_eq!(
        InboxItem::parse(&other),
        Ok(InboxItem::Other(other.clone()))
    );
    let broken = InboxRow {
        activity_type: INBOX_TYPE.into(),
        method: Some(DELEGATE.into()),
        ..InboxRow::default()
    };
    assert!(InboxItem::parse(&broken).is_err());
}

#[test]
fn approval_rows_round_trip_and_keep_their_wire_shape() {
    use crate::domain::approval::{DecidedBy, Decision};
    use crate::domain::ApprovalId;
    let (ws, parent, id) = (WorkspaceId::new(), WorkspaceId::new(), ApprovalId::new());
    let at: DateTime<Utc> = "2026-01-02T03:04:05Z".parse().unwrap();
    let row = round_trips(InboxItem::ApprovalDecided(ApprovalDecided {
        approval_id: id,
        workspace_id: ws,
        action: "rm -rf build/".into(),
        task_id: Some("t1".into()),
        decision: Decision::Denied,
        decided_by: DecidedBy::Workspace(parent),
        note: Some("not today".into()),
        decided_at: at,
    }));
    assert_eq!(
        (row.activity_type.as_str(), row.method.as_deref()),
        (INBOX_TYPE, Some(APPROVAL_DECIDED))
    );
    assert_eq!(row.status.as_deref(), Some("denied"));
    assert_eq!(row.source_id, Some(parent.to_string()));
    assert_eq!(row.data.as_ref().unwrap()["decided_by"], json!(parent));
    assert_eq!(row.data.as_ref().unwrap()["decision"], json!("denied"));
    let row = round_trips(InboxItem::ApprovalRequested(ApprovalRequested {
        approval_id: id,
        workspace_id: ws,
        approver_id: parent,
        action: "deploy".into(),
        reason: None,
        context: Some(json!({"env": "prod"})),
        expires_at: Some(at),
    }));
    assert_eq!(row.method.as_deref(), Some(APPROVAL_REQUESTED));
    assert_eq!(row.target_id, Some(parent.to_string()));
    let mut broken = row.clone();
    broken.data = Some(json!({"approval_id": "nope"}));
    assert!(InboxItem::parse(&broken).is_err());
}

#[test]
fn an_instructions_changed_row_round_trips() {
    use crate::domain::InstructionId;
    let (ws, id) = (WorkspaceId::new(), InstructionId::new());
    let row = round_trips(InboxItem::InstructionsChanged(InstructionsChanged {
        workspace_id: ws,
        instruction_id: id,
        change: "updated".into(),
    }));
    assert_eq!(
        (row.activity_type.as_str(), row.method.as_deref()),
        (INBOX_TYPE, Some(INSTRUCTIONS_CHANGED))
    );
    assert_eq!(
        row.data,
        Some(json!({"workspace_id": ws, "instruction_id": id, "change": "updated"}))
    );
    let mut broken = row.clone();
    broken.data = None;
    assert!(InboxItem::parse(&broken).is_err());
}

#[test]
fn answer_text_reads_a_message_and_a_task() {
    let msg = json!({"jsonrpc": "2.0", "id": 1, "result": {"kind": "message", "parts": [{"kind": "text", "text": "hi"}]}});
    assert_eq!(answer_text(&msg), "hi");
    let task = json!({"result": {"kind": "task", "status": {"message": {"parts": [{"kind": "text", "text": "done"}]}},
        "artifacts": [{"parts": [{"kind": "text", "text": "out"}]}]}});
    let text = answer_text(&task);
    assert!(text.contains("done") && text.contains("out"), "{text}");
}

#[test]
fn a_traceparent_rides_in_the_data_of_delegate_and_message_rows() {
    let p = crate::domain::TraceParent::start();
    let item = InboxItem::Delegate(Delegate {
        delegation_id: DelegationId::new(),
        caller: Caller::Operator,
        callee: WorkspaceId::new(),
        task: "t".into(),
        deadline: None,
        idempotency_key: "k".into(),
        traceparent: Some(p),
    });
    let row = round_trips(item);
    assert_eq!(row.data.unwrap()["traceparent"], json!(p.header()));
    let row = round_trips(InboxItem::Message(Message {
        sender: Some(Sender::Operator),
        to: Some(WorkspaceId::new()),
        text: "hi".into(),
        parts: json!([]),
        message_id: Some("m".into()),
        rpc: None,
        traceparent: Some(p),
    }));
    assert_eq!(row.data.unwrap()["traceparent"], json!(p.header()));
}

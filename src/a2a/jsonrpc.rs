//! JSON-RPC 2.0 for A2A: the request as read, the answer envelope, the
//! error codes A2A defines, and the `A2A-Version` header.

use serde_json::{json, Value};

use super::Dialect;

/// Versions this server speaks, as `A2A-Version` names them.
pub(crate) const VERSIONS: [&str; 2] = ["1.0", "0.3"];

/// An A2A method, by either version's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `SendMessage` / `message/send`.
    SendMessage,
    /// `SendStreamingMessage` / `message/stream`.
    SendStreamingMessage,
    /// `GetTask` / `tasks/get`.
    GetTask,
    /// `ListTasks` (1.0 only).
    ListTasks,
    /// `CancelTask` / `tasks/cancel`.
    CancelTask,
    /// `SubscribeToTask` / `tasks/resubscribe`.
    SubscribeToTask,
    /// The four push notification config methods.
    PushConfig(PushOp),
    /// `GetExtendedAgentCard` / `agent/getAuthenticatedExtendedCard`.
    GetExtendedAgentCard,
}

impl Method {
    /// The method and the dialect of a name, or `None` for a name A2A
    /// does not define.
    pub(crate) fn parse(name: &str) -> Option<(Method, Dialect)> {
        use Dialect::*;
        use Method::*;
        Some(match name {
            "SendMessage" => (SendMessage, V1),
            "message/send" => (SendMessage, V03),
            "SendStreamingMessage" => (SendStreamingMessage, V1),
            "message/stream" => (SendStreamingMessage, V03),
            "GetTask" => (GetTask, V1),
            "tasks/get" => (GetTask, V03),
            "ListTasks" => (ListTasks, V1),
            "CancelTask" => (CancelTask, V1),
            "tasks/cancel" => (CancelTask, V03),
            "SubscribeToTask" => (SubscribeToTask, V1),
            "tasks/resubscribe" => (SubscribeToTask, V03),
            "CreateTaskPushNotificationConfig" => (PushConfig(PushOp::Create), V1),
            "GetTaskPushNotificationConfig" => (PushConfig(PushOp::Get), V1),
            "ListTaskPushNotificationConfigs" => (PushConfig(PushOp::List), V1),
            "DeleteTaskPushNotificationConfig" => (PushConfig(PushOp::Delete), V1),
            "tasks/pushNotificationConfig/set" => (PushConfig(PushOp::Create), V03),
            "tasks/pushNotificationConfig/get" => (PushConfig(PushOp::Get), V03),
            "tasks/pushNotificationConfig/list" => (PushConfig(PushOp::List), V03),
            "tasks/pushNotificationConfig/delete" => (PushConfig(PushOp::Delete), V03),
            "GetExtendedAgentCard" => (GetExtendedAgentCard, V1),
            "agent/getAuthenticatedExtendedCard" => (GetExtendedAgentCard, V03),
            _ => return None,
        })
    }
}

/// Which push notification config method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushOp {
    /// `CreateTaskPushNotificationConfig` / `tasks/pushNotificationConfig/set`.
    Create,
    /// `GetTaskPushNotificationConfig` / `tasks/pushNotificationConfig/get`.
    Get,
    /// `ListTaskPushNotificationConfigs` / `tasks/pushNotificationConfig/list`.
    List,
    /// `DeleteTaskPushNotificationConfig` / `tasks/pushNotificationConfig/delete`.
    Delete,
}

/// An A2A error: its JSON-RPC code and message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RpcError {
    /// The JSON-RPC code (A2A's are -32001…-32009).
    pub code: i64,
    /// What went wrong, for humans.
    pub message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// -32600: not a JSON-RPC 2.0 request.
    pub(crate) fn invalid_request(m: impl Into<String>) -> Self {
        Self::new(-32600, m)
    }
    /// -32601: no such method.
    pub(crate) fn method_not_found(m: impl Into<String>) -> Self {
        Self::new(-32601, m)
    }
    /// -32602: the params are wrong.
    pub(crate) fn invalid_params(m: impl Into<String>) -> Self {
        Self::new(-32602, m)
    }
    /// -32001 `TaskNotFoundError` (also for a task the caller may not see).
    pub(crate) fn task_not_found() -> Self {
        Self::new(-32001, "Task not found")
    }
    /// -32002 `TaskNotCancelableError`.
    pub(crate) fn task_not_cancelable(state: &str) -> Self {
        Self::new(-32002, format!("Task cannot be canceled: it is {state}"))
    }
    /// -32004 `UnsupportedOperationError`.
    pub(crate) fn unsupported(m: impl Into<String>) -> Self {
        Self::new(-32004, m)
    }
    /// -32009 `VersionNotSupportedError`.
    pub(crate) fn version_not_supported(v: &str) -> Self {
        Self::new(
            -32009,
            format!(
                "A2A-Version {v:?} is not supported: this server speaks {}",
                VERSIONS.join(" and ")
            ),
        )
    }
}

/// The answer envelope: `result` or `error`, with the request's id.
pub(crate) fn envelope(id: &Value, outcome: Result<Value, RpcError>) -> Value {
    match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id,
            "error": {"code": e.code, "message": e.message}}),
    }
}

/// Checks an `A2A-Version` value: absent or one this server speaks
/// (`1.0`, `0.3`, with or without a patch number).
pub(crate) fn check_version(header: Option<&str>) -> Result<(), RpcError> {
    let Some(v) = header.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let major_minor: Vec<&str> = v.splitn(3, '.').take(2).collect();
    if VERSIONS.contains(&major_minor.join(".").as_str()) || v == "1" {
        Ok(())
    } else {
        Err(RpcError::version_not_supported(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_by_major_and_minor() {
        for ok in [
            None,
            Some(""),
            Some("1.0"),
            Some("0.3"),
            Some("0.3.0"),
            Some("1"),
        ] {
            assert_eq!(check_version(ok), Ok(()), "{ok:?}");
        }
        for bad in ["0.2", "2.0", "x"] {
            assert_eq!(check_version(Some(bad)).unwrap_err().code, -32009, "{bad}");
        }
    }

    #[test]
    fn both_versions_names_map_to_one_method() {
        assert_eq!(
            Method::parse("SendMessage"),
            Some((Method::SendMessage, Dialect::V1))
        );
        assert_eq!(
            Method::parse("message/send"),
            Some((Method::SendMessage, Dialect::V03))
        );
        assert_eq!(Method::parse("tasks/send"), None);
    }
}

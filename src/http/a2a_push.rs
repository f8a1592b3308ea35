//! A2A push notification configs: `Create`, `Get`, `List` and
//! `DeleteTaskPushNotificationConfig` (and 0.3's `tasks/pushNotificationConfig/*`)
//! on `POST /workspaces/:id/a2a`. A config belongs to a task and is managed
//! by whoever may see the task (its caller or its callee); its URL is
//! checked like a push workspace's when it is set. What is sent, and when,
//! is `crate::a2a::push`.

use serde_json::{json, Value};

use super::a2a::Call;
use super::Result;
use crate::a2a::jsonrpc::{PushOp, RpcError};
use crate::a2a::push::{self, MAX_CONFIGS};
use crate::a2a::Dialect;
use crate::store::A2aTask;

type Rpc = std::result::Result<Value, RpcError>;

impl Call<'_> {
    /// One of the four config methods.
    pub(super) async fn push_config(&self, op: PushOp, params: &Value) -> Result<Rpc> {
        let task = match push::task_param(params, self.dialect) {
            Ok(tid) => self.task(&json!({ "id": tid }), "id").await?,
            Err(e) => Err(e),
        };
        let task = match task {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        match op {
            PushOp::Create => self.create_config(&task, params).await,
            PushOp::Get => self.get_config(&task, params).await,
            PushOp::List => self.list_configs(&task).await,
            PushOp::Delete => self.delete_config(&task, params).await,
        }
    }

    async fn create_config(&self, task: &A2aTask, params: &Value) -> Result<Rpc> {
        let allow_private = self.state.config.allow_private_urls;
        let config =
            match push::parse_config(params, self.dialect, task.delegation.id, allow_private) {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
        let store = &self.state.store;
        let existing = store.list_push_configs(task.delegation.id).await?;
        if existing.len() >= MAX_CONFIGS && !existing.iter().any(|c| c.id == config.id) {
            return Ok(Err(RpcError::invalid_params(format!(
                "a task has at most {MAX_CONFIGS} push notification configs: delete one first"
            ))));
        }
        store.put_push_config(&config).await?;
        Ok(Ok(push::config_json(&config, self.dialect)))
    }

    async fn get_config(&self, task: &A2aTask, params: &Value) -> Result<Rpc> {
        let tid = task.delegation.id;
        let found = match push::config_param(params, self.dialect) {
            Ok(Some(id)) => self.state.store.get_push_config(tid, &id).await?,
            // 0.3 without a config id: the task's (first) config.
            Ok(None) => self
                .state
                .store
                .list_push_configs(tid)
                .await?
                .into_iter()
                .next(),
            Err(e) => return Ok(Err(e)),
        };
        Ok(found
            .map(|c| push::config_json(&c, self.dialect))
            .ok_or_else(no_config))
    }

    async fn list_configs(&self, task: &A2aTask) -> Result<Rpc> {
        let configs: Vec<Value> = self
            .state
            .store
            .list_push_configs(task.delegation.id)
            .await?
            .iter()
            .map(|c| push::config_json(c, self.dialect))
            .collect();
        // At most MAX_CONFIGS: one page.
        Ok(Ok(match self.dialect {
            Dialect::V1 => json!({"configs": configs, "nextPageToken": ""}),
            Dialect::V03 => json!(configs),
        }))
    }

    async fn delete_config(&self, task: &A2aTask, params: &Value) -> Result<Rpc> {
        let id = match push::config_param(params, self.dialect) {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Ok(Err(RpcError::invalid_params(
                    "`params.pushNotificationConfigId` must be a config id",
                )))
            }
            Err(e) => return Ok(Err(e)),
        };
        if !self
            .state
            .store
            .delete_push_config(task.delegation.id, &id)
            .await?
        {
            return Ok(Err(no_config()));
        }
        Ok(Ok(match self.dialect {
            Dialect::V1 => json!({}),
            Dialect::V03 => Value::Null,
        }))
    }
}

fn no_config() -> RpcError {
    RpcError::invalid_params("no push notification config of that id on this task")
}

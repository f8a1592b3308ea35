//! Plugins: published archives (the bytes in the blob store) and which
//! workspace installed which.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::{SqlStore, Ts};
use super::*;

/// A published plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    /// Its name.
    pub name: PluginName,
    /// Where the tarball is.
    pub blob_key: String,
    /// Size in bytes.
    pub size: i64,
    /// Hex SHA-256 of the tarball.
    pub sha256: String,
    /// First published.
    pub created_at: DateTime<Utc>,
    /// Last published.
    pub updated_at: DateTime<Utc>,
}

/// A plugin a workspace reports it installed.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInstall {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The plugin's name.
    pub name: PluginName,
    /// Where it came from, as the agent says.
    pub source: String,
    /// Last install.
    pub installed_at: DateTime<Utc>,
}

/// `plugins` as read (`SELECT *`).
#[derive(sqlx::FromRow)]
pub(super) struct PluginRow {
    name: String,
    blob_key: String,
    size_bytes: i64,
    sha256: String,
    created_at: Ts,
    updated_at: Ts,
}

fn plugin_name(raw: &str) -> StoreResult<PluginName> {
    PluginName::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl TryFrom<PluginRow> for Plugin {
    type Error = StoreError;
    fn try_from(r: PluginRow) -> StoreResult<Self> {
        Ok(Plugin {
            name: plugin_name(&r.name)?,
            blob_key: r.blob_key,
            size: r.size_bytes,
            sha256: r.sha256,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        })
    }
}

/// `workspace_plugins` as read (`SELECT *`).
#[derive(sqlx::FromRow)]
pub(super) struct InstallRow {
    workspace_id: WorkspaceId,
    name: String,
    source: String,
    installed_at: Ts,
}

impl TryFrom<InstallRow> for PluginInstall {
    type Error = StoreError;
    fn try_from(r: InstallRow) -> StoreResult<Self> {
        Ok(PluginInstall {
            workspace_id: r.workspace_id,
            name: plugin_name(&r.name)?,
            source: r.source,
            installed_at: r.installed_at.0,
        })
    }
}

/// Plugins and their installs. Part of [`Store`]; both engines implement it below.
#[async_trait]
pub trait PluginStore: Send + Sync {
    /// Inserts or replaces a plugin; returns the blob key it replaced.
    async fn put_plugin(
        &self,
        name: &PluginName,
        blob_key: &str,
        size: i64,
        sha256: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<String>>;

    /// One plugin.
    async fn get_plugin(&self, name: &PluginName) -> StoreResult<Option<Plugin>>;

    /// Every plugin, by name.
    async fn list_plugins(&self) -> StoreResult<Vec<Plugin>>;

    /// Deletes a plugin and returns its blob key; `None` when absent.
    async fn delete_plugin(&self, name: &PluginName) -> StoreResult<Option<String>>;

    /// Records (or refreshes) an install; `None` when the workspace is absent.
    async fn record_plugin_install(
        &self,
        workspace_id: WorkspaceId,
        name: &PluginName,
        source: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PluginInstall>>;

    /// A workspace's installs, by name.
    async fn list_plugin_installs(
        &self,
        workspace_id: WorkspaceId,
    ) -> StoreResult<Vec<PluginInstall>>;
}

engines! {
    #[async_trait]
    impl PluginStore for SqlStore<DB> {
        #[tracing::instrument(skip_all, fields(plugin = %name))]
        async fn put_plugin(
            &self,
            name: &PluginName,
            blob_key: &str,
            size: i64,
            sha256: &str,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<String>> {
            let mut tx = self.write_tx().await?;
            let old: Option<String> =
                sqlx::query_scalar("SELECT blob_key FROM plugins WHERE name = $1")
                    .bind(name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            sqlx::query(
                "INSERT INTO plugins (name, blob_key, size_bytes, sha256, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) \
                 ON CONFLICT (name) DO UPDATE SET blob_key = excluded.blob_key, \
                   size_bytes = excluded.size_bytes, sha256 = excluded.sha256, \
                   updated_at = excluded.updated_at",
            )
            .bind(name.as_str())
            .bind(blob_key)
            .bind(size)
            .bind(sha256)
            .bind(Ts(now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(old)
        }

        async fn get_plugin(&self, name: &PluginName) -> StoreResult<Option<Plugin>> {
            let row: Option<PluginRow> = sqlx::query_as("SELECT * FROM plugins WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await?;
            row.map(TryInto::try_into).transpose()
        }

        async fn list_plugins(&self) -> StoreResult<Vec<Plugin>> {
            let rows: Vec<PluginRow> = sqlx::query_as("SELECT * FROM plugins ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        #[tracing::instrument(skip_all, fields(plugin = %name))]
        async fn delete_plugin(&self, name: &PluginName) -> StoreResult<Option<String>> {
            let _w = self.writer().await;
            Ok(sqlx::query_scalar::<_, String>(
                "DELETE FROM plugins WHERE name = $1 RETURNING blob_key",
            )
            .bind(name.as_str())
            .fetch_all(&self.pool)
            .await?
            .pop())
        }

        #[tracing::instrument(skip_all, fields(workspace_id = %workspace_id, plugin = %name))]
        async fn record_plugin_install(
            &self,
            workspace_id: WorkspaceId,
            name: &PluginName,
            source: &str,
            now: DateTime<Utc>,
        ) -> StoreResult<Option<PluginInstall>> {
            let _w = self.writer().await;
            let row: Option<InstallRow> = sqlx::query_as(
                "INSERT INTO workspace_plugins (workspace_id, name, source, installed_at) \
                 SELECT $1, $2, $3, $4 \
                 WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = $1 AND removed_at IS NULL) \
                 ON CONFLICT (workspace_id, name) DO UPDATE \
                   SET source = excluded.source, installed_at = excluded.installed_at \
                 RETURNING *",
            )
            .bind(workspace_id)
            .bind(name.as_str())
            .bind(source)
            .bind(Ts(now))
            .fetch_all(&self.pool)
            .await?
            .pop();
            row.map(TryInto::try_into).transpose()
        }

        async fn list_plugin_installs(
            &self,
            workspace_id: WorkspaceId,
        ) -> StoreResult<Vec<PluginInstall>> {
            let rows: Vec<InstallRow> = sqlx::query_as(
                "SELECT * FROM workspace_plugins WHERE workspace_id = $1 ORDER BY name",
            )
            .bind(workspace_id)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }
    }
}

//! The server's files are its own: the data dir and every folder under it
//! are created 0700, every file (the SQLite database, blobs, spool
//! files, the admin token) 0600. The admin token was
//! already private while the database and blobs beside it were readable by
//! every local user; modes are set at creation, not left to the umask.

use std::io;
use std::path::Path;

/// Mode of folders the server creates.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of files the server creates.
pub(crate) const FILE_MODE: u32 = 0o600;

/// A folder builder that makes folders 0700.
fn dir_builder(recursive: bool) -> std::fs::DirBuilder {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(recursive);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder
}

/// `create_dir_all`, with every folder it creates made 0700.
pub(crate) fn create_dir_all(path: &Path) -> io::Result<()> {
    dir_builder(true).create(path)
}

/// Creates one folder, 0700 (its parent must exist).
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    dir_builder(false).create(path)
}

/// The async twin of [`create_dir_all`].
pub(crate) async fn create_dir_all_async(path: &Path) -> io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(DIR_MODE);
    builder.create(path).await
}

/// Creates `path` (0700) or, if it exists, takes group and world access
/// away from it: data dirs made by earlier versions were 0755.
pub(crate) fn prepare_data_dir(path: &Path) -> io::Result<()> {
    create_dir_all(path)?;
    restrict(path, DIR_MODE)
}

/// Takes group and world access away from `path` if it has any.
pub(crate) fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let current = std::fs::metadata(path)?.permissions().mode();
        if current & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            tracing::info!(path = %path.display(), from = format!("{:o}", current & 0o777), to = format!("{mode:o}"), "restricted the mode of a data file");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Options that create a new file 0600 (for writing).
pub(crate) fn new_file_options() -> tokio::fs::OpenOptions {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(FILE_MODE);
    options
}

/// Writes a new file (0600) holding `contents` and syncs it; fails if the
/// file exists (`create_new`), so a racing writer never truncates it.
pub(crate) fn create_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes sure the SQLite file a `sqlite://` URL names exists and is 0600
/// before SQLite opens it: SQLite creates a missing file with the umask's
/// mode (0644), and gives its `-wal` and `-shm` files the mode of the
/// database file. Other URLs, and in-memory databases, are left alone.
pub(crate) fn prepare_sqlite_file(database_url: &str) -> io::Result<()> {
    if !database_url.starts_with("sqlite:") || database_url.contains("mode=memory") {
        return Ok(());
    }
    let Ok(parsed) =
        <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(database_url)
    else {
        // Not ours to judge: opening the store reports the bad URL.
        return Ok(());
    };
    let path = parsed.get_filename();
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options.open(path)?;
    restrict(path, FILE_MODE)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        match restrict(Path::new(&side), FILE_MODE) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

//! A local folder as the object store: the embedded default, no server needed.
//!
//! `object_store`'s `LocalFileSystem` keeps neither metadata nor conditional updates, so
//! this store is Cellar's own. Each object is three files beside each other:
//!
//! - `{key}`: the body, a plain file (a user's database is a plain SQLite file);
//! - `{key}.cellar-meta`: JSON with the ETag and metadata: the commit point of a write;
//! - `{key}.cellar-lock`: an advisory file lock (shared to read, exclusive to write),
//!   so compare-and-swap is atomic across processes, and released if a process dies.
//!
//! A delete leaves nothing behind, as on S3: the object's files, its lock file, and the
//! folders it leaves empty. It removes the lock file while holding it, so whoever takes a
//! lock checks that its file is still linked, and else takes the lock again on the file now
//! at that path: the lock stays one per object across processes.
//!
//! A write, under the exclusive lock: body to `{key}.cellar-incoming` (fsync), metadata
//! to a temp file (fsync) renamed over `{key}.cellar-meta` (the commit), then the incoming
//! body renamed over `{key}`. A crash between the two renames leaves an incoming file
//! whose hash matches the committed metadata: the next access finishes the rename
//! (roll forward). An incoming file that does not match was never committed and is removed.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{
    ByteStream, ETag, Fetched, Listed, ObjectInfo, PutCondition, Store, StoreError,
    check_condition, content_etag,
};
use crate::fsutil;
use crate::metadata::RawMetadata;

const META_SUFFIX: &str = ".cellar-meta";
const INCOMING_SUFFIX: &str = ".cellar-incoming";
const LOCK_SUFFIX: &str = ".cellar-lock";

/// Objects as files under a root folder, with metadata and compare-and-swap.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: Arc<PathBuf>,
}

/// The committed state of one object, stored in `{key}.cellar-meta`.
#[derive(Serialize, Deserialize)]
struct MetaFile {
    etag: ETag,
    size: u64,
    metadata: RawMetadata,
}

/// A metadata file read for its ETag alone (the version check needs nothing else).
#[derive(Deserialize)]
struct MetaEtag {
    etag: ETag,
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut named = path.as_os_str().to_owned();
    named.push(suffix);
    PathBuf::from(named)
}

/// The files of one object.
struct ObjectFiles {
    body: PathBuf,
    meta: PathBuf,
    incoming: PathBuf,
    lock: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: Arc::new(root.into()),
        }
    }

    /// Where the body of `key` lives; refuses keys that are not plain relative paths.
    fn body_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let relative = Path::new(key);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if key.is_empty() || !plain {
            return Err(StoreError::unavailable(
                "resolve",
                key,
                "key is not a plain relative path",
            ));
        }
        Ok(self.root.join(relative))
    }

    fn files(&self, key: &str) -> Result<ObjectFiles, StoreError> {
        let body = self.body_path(key)?;
        Ok(ObjectFiles {
            meta: with_suffix(&body, META_SUFFIX),
            incoming: with_suffix(&body, INCOMING_SUFFIX),
            lock: with_suffix(&body, LOCK_SUFFIX),
            body,
        })
    }

    /// Every request's version check, so first without the lock and without a trip to the
    /// blocking pool (one read of a file of a few hundred bytes, and only its ETag parsed):
    /// the metadata file is the commit point and is replaced by rename, so when it names
    /// the caller's ETag that is the committed version (a write in progress has not
    /// committed; an interrupted one either never committed or changed the ETag).
    fn unchanged(&self, key: &str, if_none_match: Option<&ETag>) -> Result<bool, StoreError> {
        let Some(etag) = if_none_match else {
            return Ok(false);
        };
        let meta = with_suffix(&self.body_path(key)?, META_SUFFIX);
        // `take` skips `File::read_to_end`'s size probe (a `statx`): one system call fewer
        // on every request; metadata files are a few hundred bytes.
        let mut bytes = Vec::with_capacity(1024);
        match File::open(&meta).and_then(|file| file.take(1 << 20).read_to_end(&mut bytes)) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(StoreError::unavailable("get", key, err)),
        }
        let committed: MetaEtag = serde_json::from_slice(&bytes)
            .map_err(|err| StoreError::unavailable("get", key, err))?;
        Ok(&committed.etag == etag)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        key: &str,
        op: &'static str,
        work: impl FnOnce(&ObjectFiles) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let files = self.files(key)?;
        let owned_key = key.to_owned();
        tokio::task::spawn_blocking(move || work(&files))
            .await
            .map_err(|join| StoreError::unavailable(op, &owned_key, join))?
            .map_err(|err| StoreError::unavailable(op, &owned_key, err))
    }
}

impl ObjectFiles {
    /// Takes the object's lock to write, creating its folder and lock file, and finishes
    /// an interrupted write first.
    fn lock_exclusive(&self) -> io::Result<File> {
        loop {
            if let Some(parent) = self.lock.parent() {
                fs::create_dir_all(parent)?;
            }
            let opened = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&self.lock);
            let lock = match opened {
                Ok(lock) => lock,
                // A delete removed the folder, empty, between the two steps.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            lock.lock()?;
            if still_linked(&lock)? {
                self.finish_interrupted_write()?;
                return Ok(lock);
            }
        }
    }

    /// Takes the object's lock to read (exclusive while it finishes an interrupted write);
    /// `None` when there is no lock file. A write creates the lock file before anything
    /// else, so without one there is no object, and a read (every request's version check)
    /// creates nothing and costs fewer system calls.
    fn lock_shared(&self) -> io::Result<Option<File>> {
        loop {
            let lock = match File::open(&self.lock) {
                Ok(lock) => lock,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(err),
            };
            let interrupted = self.incoming.exists();
            if interrupted {
                lock.lock()?;
            } else {
                lock.lock_shared()?;
            }
            if !still_linked(&lock)? {
                continue;
            }
            if interrupted {
                self.finish_interrupted_write()?;
            }
            return Ok(Some(lock));
        }
    }

    /// The committed object, its body opened under the shared lock. A write replaces the
    /// body by rename, so the open file stays this version's body however long it is read
    /// after the lock is released.
    fn open_current(&self, if_none_match: Option<&ETag>) -> io::Result<Fetched<File>> {
        let Some(_lock) = self.lock_shared()? else {
            return Ok(Fetched::NotFound);
        };
        let Some(meta) = self.read_meta()? else {
            return Ok(Fetched::NotFound);
        };
        if Some(&meta.etag) == if_none_match {
            return Ok(Fetched::NotModified);
        }
        let body = File::open(&self.body)?;
        Ok(Fetched::Found {
            info: ObjectFiles::info(meta),
            body,
        })
    }

    fn finish_interrupted_write(&self) -> io::Result<()> {
        let incoming = match fs::read(&self.incoming) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        let committed = self.read_meta()?.map(|meta| meta.etag);
        if committed == Some(content_etag(&incoming)) {
            fs::rename(&self.incoming, &self.body)?;
        } else {
            fs::remove_file(&self.incoming)?;
        }
        sync_dir(&self.body)
    }

    fn read_meta(&self) -> io::Result<Option<MetaFile>> {
        match fs::read(&self.meta) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(io::Error::other),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn info(meta: MetaFile) -> ObjectInfo {
        ObjectInfo {
            etag: meta.etag,
            size: meta.size,
            metadata: meta.metadata,
        }
    }
}

/// How much of a body one read takes.
const PIECE: u64 = 1 << 20;

/// The rest of `file`, read piece by piece on the blocking pool as the stream is polled.
fn read_in_pieces(file: impl Read + Send + 'static, key: String) -> ByteStream {
    futures::stream::try_unfold(Some(file), move |file| {
        let key = key.clone();
        async move {
            let Some(mut file) = file else {
                return Ok(None);
            };
            let read = tokio::task::spawn_blocking(move || {
                let mut piece = Vec::with_capacity(PIECE as usize);
                (&mut file).take(PIECE).read_to_end(&mut piece)?;
                Ok::<_, io::Error>((file, piece))
            })
            .await
            .map_err(|join| StoreError::unavailable("get", &key, join))?;
            let (file, piece) = read.map_err(|err| StoreError::unavailable("get", &key, err))?;
            Ok((!piece.is_empty()).then(|| (Bytes::from(piece), Some(file))))
        }
    })
    .boxed()
}

/// Whether `lock` is still the lock file of its object: a delete unlinks the file while
/// holding it, and whoever was waiting for it then holds a lock nobody else can see.
/// Lock files are only ever created and unlinked, never renamed, so a linked one is the
/// one at the object's path.
fn still_linked(lock: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(lock.metadata()?.nlink() > 0)
}

/// Removes the folders above `path` that are left empty, up to the root (kept): folders
/// are not objects, and a bucket holds none that are empty. A folder that is not empty,
/// or no longer there, stops the climb; a writer that finds its folder gone creates it
/// again (`ObjectFiles::lock_exclusive`).
fn remove_empty_folders(root: &Path, path: &Path) -> io::Result<()> {
    let mut folder = path.parent();
    while let Some(dir) = folder.filter(|dir| dir.starts_with(root) && *dir != root) {
        match fs::remove_dir(dir) {
            Ok(()) => folder = dir.parent(),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotFound
                ) =>
            {
                return Ok(());
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

fn to_io(err: crate::error::Error) -> io::Error {
    io::Error::other(err.to_string())
}

#[async_trait]
impl Store for LocalStore {
    async fn get(&self, key: &str, if_none_match: Option<&ETag>) -> Result<Fetched, StoreError> {
        if self.unchanged(key, if_none_match)? {
            return Ok(Fetched::NotModified);
        }
        let if_none_match = if_none_match.cloned();
        self.blocking(key, "get", move |files| {
            Ok(match files.open_current(if_none_match.as_ref())? {
                Fetched::Found { info, mut body } => {
                    let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
                    body.read_to_end(&mut bytes)?;
                    Fetched::Found {
                        info,
                        body: Bytes::from(bytes),
                    }
                }
                Fetched::NotFound => Fetched::NotFound,
                Fetched::NotModified => Fetched::NotModified,
            })
        })
        .await
    }

    async fn get_stream(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        self.get_range(key, if_none_match, None, 0..u64::MAX).await
    }

    async fn get_range(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        if_match: Option<&ETag>,
        range: Range<u64>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        if self.unchanged(key, if_none_match)? {
            return Ok(Fetched::NotModified);
        }
        let (start, len) = (range.start, range.end.saturating_sub(range.start));
        let if_none_match = if_none_match.cloned();
        let opened = self
            .blocking(key, "get", move |files| {
                let opened = files.open_current(if_none_match.as_ref())?;
                if let Fetched::Found { body, .. } = &opened {
                    (&*body).seek(SeekFrom::Start(start))?;
                }
                Ok(opened)
            })
            .await?;
        Ok(match opened {
            Fetched::Found { info, .. } if if_match.is_some_and(|etag| *etag != info.etag) => {
                return Err(StoreError::PreconditionFailed {
                    key: key.to_owned(),
                });
            }
            Fetched::Found { info, body } => Fetched::Found {
                info,
                body: read_in_pieces(body.take(len), key.to_owned()),
            },
            Fetched::NotFound => Fetched::NotFound,
            Fetched::NotModified => Fetched::NotModified,
        })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.blocking(key, "head", |files| {
            let Some(_lock) = files.lock_shared()? else {
                return Ok(None);
            };
            Ok(files.read_meta()?.map(ObjectFiles::info))
        })
        .await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: RawMetadata,
        condition: PutCondition,
    ) -> Result<ETag, StoreError> {
        let owned_key = key.to_owned();
        self.blocking(key, "put", move |files| {
            let _lock = files.lock_exclusive()?;
            let current = files.read_meta()?.map(|meta| meta.etag);
            if let Err(refused) = check_condition(&owned_key, current.as_ref(), &condition) {
                return Ok(Err(refused));
            }
            let meta = MetaFile {
                etag: content_etag(&body),
                size: body.len() as u64,
                metadata,
            };
            fsutil::write_synced(&files.incoming, &body).map_err(to_io)?;
            let meta_json = serde_json::to_vec(&meta).map_err(io::Error::other)?;
            fsutil::replace_atomically(&files.meta, &meta_json).map_err(to_io)?;
            fs::rename(&files.incoming, &files.body)?;
            sync_dir(&files.body)?;
            Ok(Ok(meta.etag))
        })
        .await?
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let root = Arc::clone(&self.root);
        let owned_prefix = prefix.to_owned();
        let listed = tokio::task::spawn_blocking(move || list_metas(&root, &owned_prefix))
            .await
            .map_err(|join| StoreError::unavailable("list", prefix, join))?;
        listed.map_err(|err| StoreError::unavailable("list", prefix, err))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let root = Arc::clone(&self.root);
        self.blocking(key, "delete", move |files| {
            let lock = files.lock_exclusive()?;
            // The lock file last, while still held: until then it guards the others.
            for path in [&files.meta, &files.body, &files.lock] {
                match fs::remove_file(path) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                    _ => {}
                }
            }
            drop(lock);
            remove_empty_folders(&root, &files.body)
        })
        .await
    }
}

/// Walks the root for committed objects (those with a metadata file) under `prefix`.
fn list_metas(root: &Path, prefix: &str) -> io::Result<Vec<Listed>> {
    let mut found = Vec::new();
    // Keys are paths: only the folder the prefix names can hold its objects.
    let start = prefix
        .rsplit_once('/')
        .map_or(root.to_path_buf(), |(dir, _)| root.join(dir));
    let mut pending = vec![start];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
                continue;
            }
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            let Some(key) = relative.to_str().and_then(|k| k.strip_suffix(META_SUFFIX)) else {
                continue;
            };
            if key.starts_with(prefix) {
                // An object deleted since the folder was read is not listed, as if the
                // delete had come first.
                let (bytes, modified) = match fs::read(&path).and_then(|bytes| {
                    // The metadata file is renamed into place by the commit: its time is
                    // the object's.
                    Ok((bytes, entry.metadata()?.modified()?))
                }) {
                    Ok(read) => read,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                };
                let meta: MetaFile = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
                found.push(Listed {
                    key: key.to_owned(),
                    size: meta.size,
                    modified: modified.into(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder store in a fresh temporary folder, holding `u/db` = "one"; with its ETag.
    async fn holding_one() -> (tempfile::TempDir, LocalStore, ETag) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let etag = store
            .put(
                "u/db",
                Bytes::from_static(b"one"),
                RawMetadata::new(),
                PutCondition::Create,
            )
            .await
            .unwrap();
        (dir, store, etag)
    }

    /// A body of a few pieces streams back whole and in order, and keeps being the
    /// version it was when the read began even if a write replaces it meanwhile.
    #[tokio::test]
    async fn a_streamed_body_is_the_version_it_began_as() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let old: Vec<u8> = (0..(2 * PIECE + 1234) as usize)
            .map(|i| (i % 251) as u8)
            .collect();
        let etag = store
            .put(
                "u/db",
                Bytes::from(old.clone()),
                RawMetadata::new(),
                PutCondition::Create,
            )
            .await
            .unwrap();
        let Fetched::Found { info, mut body } = store.get_stream("u/db", None).await.unwrap()
        else {
            panic!("expected the object");
        };
        assert_eq!(info.etag, etag);
        let first = body.next().await.unwrap().unwrap();
        assert_eq!(first.len() as u64, PIECE);
        store
            .put(
                "u/db",
                Bytes::from_static(b"new"),
                RawMetadata::new(),
                PutCondition::Match(etag.clone()),
            )
            .await
            .unwrap();
        let mut read = first.to_vec();
        while let Some(piece) = body.next().await {
            read.extend_from_slice(&piece.unwrap());
        }
        assert!(read == old, "the old version, whole");
        let current = store.head("u/db").await.unwrap().unwrap().etag;
        assert!(matches!(
            store.get_stream("u/db", Some(&current)).await.unwrap(),
            Fetched::NotModified
        ));
        assert!(matches!(
            store.get_stream("u/nobody", None).await.unwrap(),
            Fetched::NotFound
        ));
    }

    /// Every request's version check: answered from the metadata file alone, so a write
    /// holding the object's lock does not hold up the readers whose copy is current.
    #[tokio::test]
    async fn not_modified_is_answered_while_a_write_holds_the_lock() {
        let (_dir, store, etag) = holding_one().await;
        let writer = store.files("u/db").unwrap().lock_exclusive().unwrap();
        let checks = async {
            let whole = store.get_stream("u/db", Some(&etag)).await.unwrap();
            let part = store
                .get_range("u/db", Some(&etag), None, 0..2)
                .await
                .unwrap();
            (whole, part)
        };
        let answers = tokio::time::timeout(std::time::Duration::from_secs(5), checks)
            .await
            .expect("the version check waited for the writer's lock");
        assert!(matches!(
            answers,
            (Fetched::NotModified, Fetched::NotModified)
        ));
        drop(writer);
    }

    #[tokio::test]
    async fn an_interrupted_write_is_rolled_forward_once_committed() {
        let (_dir, store, first) = holding_one().await;
        let files = store.files("u/db").unwrap();
        // Simulate a crash after the metadata rename and before the body rename.
        let meta = MetaFile {
            etag: content_etag(b"two"),
            size: 3,
            metadata: RawMetadata::new(),
        };
        fs::write(&files.incoming, b"two").unwrap();
        fs::write(&files.meta, serde_json::to_vec(&meta).unwrap()).unwrap();
        let Fetched::Found { info, body } = store.get("u/db", Some(&first)).await.unwrap() else {
            panic!("expected the committed second write");
        };
        assert_eq!((&body[..], info.etag), (&b"two"[..], content_etag(b"two")));
        assert!(!files.incoming.exists());
    }

    #[tokio::test]
    async fn an_uncommitted_incoming_body_is_discarded() {
        let (_dir, store, etag) = holding_one().await;
        let files = store.files("u/db").unwrap();
        fs::write(&files.incoming, b"half-written").unwrap();
        assert_eq!(store.head("u/db").await.unwrap().unwrap().etag, etag);
        assert!(matches!(
            store.get("u/db", Some(&etag)).await.unwrap(),
            Fetched::NotModified
        ));
        assert_eq!(fs::read(&files.body).unwrap(), b"one");
        assert!(!files.incoming.exists());
    }

    #[tokio::test]
    async fn reading_a_missing_object_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let etag = ETag("seen-before".into());
        assert!(matches!(
            store.get("u/db", Some(&etag)).await.unwrap(),
            Fetched::NotFound
        ));
        assert!(store.head("u/db").await.unwrap().is_none());
        assert!(
            !dir.path().join("u").exists(),
            "a read created the object's folder"
        );
    }

    /// Every file and folder under `root`, relative to it, sorted.
    fn tree(root: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                found.push(path.strip_prefix(root).unwrap().display().to_string());
                if path.is_dir() {
                    pending.push(path);
                }
            }
        }
        found.sort();
        found
    }

    /// Every start of `cellar serve` probes the store: on a folder it must leave the folder
    /// as it found it, empty or holding a user's database.
    #[tokio::test]
    async fn the_start_up_probe_leaves_the_folder_as_it_found_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let capabilities = crate::store::probe(&store, "cellar-users/.cellar-probe/n1")
            .await
            .unwrap();
        assert!(capabilities.all(), "{capabilities:?}");
        assert_eq!(tree(dir.path()), Vec::<String>::new());

        let user_key = "cellar-users/alice/database.sqlite";
        store
            .put(
                user_key,
                Bytes::from_static(b"db"),
                RawMetadata::new(),
                PutCondition::Create,
            )
            .await
            .unwrap();
        let before = tree(dir.path());
        crate::store::probe(&store, "cellar-users/.cellar-probe/n2")
            .await
            .unwrap();
        assert_eq!(tree(dir.path()), before);
        store.delete(user_key).await.unwrap();
        assert_eq!(tree(dir.path()), Vec::<String>::new());
    }

    /// A delete unlinks the lock file it holds. Whoever was waiting for that lock must not
    /// count as holding the object's lock then: a third party locks the new file at the
    /// same path, and the waiter waits for it.
    #[test]
    fn a_lock_on_a_deleted_lock_file_is_taken_again_on_the_new_one() {
        let (_dir, store, _) = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(holding_one());
        let files = Arc::new(store.files("u/db").unwrap());
        let deleting = files.lock_exclusive().unwrap();
        let (taken, waiter_took) = std::sync::mpsc::channel();
        let waiter = {
            let files = Arc::clone(&files);
            std::thread::spawn(move || {
                let lock = files.lock_exclusive().unwrap();
                taken.send(()).unwrap();
                drop(lock);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100)); // the waiter waits
        fs::remove_file(&files.lock).unwrap();
        let third = files.lock_exclusive().unwrap(); // the new lock file
        drop(deleting);
        let wait = std::time::Duration::from_millis(300);
        assert!(
            waiter_took.recv_timeout(wait).is_err(),
            "the waiter took the deleted lock while another process held the object's lock"
        );
        drop(third);
        waiter_took.recv_timeout(wait * 10).unwrap();
        waiter.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listing_while_objects_are_deleted_lists_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(dir.path()));
        for round in 0..5 {
            let keys: Vec<String> = (0..100).map(|i| format!("u/log/{round}-{i:03}")).collect();
            for key in &keys {
                let body = Bytes::from_static(b"change");
                store
                    .put(key, body, RawMetadata::new(), PutCondition::Create)
                    .await
                    .unwrap();
            }
            let deleter = {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for key in keys {
                        store.delete(&key).await.unwrap();
                    }
                })
            };
            while !deleter.is_finished() {
                let listed = store.list("u/log/").await.unwrap();
                assert!(listed.len() <= 100);
            }
            deleter.await.unwrap();
            assert_eq!(store.list("u/log/").await.unwrap(), Vec::new());
        }
    }

    #[tokio::test]
    async fn keys_that_escape_the_root_are_refused() {
        let store = LocalStore::new("/tmp/never-used");
        for key in ["../x", "/etc/passwd", "a/../../b", ""] {
            assert!(store.head(key).await.is_err(), "{key}");
        }
    }
}

//! The checkpoint store: checkpoints as objects under one URL, written
//! part by part and made complete by a manifest written last.
//!
//! ```text
//! URL/ckpt-00000000000000000007/part-0.bin    one part per writer (a worker)
//! URL/ckpt-00000000000000000007/part-1.bin
//! URL/ckpt-00000000000000000007/manifest.json written last: the checkpoint
//!                                             is complete once it exists
//! ```
//!
//! - URL: a directory path (relative to the job config) or `file://…`; an
//!   object-store URL (`s3://`, `gs://`, `az://`) when nudgeflow is built
//!   with the matching feature (`s3`, `gcs`, `azure`). Every object is
//!   written whole: a put on an object store, a write to a temporary file
//!   then a rename on a disk, so a reader never sees half an object.
//! - The manifest names the format version, the spec's fingerprint, the
//!   event time the checkpoint holds state as of, and each part's size and
//!   xxh3-64 checksum. A part torn or changed after it was written fails
//!   its checksum and the checkpoint is not loaded; [`Store::latest`] then
//!   falls back to the one before and says why.
//! - Ids grow by one per checkpoint; their zero-padded names order as the
//!   ids do. [`Store::prune`] keeps the newest few complete checkpoints and
//!   deletes the rest, incomplete ones older than those included.

use std::path::Path as FsPath;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};

use crate::time::Time;

/// The version of the checkpoint format this build writes and reads.
/// Format 2: users' fallback attempts, inboxes and activity, and receipts
/// among the records already read. Format 3: users' active days, churn
/// risk and attempts tracked for the delivery counts.
pub const FORMAT: u32 = 3;

/// A complete checkpoint in another format: the job stops rather than pass
/// it over, which would start afresh and lose its state.
#[derive(Debug)]
pub struct OtherFormat(pub String);

impl std::fmt::Display for OtherFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OtherFormat {}

const MANIFEST: &str = "manifest.json";

/// What a complete checkpoint holds; written last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`] of the build that wrote it.
    pub format: u32,
    pub id: u64,
    /// The event time the state is as of: everything before it is decided.
    pub time: Time,
    /// The fingerprint of the spec the job ran with.
    pub spec: String,
    /// Workers of all processes of the job that wrote it.
    pub workers: usize,
    /// The spec's rules in order (candidates name rules by index) and how
    /// far back its windows reach: what a restart with another spec is
    /// checked against (`checkpoint::compat`).
    pub rules: Vec<RuleSummary>,
    /// The longest cap window, ms.
    pub longest_window: Time,
    /// How long event keys are remembered, ms.
    pub dedup_horizon: Time,
    /// Where each input partition's reading stood at `time`.
    pub positions: Vec<crate::checkpoint::positions::PartitionPosition>,
    pub parts: Vec<Part>,
}

/// A rule as a checkpoint remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSummary {
    pub name: String,
    /// Its dedup window, ms, if it has one.
    pub dedup_window: Option<Time>,
}

/// One part of a checkpoint, as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub name: String,
    pub bytes: u64,
    /// xxh3-64 of the part's bytes, in hex.
    pub xxh3: String,
}

/// A complete checkpoint read back, its parts checked.
#[derive(Debug)]
pub struct Loaded {
    pub manifest: Manifest,
    /// The parts' bytes, in the manifest's order.
    pub parts: Vec<Bytes>,
}

/// What [`Store::latest`] found: the newest checkpoint that loads, and the
/// newer ones it passed over, each with why.
#[derive(Debug, Default)]
pub struct Recovery {
    pub loaded: Option<Loaded>,
    pub skipped: Vec<(u64, String)>,
}

/// A checkpoint store behind a URL. Its methods block: they run the
/// object store's futures on a runtime of their own.
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    root: Path,
    runtime: tokio::runtime::Runtime,
    /// The URL as configured, for messages.
    url: String,
}

fn checkpoint_dir(id: u64) -> String {
    format!("ckpt-{id:020}")
}

fn checksum(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

impl Store {
    /// Opens the store at `url`: a URL with a scheme, or a directory path,
    /// relative to `base` (the job config's directory), created if missing.
    pub fn open(url: &str, base: &FsPath) -> anyhow::Result<Store> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the checkpoint store's runtime")?;
        let (objects, root): (Arc<dyn ObjectStore>, Path) = if url.contains("://") {
            let parsed = url::Url::parse(url)
                .with_context(|| format!("checkpoint url {url:?} is not a URL"))?;
            if parsed.scheme() == "file" {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| anyhow::anyhow!("checkpoint url {url:?}: not a local path"))?;
                local(&dir)?
            } else {
                let (store, root) = object_store::parse_url(&parsed).with_context(|| {
                    format!(
                        "checkpoint url {url:?}: this build of nudgeflow cannot open it \
                         (object stores need the cargo feature s3, gcs or azure)"
                    )
                })?;
                (Arc::from(store), root)
            }
        } else {
            local(&base.join(url))?
        };
        Ok(Store {
            objects,
            root,
            runtime,
            url: url.to_string(),
        })
    }

    /// The URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, id: u64, name: &str) -> Path {
        self.root.clone().join(checkpoint_dir(id)).join(name)
    }

    /// Writes one part of checkpoint `id`; returns what the manifest
    /// records of it.
    pub fn put_part(&self, id: u64, name: &str, bytes: Bytes) -> anyhow::Result<Part> {
        let part = Part {
            name: name.to_string(),
            bytes: bytes.len() as u64,
            xxh3: checksum(&bytes),
        };
        let path = self.path(id, name);
        self.runtime
            .block_on(self.objects.put(&path, PutPayload::from(bytes)))
            .with_context(|| format!("cannot write checkpoint part {path} to {}", self.url))?;
        Ok(part)
    }

    /// Makes checkpoint `manifest.id` complete: every part it names must
    /// have been written.
    pub fn complete(&self, manifest: &Manifest) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
        let path = self.path(manifest.id, MANIFEST);
        self.runtime
            .block_on(self.objects.put(&path, PutPayload::from(json)))
            .with_context(|| format!("cannot write checkpoint manifest {path} to {}", self.url))?;
        Ok(())
    }

    /// The ids of the checkpoints in the store, complete or not, ascending.
    pub fn ids(&self) -> anyhow::Result<Vec<u64>> {
        let listing = self
            .runtime
            .block_on(self.objects.list_with_delimiter(Some(&self.root)))
            .with_context(|| format!("cannot list the checkpoints in {}", self.url))?;
        let mut ids: Vec<u64> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.strip_prefix("ckpt-")?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Reads checkpoint `id` and checks every part against the manifest.
    pub fn load(&self, id: u64) -> anyhow::Result<Loaded> {
        let manifest = self
            .read(&self.path(id, MANIFEST))
            .with_context(|| format!("checkpoint {id} has no manifest (it was not completed)"))?;
        let manifest: Manifest = serde_json::from_slice(&manifest)
            .with_context(|| format!("checkpoint {id}: the manifest is not valid"))?;
        if manifest.format != FORMAT {
            return Err(OtherFormat(format!(
                "checkpoint {id} is in format {}, this build reads format {FORMAT}: \
                 start it with the nudgeflow version that wrote it, or start afresh \
                 with an empty checkpoint url",
                manifest.format
            ))
            .into());
        }
        if manifest.id != id {
            bail!(
                "checkpoint {id}: its manifest names checkpoint {}",
                manifest.id
            );
        }
        let mut parts = Vec::with_capacity(manifest.parts.len());
        for part in &manifest.parts {
            let bytes = self.read(&self.path(id, &part.name))?;
            if bytes.len() as u64 != part.bytes || checksum(&bytes) != part.xxh3 {
                bail!(
                    "checkpoint {id}: part {} is corrupt ({} bytes, checksum {}; the manifest says {} bytes, checksum {})",
                    part.name,
                    bytes.len(),
                    checksum(&bytes),
                    part.bytes,
                    part.xxh3
                );
            }
            parts.push(bytes);
        }
        Ok(Loaded { manifest, parts })
    }

    fn read(&self, path: &Path) -> anyhow::Result<Bytes> {
        self.runtime
            .block_on(async { self.objects.get(path).await?.bytes().await })
            .with_context(|| format!("cannot read {path} from {}", self.url))
    }

    /// The newest checkpoint that is complete and intact, and the newer
    /// ones passed over with the reason.
    pub fn latest(&self) -> anyhow::Result<Recovery> {
        let mut recovery = Recovery::default();
        for id in self.ids()?.into_iter().rev() {
            match self.load(id) {
                Ok(loaded) => {
                    recovery.loaded = Some(loaded);
                    break;
                }
                Err(e) if e.downcast_ref::<OtherFormat>().is_some() => return Err(e),
                Err(e) => recovery.skipped.push((id, format!("{e:#}"))),
            }
        }
        Ok(recovery)
    }

    /// Keeps the newest `keep` complete checkpoints (and any incomplete one
    /// newer than them, which may be being written) and deletes the rest.
    /// Returns the number of checkpoints deleted.
    pub fn prune(&self, keep: usize) -> anyhow::Result<usize> {
        let ids = self.ids()?;
        let mut complete = 0;
        let mut cut = None;
        for &id in ids.iter().rev() {
            if self
                .runtime
                .block_on(self.objects.head(&self.path(id, MANIFEST)))
                .is_ok()
            {
                complete += 1;
                if complete == keep {
                    cut = Some(id);
                    break;
                }
            }
        }
        let Some(cut) = cut else {
            return Ok(0);
        };
        let mut deleted = 0;
        for &id in ids.iter().filter(|&&id| id < cut) {
            let prefix = self.root.clone().join(checkpoint_dir(id));
            let objects: Vec<_> = self
                .runtime
                .block_on(self.objects.list(Some(&prefix)).try_collect::<Vec<_>>())
                .with_context(|| format!("cannot list checkpoint {id} in {}", self.url))?;
            // The manifest first, so that a checkpoint half deleted is
            // incomplete, never complete with parts missing.
            let mut paths: Vec<Path> = objects.into_iter().map(|o| o.location).collect();
            paths.sort_by_key(|p| p.filename() != Some(MANIFEST));
            for path in paths {
                self.runtime
                    .block_on(self.objects.delete(&path))
                    .with_context(|| format!("cannot delete {path} from {}", self.url))?;
            }
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// A local directory as an object store, created if missing.
fn local(dir: &FsPath) -> anyhow::Result<(Arc<dyn ObjectStore>, Path)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the checkpoint directory {}", dir.display()))?;
    // Deleting a checkpoint's last object removes its directory too.
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .with_context(|| format!("cannot open the checkpoint directory {}", dir.display()))?
        .with_automatic_cleanup(true);
    Ok((Arc::new(store), Path::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: u64, parts: Vec<Part>) -> Manifest {
        Manifest {
            format: FORMAT,
            id,
            time: 1_000 * id as Time,
            spec: "spec-fingerprint".into(),
            workers: parts.len(),
            rules: Vec::new(),
            longest_window: 0,
            dedup_horizon: 0,
            positions: Vec::new(),
            parts,
        }
    }

    /// Writes checkpoint `id` with two parts and, if `complete`, its manifest.
    fn write(store: &Store, id: u64, complete: bool) {
        let parts = (0..2)
            .map(|w| {
                let bytes = Bytes::from(format!("state of worker {w} at checkpoint {id}"));
                store.put_part(id, &format!("part-{w}.bin"), bytes).unwrap()
            })
            .collect();
        if complete {
            store.complete(&manifest(id, parts)).unwrap();
        }
    }

    #[test]
    fn the_newest_complete_checkpoint_loads_with_its_parts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("state", dir.path()).unwrap();
        assert!(store.latest().unwrap().loaded.is_none());
        write(&store, 1, true);
        write(&store, 2, true);
        write(&store, 3, false);
        let recovery = store.latest().unwrap();
        let loaded = recovery.loaded.unwrap();
        assert_eq!(loaded.manifest.id, 2);
        assert_eq!(loaded.manifest.time, 2_000);
        assert_eq!(&loaded.parts[1][..], b"state of worker 1 at checkpoint 2");
        assert_eq!(recovery.skipped.len(), 1);
        assert_eq!(recovery.skipped[0].0, 3);
        assert!(
            recovery.skipped[0].1.contains("no manifest"),
            "{:?}",
            recovery.skipped
        );
        // The relative path is under the base directory.
        assert!(
            dir.path()
                .join("state/ckpt-00000000000000000002/manifest.json")
                .exists()
        );
    }

    #[test]
    fn a_corrupt_part_is_never_loaded_and_the_previous_checkpoint_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("s").display());
        let store = Store::open(&url, FsPath::new("/nowhere")).unwrap();
        write(&store, 7, true);
        write(&store, 8, true);
        let part = dir.path().join("s/ckpt-00000000000000000008/part-1.bin");
        let mut bytes = std::fs::read(&part).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&part, &bytes).unwrap();
        let recovery = store.latest().unwrap();
        assert_eq!(recovery.loaded.unwrap().manifest.id, 7);
        let (id, why) = &recovery.skipped[0];
        assert_eq!(*id, 8);
        assert!(why.contains("part part-1.bin is corrupt"), "{why}");
        // A torn part (cut short) too.
        std::fs::write(&part, &bytes[..5]).unwrap();
        assert!(store.load(8).unwrap_err().to_string().contains("corrupt"));
    }

    #[test]
    fn another_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("s", dir.path()).unwrap();
        let part = store
            .put_part(1, "part-0.bin", Bytes::from_static(b"x"))
            .unwrap();
        let mut m = manifest(1, vec![part]);
        m.format = FORMAT + 1;
        store.complete(&m).unwrap();
        let e = format!("{:#}", store.load(1).unwrap_err());
        let (other, this) = (FORMAT + 1, FORMAT);
        assert!(
            e.contains(&format!("format {other}, this build reads format {this}")),
            "{e}"
        );
        // Not passed over: that would start afresh and lose the state.
        let Err(e) = store.latest() else {
            panic!("a checkpoint in another format was passed over")
        };
        let e = format!("{e:#}");
        assert!(e.contains("start it with the nudgeflow version"), "{e}");
    }

    #[test]
    fn prune_keeps_the_newest_complete_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("s", dir.path()).unwrap();
        for id in 1..=5 {
            write(&store, id, id != 2);
        }
        write(&store, 6, false);
        assert_eq!(store.prune(2).unwrap(), 3);
        assert_eq!(store.ids().unwrap(), vec![4, 5, 6]);
        assert_eq!(store.latest().unwrap().loaded.unwrap().manifest.id, 5);
        assert_eq!(store.prune(2).unwrap(), 0);
        assert!(!dir.path().join("s/ckpt-00000000000000000001").exists());
    }

    #[test]
    fn an_object_store_url_without_its_feature_is_a_clear_error() {
        let e = Store::open("s3://bucket/prefix", FsPath::new("."))
            .err()
            .unwrap();
        let e = format!("{e:#}");
        if !cfg!(feature = "s3") {
            assert!(e.contains("cargo feature s3"), "{e}");
        }
    }
}

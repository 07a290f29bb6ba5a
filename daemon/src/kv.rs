//! The ordered key-value trees every module of the daemon keeps its data
//! in, on one of two backends:
//!
//! * **sled** (the default): an embedded database in `data_dir/db`, for a
//!   gateway on one box. [`Tree`] is a thin wrapper over `sled::Tree`.
//! * **PostgreSQL** (`[store] postgres_url`): for a centre where several
//!   daemon instances share one database. Every tree is a range of one table,
//!   `kv (tree, k, v)`, ordered by `(tree, k)` exactly as sled orders keys
//!   (`bytea` compares bytewise, then by length). See daemon/DESIGN.md,
//!   "Storage on PostgreSQL".
//!
//! The interface is sled's, so modules stay backend-neutral: `get`,
//! `insert`, `remove`, ranges and prefix scans in both directions,
//! `compare_and_swap` (atomic across instances on PostgreSQL, which is what
//! makes "insert if new" safe when two instances race), batches, and
//! database-wide unique ids ([`Db::generate_id`], a sequence on PostgreSQL).
//!
//! Durability: sled writes become durable at [`Db::flush`]; on PostgreSQL
//! every call is its own committed transaction (a batch, and
//! [`Db::apply_batches`] across trees, one transaction), so `flush` has
//! nothing left to do.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

pub use sled::IVec;

mod pg;

pub use pg::{PgDb, display_url as pg_display_url, listen as pg_listen};

/// A storage error, naming the backend's own message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled reported an error.
    #[error(transparent)]
    Sled(#[from] sled::Error),
    /// PostgreSQL reported an error (or the connection failed).
    #[error("PostgreSQL: {0}")]
    Pg(String),
}

/// The result of storage calls.
pub type Result<T> = std::result::Result<T, Error>;

/// A failed [`Tree::compare_and_swap`]: the value found instead.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareAndSwapError {
    /// The value the key holds now.
    pub current: Option<IVec>,
}

/// A database: sled's, or a PostgreSQL database shared by several daemons.
#[derive(Clone)]
pub enum Db {
    /// An embedded sled database.
    Sled(sled::Db),
    /// A PostgreSQL database.
    Pg(Arc<PgDb>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Db::Sled(_) => f.write_str("Db::Sled"),
            Db::Pg(p) => write!(f, "Db::Pg({})", p.display()),
        }
    }
}

impl From<sled::Db> for Db {
    fn from(db: sled::Db) -> Self {
        Db::Sled(db)
    }
}

impl Db {
    /// Opens (or creates) a tree.
    pub fn open_tree(&self, name: impl AsRef<[u8]>) -> Result<Tree> {
        match self {
            Db::Sled(db) => Ok(Tree::Sled(db.open_tree(name)?)),
            Db::Pg(db) => Ok(Tree::Pg(pg::PgTree::new(
                db.clone(),
                String::from_utf8_lossy(name.as_ref()).into_owned(),
            ))),
        }
    }

    /// A database-wide unique, increasing id.
    pub fn generate_id(&self) -> Result<u64> {
        match self {
            Db::Sled(db) => Ok(db.generate_id()?),
            Db::Pg(db) => db.generate_id(),
        }
    }

    /// Makes every write so far durable (a no-op on PostgreSQL, where each
    /// write was committed).
    pub fn flush(&self) -> Result<()> {
        match self {
            Db::Sled(db) => db.flush().map(drop).map_err(Error::from),
            Db::Pg(_) => Ok(()),
        }
    }

    /// [`Db::flush`] without blocking the runtime.
    pub async fn flush_async(&self) -> Result<()> {
        match self {
            Db::Sled(db) => db.flush_async().await.map(drop).map_err(Error::from),
            Db::Pg(_) => Ok(()),
        }
    }

    /// Names of the trees that exist.
    pub fn tree_names(&self) -> Result<Vec<IVec>> {
        match self {
            Db::Sled(db) => Ok(db.tree_names()),
            Db::Pg(db) => db.tree_names(),
        }
    }

    /// Removes a tree and everything in it.
    pub fn drop_tree(&self, name: impl AsRef<[u8]>) -> Result<bool> {
        match self {
            Db::Sled(db) => Ok(db.drop_tree(name)?),
            Db::Pg(db) => db.drop_tree(&String::from_utf8_lossy(name.as_ref())),
        }
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        match self {
            Db::Sled(db) => Ok(db.size_on_disk()?),
            Db::Pg(db) => db.size_on_disk(),
        }
    }

    /// Applies batches to several trees: in order (sled recovers a prefix of
    /// its log, so a later tree's batch is durable only with the earlier
    /// ones), or as one transaction on PostgreSQL.
    pub fn apply_batches(&self, batches: Vec<(&Tree, Batch)>) -> Result<()> {
        self.apply_batches_notify(batches, Vec::new())
    }

    /// [`Db::apply_batches`], and on PostgreSQL a notification on the
    /// `coldchain_frames` channel for each of `notes`, delivered to every
    /// listening daemon when the transaction commits (see
    /// [`PgDb::listen`]). Nothing is sent on sled (one daemon).
    pub fn apply_batches_notify(
        &self,
        batches: Vec<(&Tree, Batch)>,
        notes: Vec<String>,
    ) -> Result<()> {
        match self {
            Db::Sled(_) => {
                for (t, b) in batches {
                    t.apply_batch(b)?;
                }
                Ok(())
            }
            Db::Pg(db) => db.apply(
                batches
                    .into_iter()
                    .filter(|(_, b)| !b.ops.is_empty())
                    .map(|(t, b)| (t.name().to_string(), b))
                    .collect(),
                notes,
            ),
        }
    }

    /// The sled database, for what only sled has (export of its raw
    /// contents, compaction).
    pub fn as_sled(&self) -> Option<&sled::Db> {
        match self {
            Db::Sled(db) => Some(db),
            Db::Pg(_) => None,
        }
    }
}

/// Writes applied together: the last operation on a key wins.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<(IVec, Option<IVec>)>,
}

impl Batch {
    /// Sets a key.
    pub fn insert(&mut self, k: impl Into<IVec>, v: impl Into<IVec>) {
        self.ops.push((k.into(), Some(v.into())));
    }

    /// Removes a key.
    pub fn remove(&mut self, k: impl Into<IVec>) {
        self.ops.push((k.into(), None));
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// No operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn into_sled(self) -> sled::Batch {
        let mut b = sled::Batch::default();
        for (k, v) in self.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        b
    }
}

/// One ordered tree of keys and values.
#[derive(Clone)]
pub enum Tree {
    /// A sled tree.
    Sled(sled::Tree),
    /// A tree in the PostgreSQL `kv` table.
    Pg(pg::PgTree),
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tree({})", self.name())
    }
}

fn bound_vec<K: AsRef<[u8]>>(b: Bound<&K>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Tree {
    /// The tree's name.
    pub fn name(&self) -> String {
        match self {
            Tree::Sled(t) => String::from_utf8_lossy(&t.name()).into_owned(),
            Tree::Pg(t) => t.name().to_string(),
        }
    }

    /// The value of a key.
    pub fn get(&self, k: impl AsRef<[u8]>) -> Result<Option<IVec>> {
        match self {
            Tree::Sled(t) => Ok(t.get(k)?),
            Tree::Pg(t) => t.get(k.as_ref()),
        }
    }

    /// Whether a key is set.
    pub fn contains_key(&self, k: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.get(k)?.is_some())
    }

    /// Sets a key; returns the value it had.
    pub fn insert(&self, k: impl AsRef<[u8]>, v: impl Into<IVec>) -> Result<Option<IVec>> {
        match self {
            Tree::Sled(t) => Ok(t.insert(k, v)?),
            Tree::Pg(t) => t.insert(k.as_ref(), &v.into()),
        }
    }

    /// Removes a key; returns the value it had.
    pub fn remove(&self, k: impl AsRef<[u8]>) -> Result<Option<IVec>> {
        match self {
            Tree::Sled(t) => Ok(t.remove(k)?),
            Tree::Pg(t) => t.remove(k.as_ref()),
        }
    }

    /// Sets `k` to `new` only if it holds `old` (`None`: absent), atomically
    /// (across daemon instances on PostgreSQL).
    pub fn compare_and_swap<K, OV, NV>(
        &self,
        k: K,
        old: Option<OV>,
        new: Option<NV>,
    ) -> Result<std::result::Result<(), CompareAndSwapError>>
    where
        K: AsRef<[u8]>,
        OV: AsRef<[u8]>,
        NV: Into<IVec>,
    {
        match self {
            Tree::Sled(t) => Ok(t
                .compare_and_swap(k, old, new)?
                .map_err(|e| CompareAndSwapError { current: e.current })),
            Tree::Pg(t) => t.compare_and_swap(
                k.as_ref(),
                old.as_ref().map(|v| v.as_ref()),
                new.map(Into::into).as_deref(),
            ),
        }
    }

    /// Applies a batch atomically.
    pub fn apply_batch(&self, b: Batch) -> Result<()> {
        match self {
            Tree::Sled(t) => Ok(t.apply_batch(b.into_sled())?),
            Tree::Pg(t) => t.db().apply(vec![(t.name().to_string(), b)], Vec::new()),
        }
    }

    /// Every key in order.
    pub fn iter(&self) -> Iter {
        match self {
            Tree::Sled(t) => Iter::Sled(t.iter()),
            Tree::Pg(t) => Iter::Pg(t.range(Bound::Unbounded, Bound::Unbounded)),
        }
    }

    /// The keys in a range, in order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, r: R) -> Iter {
        match self {
            Tree::Sled(t) => Iter::Sled(t.range(r)),
            Tree::Pg(t) => Iter::Pg(t.range(bound_vec(r.start_bound()), bound_vec(r.end_bound()))),
        }
    }

    /// The keys starting with `prefix`, in order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        match self {
            Tree::Sled(t) => Iter::Sled(t.scan_prefix(prefix)),
            Tree::Pg(t) => {
                let p = prefix.as_ref().to_vec();
                let end = prefix_end(&p).map_or(Bound::Unbounded, Bound::Excluded);
                Iter::Pg(t.range(Bound::Included(p), end))
            }
        }
    }

    /// The first key and value.
    pub fn first(&self) -> Result<Option<(IVec, IVec)>> {
        self.iter().next().transpose()
    }

    /// The last key and value.
    pub fn last(&self) -> Result<Option<(IVec, IVec)>> {
        self.iter().next_back().transpose()
    }

    /// Number of keys (a full count: not for hot paths). An error on
    /// PostgreSQL is an error, never a count of zero.
    pub fn len(&self) -> Result<usize> {
        match self {
            Tree::Sled(t) => Ok(t.len()),
            Tree::Pg(t) => t.len(),
        }
    }

    /// No keys.
    pub fn is_empty(&self) -> bool {
        match self {
            Tree::Sled(t) => t.is_empty(),
            Tree::Pg(_) => matches!(self.first(), Ok(None)),
        }
    }

    /// Removes every key.
    pub fn clear(&self) -> Result<()> {
        match self {
            Tree::Sled(t) => Ok(t.clear()?),
            Tree::Pg(t) => t.clear(),
        }
    }

    /// Makes this tree's writes durable (the whole database's, in fact).
    pub fn flush(&self) -> Result<()> {
        match self {
            Tree::Sled(t) => t.flush().map(drop).map_err(Error::from),
            Tree::Pg(_) => Ok(()),
        }
    }
}

/// Keys and values in order, from either end.
pub enum Iter {
    /// sled's iterator.
    Sled(sled::Iter),
    /// Pages read from PostgreSQL as they are needed.
    Pg(pg::PgIter),
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Iter::Sled(_) => f.write_str("Iter::Sled"),
            Iter::Pg(i) => i.fmt(f),
        }
    }
}

impl Iterator for Iter {
    type Item = Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(i) => i.next().map(|r| r.map_err(Error::from)),
            Iter::Pg(i) => i.next(),
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(i) => i.next_back().map(|r| r.map_err(Error::from)),
            Iter::Pg(i) => i.next_back(),
        }
    }
}

impl Iter {
    /// Only the keys.
    pub fn keys(self) -> impl DoubleEndedIterator<Item = Result<IVec>> {
        self.map(|r| r.map(|(k, _)| k))
    }

    /// Only the values.
    pub fn values(self) -> impl DoubleEndedIterator<Item = Result<IVec>> {
        self.map(|r| r.map(|(_, v)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_every_prefixed_one() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}

//! The PostgreSQL backend of [`super::Tree`]: one table `kv (tree, k, v)`.
//!
//! The daemon's modules call storage synchronously (as sled is called), from
//! tokio tasks and from blocking threads alike. The client is asynchronous
//! (tokio-postgres, pooled by deadpool-postgres), so this backend runs its
//! connections on a small runtime of its own and a call waits for its query's
//! answer on a channel: it blocks the calling thread for one round trip, as a
//! sled call blocks on its own I/O, and never enters the caller's runtime
//! (so it works from async and blocking contexts alike).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::ops::Bound;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::{Batch, CompareAndSwapError, Error, IVec, Result};

/// Rows read per round trip when iterating.
const PAGE: i64 = 512;

/// The schema migrations, in order: `(version, name, SQL)`. Applied at
/// open, each in its own transaction, under an advisory lock so instances
/// starting together apply each one once.
const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "kv", include_str!("../../migrations/0001_kv.sql"))];

/// The advisory lock key held while migrating ("coldchai" in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_6c64_6368_6169;

/// What PostgreSQL said: severity, SQLSTATE, message and detail for a
/// server error, else the client's own error.
fn pg_message(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {}: {}{}",
            db.severity(),
            db.code().code(),
            db.message(),
            db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

fn pg_err(e: tokio_postgres::Error) -> Error {
    Error::Pg(pg_message(e))
}

fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        e => Error::Pg(e.to_string()),
    }
}

/// A PostgreSQL database holding the daemon's trees.
pub struct PgDb {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    display: String,
}

impl std::fmt::Debug for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgDb({})", self.display)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which is refused inside an
        // async context; nothing of ours is left waiting on it.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// `url` without its password, for messages and logs.
pub fn display_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let hosts: Vec<String> = c
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect();
            format!(
                "postgres://{}@{}:{}/{}",
                c.get_user().unwrap_or(""),
                hosts.join(","),
                c.get_ports().first().copied().unwrap_or(5432),
                c.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "postgres://(unparsable url)".into(),
    }
}

impl PgDb {
    /// Connects to `url` (a libpq URL or key=value string), with up to
    /// `pool_size` connections, and brings the schema up to date.
    pub fn connect(url: &str, pool_size: usize) -> Result<Arc<PgDb>> {
        let display = display_url(url);
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Pg(format!("store.postgres_url: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("coldchain-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::Pg(format!("starting the PostgreSQL client runtime: {e}")))?;
        let mgr = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Pg(e.to_string()))?;
        let db = Arc::new(PgDb {
            rt: Some(rt),
            pool,
            display,
        });
        db.migrate()?;
        Ok(db)
    }

    /// The database's URL without its password.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Runs `f` with a pooled connection on the backend's runtime and waits
    /// for its result.
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let pool = self.pool.clone();
        let Some(rt) = &self.rt else {
            return Err(Error::Pg("the database was closed".into()));
        };
        rt.spawn(async move {
            let r = match pool.get().await {
                Ok(c) => f(c).await,
                Err(e) => Err(pool_err(e)),
            };
            let _ = tx.send(r);
        });
        rx.recv()
            .map_err(|_| Error::Pg("the PostgreSQL client stopped".into()))?
    }

    fn migrate(&self) -> Result<()> {
        self.run(|mut c| async move {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg_err)?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS coldchain_schema (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(pg_err)?;
            let have: Option<i32> = tx
                .query_one("SELECT max(version) FROM coldchain_schema", &[])
                .await
                .map_err(pg_err)?
                .get(0);
            let have = have.unwrap_or(0);
            for (version, name, sql) in MIGRATIONS {
                if *version <= have {
                    continue;
                }
                tx.batch_execute(sql).await.map_err(|e| {
                    Error::Pg(format!("migration {version} ({name}): {}", pg_message(e)))
                })?;
                tx.execute(
                    "INSERT INTO coldchain_schema (version, name) VALUES ($1, $2)",
                    &[version, name],
                )
                .await
                .map_err(pg_err)?;
                tracing::info!(version, name, "database schema migrated");
            }
            if let Some(newest) = MIGRATIONS.last().map(|m| m.0)
                && have > newest
            {
                return Err(Error::Pg(format!(
                    "the database's schema is version {have}, newer than this daemon's ({newest}): upgrade the daemon"
                )));
            }
            tx.commit().await.map_err(pg_err)
        })
    }

    pub(super) fn generate_id(&self) -> Result<u64> {
        self.run(|c| async move {
            let id: i64 = c
                .query_one("SELECT nextval('kv_ids')", &[])
                .await
                .map_err(pg_err)?
                .get(0);
            Ok(id as u64)
        })
    }

    pub(super) fn tree_names(&self) -> Result<Vec<IVec>> {
        self.run(|c| async move {
            let rows = c
                .query("SELECT DISTINCT tree FROM kv ORDER BY tree", &[])
                .await
                .map_err(pg_err)?;
            Ok(rows
                .iter()
                .map(|r| IVec::from(r.get::<_, String>(0).as_bytes()))
                .collect())
        })
    }

    pub(super) fn drop_tree(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(|c| async move {
            let n = c
                .execute("DELETE FROM kv WHERE tree = $1", &[&name])
                .await
                .map_err(pg_err)?;
            Ok(n > 0)
        })
    }

    pub(super) fn size_on_disk(&self) -> Result<u64> {
        self.run(|c| async move {
            let n: i64 = c
                .query_one("SELECT pg_total_relation_size('kv')", &[])
                .await
                .map_err(pg_err)?
                .get(0);
            Ok(n.max(0) as u64)
        })
    }

    /// Applies batches to several trees in one transaction, with `notes`
    /// sent on the `coldchain_frames` channel when (and only if) it commits.
    pub(super) fn apply(&self, batches: Vec<(String, Batch)>, notes: Vec<String>) -> Result<()> {
        if batches.is_empty() && notes.is_empty() {
            return Ok(());
        }
        self.run(|mut c| async move {
            let tx = c.transaction().await.map_err(pg_err)?;
            for (tree, b) in batches {
                // The last operation on a key wins (one row may be affected
                // once per statement).
                let mut last: BTreeMap<IVec, Option<IVec>> = BTreeMap::new();
                for (k, v) in b.ops {
                    last.insert(k, v);
                }
                let (mut ik, mut iv, mut rk) = (Vec::new(), Vec::new(), Vec::new());
                for (k, v) in &last {
                    match v {
                        Some(v) => {
                            ik.push(k.as_ref());
                            iv.push(v.as_ref());
                        }
                        None => rk.push(k.as_ref()),
                    }
                }
                if !rk.is_empty() {
                    tx.execute(
                        "DELETE FROM kv WHERE tree = $1 AND k = ANY($2)",
                        &[&tree, &rk],
                    )
                    .await
                    .map_err(pg_err)?;
                }
                if !ik.is_empty() {
                    tx.execute(
                        "INSERT INTO kv (tree, k, v) SELECT $1, k, v FROM unnest($2::bytea[], $3::bytea[]) AS t(k, v)
                         ON CONFLICT (tree, k) DO UPDATE SET v = EXCLUDED.v",
                        &[&tree, &ik, &iv],
                    )
                    .await
                    .map_err(pg_err)?;
                }
            }
            for n in &notes {
                tx.execute("SELECT pg_notify('coldchain_frames', $1)", &[n])
                    .await
                    .map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)
        })
    }
}

/// One tree: the rows of `kv` with `tree = name`.
#[derive(Debug, Clone)]
pub struct PgTree {
    db: Arc<PgDb>,
    name: Arc<str>,
}

impl PgTree {
    pub(super) fn new(db: Arc<PgDb>, name: String) -> Self {
        PgTree {
            db,
            name: name.into(),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn db(&self) -> &PgDb {
        &self.db
    }

    pub(super) fn get(&self, k: &[u8]) -> Result<Option<IVec>> {
        let (tree, k) = (self.name.clone(), k.to_vec());
        self.db.run(|c| async move {
            let row = c
                .query_opt(
                    "SELECT v FROM kv WHERE tree = $1 AND k = $2",
                    &[&&*tree, &k],
                )
                .await
                .map_err(pg_err)?;
            Ok(row.map(|r| IVec::from(r.get::<_, &[u8]>(0))))
        })
    }

    pub(super) fn insert(&self, k: &[u8], v: &[u8]) -> Result<Option<IVec>> {
        let (tree, k, v) = (self.name.clone(), k.to_vec(), v.to_vec());
        self.db.run(|c| async move {
            let row = c
                .query_one(
                    "WITH old AS (SELECT v FROM kv WHERE tree = $1 AND k = $2)
                     INSERT INTO kv (tree, k, v) VALUES ($1, $2, $3)
                     ON CONFLICT (tree, k) DO UPDATE SET v = EXCLUDED.v
                     RETURNING (SELECT v FROM old)",
                    &[&&*tree, &k, &v],
                )
                .await
                .map_err(pg_err)?;
            Ok(row.get::<_, Option<&[u8]>>(0).map(IVec::from))
        })
    }

    pub(super) fn remove(&self, k: &[u8]) -> Result<Option<IVec>> {
        let (tree, k) = (self.name.clone(), k.to_vec());
        self.db.run(|c| async move {
            let row = c
                .query_opt(
                    "DELETE FROM kv WHERE tree = $1 AND k = $2 RETURNING v",
                    &[&&*tree, &k],
                )
                .await
                .map_err(pg_err)?;
            Ok(row.map(|r| IVec::from(r.get::<_, &[u8]>(0))))
        })
    }

    pub(super) fn compare_and_swap(
        &self,
        k: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<std::result::Result<(), CompareAndSwapError>> {
        let key = k.to_vec();
        let (tree, k) = (self.name.clone(), k.to_vec());
        let (old, new) = (old.map(<[u8]>::to_vec), new.map(<[u8]>::to_vec));
        let swapped = self.db.run(|c| async move {
            let t: &str = &tree;
            let n = match (&old, &new) {
                (None, Some(n)) => c
                    .execute(
                        "INSERT INTO kv (tree, k, v) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[&t, &k, n],
                    )
                    .await
                    .map_err(pg_err)?,
                (Some(o), Some(n)) => c
                    .execute(
                        "UPDATE kv SET v = $4 WHERE tree = $1 AND k = $2 AND v = $3",
                        &[&t, &k, o, n],
                    )
                    .await
                    .map_err(pg_err)?,
                (Some(o), None) => c
                    .execute(
                        "DELETE FROM kv WHERE tree = $1 AND k = $2 AND v = $3",
                        &[&t, &k, o],
                    )
                    .await
                    .map_err(pg_err)?,
                (None, None) => {
                    let exists = c
                        .query_opt("SELECT 1 FROM kv WHERE tree = $1 AND k = $2", &[&t, &k])
                        .await
                        .map_err(pg_err)?
                        .is_some();
                    u64::from(!exists)
                }
            };
            Ok(n == 1)
        })?;
        if swapped {
            Ok(Ok(()))
        } else {
            Ok(Err(CompareAndSwapError {
                current: self.get(&key)?,
            }))
        }
    }

    pub(super) fn len(&self) -> Result<usize> {
        let tree = self.name.clone();
        self.db.run(|c| async move {
            let n: i64 = c
                .query_one("SELECT count(*) FROM kv WHERE tree = $1", &[&&*tree])
                .await
                .map_err(pg_err)?
                .get(0);
            Ok(n.max(0) as usize)
        })
    }

    pub(super) fn clear(&self) -> Result<()> {
        self.db.drop_tree(&self.name).map(drop)
    }

    pub(super) fn range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> PgIter {
        PgIter {
            tree: self.clone(),
            lo,
            hi,
            front: VecDeque::new(),
            back: VecDeque::new(),
            exhausted: false,
        }
    }

    /// One page of `[lo, hi)` in key order (`desc`: from the top).
    fn page(
        &self,
        lo: &Bound<Vec<u8>>,
        hi: &Bound<Vec<u8>>,
        desc: bool,
    ) -> Result<Vec<(IVec, IVec)>> {
        let mut sql = String::from("SELECT k, v FROM kv WHERE tree = $1");
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for (b, incl, excl) in [(lo, ">=", ">"), (hi, "<=", "<")] {
            let (op, k) = match b {
                Bound::Included(k) => (incl, k),
                Bound::Excluded(k) => (excl, k),
                Bound::Unbounded => continue,
            };
            keys.push(k.clone());
            sql.push_str(&format!(" AND k {op} ${}", keys.len() + 1));
        }
        sql.push_str(if desc {
            " ORDER BY k DESC LIMIT "
        } else {
            " ORDER BY k LIMIT "
        });
        sql.push_str(&PAGE.to_string());
        let tree = self.name.clone();
        self.db.run(move |c| async move {
            let t: &str = &tree;
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&t];
            for k in &keys {
                params.push(k);
            }
            let stmt = c.prepare_cached(&sql).await.map_err(pg_err)?;
            let rows = c.query(&stmt, &params).await.map_err(pg_err)?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        IVec::from(r.get::<_, &[u8]>(0)),
                        IVec::from(r.get::<_, &[u8]>(1)),
                    )
                })
                .collect())
        })
    }
}

/// A range of a tree read a page at a time from either end.
#[derive(Debug)]
pub struct PgIter {
    tree: PgTree,
    /// What is left unread: `[lo, hi)` with the bounds' own inclusivity.
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    /// Read from the front, ascending.
    front: VecDeque<(IVec, IVec)>,
    /// Read from the back, descending.
    back: VecDeque<(IVec, IVec)>,
    /// Everything in `[lo, hi)` has been read into the two buffers.
    exhausted: bool,
}

impl PgIter {
    fn fail(&mut self, e: Error) -> Option<Result<(IVec, IVec)>> {
        self.exhausted = true;
        self.front.clear();
        self.back.clear();
        Some(Err(e))
    }
}

impl Iterator for PgIter {
    type Item = Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(kv) = self.front.pop_front() {
            return Some(Ok(kv));
        }
        if self.exhausted {
            return self.back.pop_back().map(Ok);
        }
        match self.tree.page(&self.lo, &self.hi, false) {
            Ok(rows) => {
                if (rows.len() as i64) < PAGE {
                    self.exhausted = true;
                }
                if let Some((k, _)) = rows.last() {
                    self.lo = Bound::Excluded(k.to_vec());
                }
                self.front.extend(rows);
                self.front
                    .pop_front()
                    .or_else(|| self.back.pop_back())
                    .map(Ok)
            }
            Err(e) => self.fail(e),
        }
    }
}

impl DoubleEndedIterator for PgIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        if let Some(kv) = self.back.pop_front() {
            return Some(Ok(kv));
        }
        if self.exhausted {
            return self.front.pop_back().map(Ok);
        }
        match self.tree.page(&self.lo, &self.hi, true) {
            Ok(rows) => {
                if (rows.len() as i64) < PAGE {
                    self.exhausted = true;
                }
                if let Some((k, _)) = rows.last() {
                    self.hi = Bound::Excluded(k.to_vec());
                }
                self.back.extend(rows);
                self.back
                    .pop_front()
                    .or_else(|| self.front.pop_back())
                    .map(Ok)
            }
            Err(e) => self.fail(e),
        }
    }
}

/// Listens on a notification channel of the database at `url` for as long
/// as the task runs: `on_note` gets each payload; `on_connect` runs after
/// every (re)connection, since notifications sent while disconnected are
/// lost (the caller then reads the store again). Reconnects with a backoff
/// of up to 10 s.
pub async fn listen(
    url: String,
    channel: &'static str,
    mut on_connect: impl FnMut() + Send,
    mut on_note: impl FnMut(String) + Send,
) {
    let mut backoff = std::time::Duration::from_millis(250);
    loop {
        match tokio_postgres::connect(&url, NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!("PostgreSQL notification connection: {e}");
                                return;
                            }
                            None => return,
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {channel}")).await {
                    Ok(()) => {
                        backoff = std::time::Duration::from_millis(250);
                        on_connect();
                        while let Some(p) = rx.recv().await {
                            on_note(p);
                        }
                        tracing::warn!(
                            channel,
                            "lost the PostgreSQL notification connection: reconnecting"
                        );
                    }
                    Err(e) => tracing::warn!(channel, "LISTEN failed: {}", pg_message(e)),
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(
                channel,
                "cannot connect to PostgreSQL for notifications: {}",
                pg_message(e)
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
    }
}

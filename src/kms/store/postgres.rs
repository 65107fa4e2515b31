//! The PostgreSQL engine: N servers share one database. A write takes the store's one
//! row lock (`SELECT … FOR UPDATE` on `kmsfs_meta`), so writes of all servers are
//! serialised in commit order; reads run in REPEATABLE READ snapshots. The password comes
//! from a file (`KMSFS_STORE_PASSWORD_FILE`) or the systemd credential
//! `kmsfs-store-password`, never argv or the URL.

use std::path::PathBuf;

use ::postgres::{Config, IsolationLevel, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use super::{Decide, Engine, Result, Row, StoreError};

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// Schema migrations, in order; `kmsfs_schema.version` is how many have run.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE kmsfs_meta (id INTEGER PRIMARY KEY CHECK (id = 1), gen BIGINT NOT NULL);
    INSERT INTO kmsfs_meta (id, gen) VALUES (1, 0);
    CREATE TABLE kmsfs_rows (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        gen BIGINT NOT NULL,
        data BYTEA,
        PRIMARY KEY (kind, id)
    );
    CREATE INDEX kmsfs_rows_gen ON kmsfs_rows (gen);
    CREATE TABLE kmsfs_audit (seq BIGINT PRIMARY KEY, line TEXT NOT NULL);
    CREATE TABLE kmsfs_audit_checkpoints (n BIGINT PRIMARY KEY, line TEXT NOT NULL);
"];

pub(super) struct Postgres {
    shown: String,
    pool: Pool,
    /// The audit chain's own connections: a write holds a pool connection while it waits
    /// for the store's write lock, and the writer holding the lock must still reach the
    /// chain (sharing one pool, a burst of writes took every connection and stalled).
    audit_pool: Pool,
}

/// Where the store's password is: `KMSFS_STORE_PASSWORD_FILE`, else the systemd
/// credential `kmsfs-store-password`; none (trust or peer authentication) if neither.
fn password_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KMSFS_STORE_PASSWORD_FILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let d = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let p = PathBuf::from(d).join("kmsfs-store-password");
    p.exists().then_some(p)
}

impl Postgres {
    pub(super) fn open(url: &str, create: bool) -> crate::Result<Postgres> {
        let shown = super::redact(url);
        let mut cfg: Config = url
            .parse()
            .map_err(|e| crate::error::err!("store {shown}: {e}"))?;
        if let Some(f) = password_file() {
            let pw = zeroize::Zeroizing::new(std::fs::read_to_string(&f).map_err(|e| {
                crate::error::err!("cannot read the store password {}: {e}", f.display())
            })?);
            cfg.password(pw.trim_end_matches(['\n', '\r']));
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(std::time::Duration::from_secs(5));
        }
        cfg.application_name("kmsfs");
        let pool_of = |size: u32| {
            r2d2::Pool::builder()
                .max_size(size)
                .min_idle(Some(1))
                .connection_timeout(std::time::Duration::from_secs(10))
                .build(PostgresConnectionManager::new(cfg.clone(), NoTls))
                .map_err(|e| crate::error::err!("store {shown}: cannot connect: {e}"))
        };
        let (pool, audit_pool) = (pool_of(16)?, pool_of(2)?);
        let pg = Postgres {
            shown,
            pool,
            audit_pool,
        };
        pg.migrate(create)?;
        Ok(pg)
    }

    fn client(&self) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        self.pool
            .get()
            .map_err(|e| StoreError(format!("store {}: {e}", self.shown)))
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError(format!("store {}: {e}", self.shown))
    }

    fn migrate(&self, create: bool) -> crate::Result<()> {
        let mut c = self.client()?;
        let mut tx = c.transaction().map_err(|e| self.err(e))?;
        // Servers starting together: one migrates, the others wait and find it done.
        tx.execute("SELECT pg_advisory_xact_lock(7419203811)", &[])
            .map_err(|e| self.err(e))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS kmsfs_schema (version INTEGER NOT NULL)")
            .map_err(|e| self.err(e))?;
        let done: Option<i32> = tx
            .query_opt("SELECT version FROM kmsfs_schema", &[])
            .map_err(|e| self.err(e))?
            .map(|r| r.get(0));
        let done = match done {
            Some(v) => v as usize,
            None => {
                if !create {
                    crate::error::fail!(
                        "no kmsfs store in {} (`kmsfs init` makes one)",
                        self.shown
                    );
                }
                tx.execute("INSERT INTO kmsfs_schema (version) VALUES (0)", &[])
                    .map_err(|e| self.err(e))?;
                0
            }
        };
        if done > MIGRATIONS.len() {
            crate::error::fail!(
                "store {}: schema version {done} is newer than this kmsfs knows ({}); upgrade kmsfs",
                self.shown,
                MIGRATIONS.len()
            );
        }
        for m in &MIGRATIONS[done..] {
            tx.batch_execute(m).map_err(|e| self.err(e))?;
        }
        tx.execute(
            "UPDATE kmsfs_schema SET version = $1",
            &[&(MIGRATIONS.len() as i32)],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// The audit chain in the database: `kmsfs_audit (seq, line)` and
/// `kmsfs_audit_checkpoints (n, line)`. An append takes a transaction-scoped advisory
/// lock, reads the chain's tail and inserts after it, so sequence numbers and links
/// follow commit order whatever the number of servers.
struct PgAudit {
    shown: String,
    pool: Pool,
}

/// The advisory lock key of the audit chain.
const AUDIT_LOCK: i64 = 7419203812;

impl PgAudit {
    fn client(&self) -> std::io::Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        self.pool.get().map_err(std::io::Error::other)
    }
}

fn io(e: ::postgres::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl crate::kms::audit::AuditDb for PgAudit {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn append(&self, build: &mut crate::kms::audit::BuildBatch<'_>) -> std::io::Result<()> {
        let mut c = self.client()?;
        let mut tx = c.transaction().map_err(io)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
            .map_err(io)?;
        let last: Option<String> = tx
            .query_opt(
                "SELECT line FROM kmsfs_audit ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .map_err(io)?
            .map(|r| r.get(0));
        let (seq, hash) = match &last {
            Some(l) => crate::kms::audit::tail_of(l)?,
            None => (0, crate::kms::audit::GENESIS.to_string()),
        };
        let last_ck: Option<String> = tx
            .query_opt(
                "SELECT line FROM kmsfs_audit_checkpoints ORDER BY n DESC LIMIT 1",
                &[],
            )
            .map_err(io)?
            .map(|r| r.get(0));
        let (lines, ck) = build(seq, &hash, last_ck.as_deref())?;
        if !lines.is_empty() {
            let put = tx
                .prepare("INSERT INTO kmsfs_audit (seq, line) SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[])")
                .map_err(io)?;
            let seqs: Vec<i64> = lines.iter().map(|(s, _)| *s as i64).collect();
            let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
            tx.execute(&put, &[&seqs, &texts]).map_err(io)?;
        }
        if let Some(ck) = ck {
            tx.execute(
                "INSERT INTO kmsfs_audit_checkpoints (n, line)
                 SELECT COALESCE(MAX(n), 0) + 1, $1 FROM kmsfs_audit_checkpoints",
                &[&ck],
            )
            .map_err(io)?;
        }
        tx.commit().map_err(io)
    }

    fn records_after(&self, after: u64, limit: usize) -> std::io::Result<Vec<String>> {
        Ok(self
            .client()?
            .query(
                "SELECT line FROM kmsfs_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&(after as i64), &(limit as i64)],
            )
            .map_err(io)?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn last_record(&self) -> std::io::Result<Option<String>> {
        Ok(self
            .client()?
            .query_opt(
                "SELECT line FROM kmsfs_audit ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .map_err(io)?
            .map(|r| r.get(0)))
    }

    fn checkpoints(&self) -> std::io::Result<Vec<String>> {
        Ok(self
            .client()?
            .query("SELECT line FROM kmsfs_audit_checkpoints ORDER BY n", &[])
            .map_err(io)?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn last_checkpoint(&self) -> std::io::Result<Option<String>> {
        Ok(self
            .client()?
            .query_opt(
                "SELECT line FROM kmsfs_audit_checkpoints ORDER BY n DESC LIMIT 1",
                &[],
            )
            .map_err(io)?
            .map(|r| r.get(0)))
    }
}

fn rows_after(
    c: &mut impl ::postgres::GenericClient,
    gen: u64,
) -> std::result::Result<Vec<Row>, ::postgres::Error> {
    Ok(c.query(
        "SELECT kind, id, data FROM kmsfs_rows WHERE gen > $1",
        &[&(gen as i64)],
    )?
    .into_iter()
    .map(|r| Row {
        kind: r.get(0),
        id: r.get(1),
        data: r.get(2),
    })
    .collect())
}

impl Engine for Postgres {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn shared(&self) -> bool {
        true
    }

    fn audit_db(&self) -> Option<std::sync::Arc<dyn crate::kms::audit::AuditDb>> {
        Some(std::sync::Arc::new(PgAudit {
            shown: self.shown.clone(),
            pool: self.audit_pool.clone(),
        }))
    }

    fn generation(&self) -> Result<u64> {
        let mut c = self.client()?;
        let r = c
            .query_one("SELECT gen FROM kmsfs_meta WHERE id = 1", &[])
            .map_err(|e| self.err(e))?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    fn changes_since(&self, gen: u64) -> Result<(u64, Vec<Row>)> {
        let mut c = self.client()?;
        let mut tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(|e| self.err(e))?;
        let now: i64 = tx
            .query_one("SELECT gen FROM kmsfs_meta WHERE id = 1", &[])
            .map_err(|e| self.err(e))?
            .get(0);
        let rows = rows_after(&mut tx, gen).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok((now as u64, rows))
    }

    fn write(&self, base: u64, decide: &mut Decide<'_>) -> Result<Option<u64>> {
        let mut c = self.client()?;
        let mut tx = c.transaction().map_err(|e| self.err(e))?;
        let now: i64 = tx
            .query_one("SELECT gen FROM kmsfs_meta WHERE id = 1 FOR UPDATE", &[])
            .map_err(|e| self.err(e))?
            .get(0);
        let seen = rows_after(&mut tx, base).map_err(|e| self.err(e))?;
        let Some(writes) = decide(now as u64, seen) else {
            return Ok(None);
        };
        let next = now + 1;
        let put = tx
            .prepare(
                "INSERT INTO kmsfs_rows (kind, id, gen, data) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kind, id) DO UPDATE SET gen = excluded.gen, data = excluded.data",
            )
            .map_err(|e| self.err(e))?;
        for w in &writes {
            tx.execute(&put, &[&w.kind, &w.id, &next, &w.data])
                .map_err(|e| self.err(e))?;
        }
        tx.execute("UPDATE kmsfs_meta SET gen = $1 WHERE id = 1", &[&next])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(Some(next as u64))
    }
}

//! The SQLite engine: one database file (0600) in WAL mode, `synchronous=FULL` (a commit
//! is on disk when it returns). Processes sharing the file (a server, mounts, the CLI)
//! serialise their writes on SQLite's own lock (`BEGIN IMMEDIATE`); readers never block.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{Decide, Engine, Result, Row, StoreError};

/// Schema migrations, in order; `kmsfs_schema.version` is how many have run.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE kmsfs_meta (id INTEGER PRIMARY KEY CHECK (id = 1), gen INTEGER NOT NULL);
    INSERT INTO kmsfs_meta (id, gen) VALUES (1, 0);
    CREATE TABLE kmsfs_rows (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        gen INTEGER NOT NULL,
        data BLOB,
        PRIMARY KEY (kind, id)
    );
    CREATE INDEX kmsfs_rows_gen ON kmsfs_rows (gen);
"];

pub(super) struct Sqlite {
    path: PathBuf,
    /// Writes and reads on separate connections, so a reader never waits for a writer
    /// (WAL gives the reader the last committed state).
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

fn err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("store {}: {e}", path.display()))
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(std::time::Duration::from_secs(60))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    Ok(c)
}

impl Sqlite {
    pub(super) fn open(path: &Path, create: bool) -> crate::Result<Sqlite> {
        if !path.exists() {
            if !create {
                crate::error::fail!("no store at {}", path.display());
            }
            // Made 0600 before SQLite opens it: its -wal and -shm files take this mode.
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| crate::error::err!("cannot create store {}: {e}", path.display()))?;
        }
        crate::kms::local::check_private(path, "store")?;
        let writer = connect(path).map_err(|e| err(path, e))?;
        migrate(&writer).map_err(|e| err(path, e))?;
        let reader = connect(path).map_err(|e| err(path, e))?;
        Ok(Sqlite {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }
}

fn migrate(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| {
        c.execute_batch("CREATE TABLE IF NOT EXISTS kmsfs_schema (version INTEGER NOT NULL)")?;
        let done: Option<i64> = c
            .query_row("SELECT version FROM kmsfs_schema", [], |r| r.get(0))
            .optional()?;
        let done = match done {
            Some(v) => v as usize,
            None => {
                c.execute("INSERT INTO kmsfs_schema (version) VALUES (0)", [])?;
                0
            }
        };
        if done > MIGRATIONS.len() {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "schema version {done} is newer than this kmsfs knows ({}); upgrade kmsfs",
                MIGRATIONS.len()
            )));
        }
        for m in &MIGRATIONS[done..] {
            c.execute_batch(m)?;
        }
        c.execute(
            "UPDATE kmsfs_schema SET version = ?1",
            [MIGRATIONS.len() as i64],
        )?;
        Ok(())
    })();
    match r {
        Ok(()) => c.execute_batch("COMMIT"),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn generation(c: &Connection) -> rusqlite::Result<u64> {
    c.query_row("SELECT gen FROM kmsfs_meta WHERE id = 1", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|g| g as u64)
}

fn rows_after(c: &Connection, gen: u64) -> rusqlite::Result<Vec<Row>> {
    let mut st = c.prepare_cached("SELECT kind, id, data FROM kmsfs_rows WHERE gen > ?1")?;
    let rows = st.query_map([gen as i64], |r| {
        Ok(Row {
            kind: r.get(0)?,
            id: r.get(1)?,
            data: r.get(2)?,
        })
    })?;
    rows.collect()
}

impl Engine for Sqlite {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn generation(&self) -> Result<u64> {
        generation(&self.reader.lock()).map_err(|e| err(&self.path, e))
    }

    fn changes_since(&self, gen: u64) -> Result<(u64, Vec<Row>)> {
        let mut c = self.reader.lock();
        let tx = c.transaction().map_err(|e| err(&self.path, e))?;
        let now = generation(&tx).map_err(|e| err(&self.path, e))?;
        let rows = rows_after(&tx, gen).map_err(|e| err(&self.path, e))?;
        Ok((now, rows))
    }

    fn write(&self, base: u64, decide: &mut Decide<'_>) -> Result<Option<u64>> {
        let mut c = self.writer.lock();
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| err(&self.path, e))?;
        let now = generation(&tx).map_err(|e| err(&self.path, e))?;
        let seen = rows_after(&tx, base).map_err(|e| err(&self.path, e))?;
        let Some(writes) = decide(now, seen) else {
            return Ok(None); // dropping tx rolls back
        };
        let next = now + 1;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO kmsfs_rows (kind, id, gen, data) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (kind, id) DO UPDATE SET gen = excluded.gen, data = excluded.data",
                )
                .map_err(|e| err(&self.path, e))?;
            for w in &writes {
                put.execute(params![w.kind, w.id, next as i64, w.data])
                    .map_err(|e| err(&self.path, e))?;
            }
        }
        tx.execute("UPDATE kmsfs_meta SET gen = ?1 WHERE id = 1", [next as i64])
            .map_err(|e| err(&self.path, e))?;
        tx.commit().map_err(|e| err(&self.path, e))?;
        Ok(Some(next))
    }
}

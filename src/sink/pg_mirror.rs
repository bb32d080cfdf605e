//! The records materialised into PostgreSQL (`SINK_POSTGRES_URL`): one table per collection in
//! `SINK_POSTGRES_SCHEMA`, `(key text primary key, doc jsonb, version bigint, updated_at
//! timestamptz)`. Each checkpoint's changed records are written in one transaction before the
//! checkpoint and the acknowledgement; every write is guarded by the record's version, so a
//! redelivery, or a crash between this write and the checkpoint, never moves a row backwards
//! nor doubles it. A delete removes the row and leaves its version in `_tombstones`
//! `(tbl, key, version)`, so a replayed older upsert cannot bring the row back.

use std::collections::{BTreeMap, HashSet};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::value::RawValue;
use tokio_postgres::{NoTls, Transaction};

use super::core::Row;
use crate::config::SecretUrl;

/// Why a write to PostgreSQL failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No connection from the pool.
    #[error("PostgreSQL connection: {0}")]
    Pool(String),
    /// A statement failed.
    #[error("PostgreSQL: {0}")]
    Statement(#[from] tokio_postgres::Error),
}

/// Writes records into PostgreSQL.
pub struct PgMirror {
    pool: Pool,
    schema: String,
    created: HashSet<String>,
    synced: bool,
}

/// `"name"`, quoted for SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PgMirror {
    /// A pool for `url` (no connection is made yet); tables go into `schema`.
    pub fn new(url: &SecretUrl, schema: &str) -> Result<Self, String> {
        let config: tokio_postgres::Config =
            url.expose().parse().map_err(|e| format!("`{url}` is not a PostgreSQL connection string: {e}"))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(2).build().map_err(|e| e.to_string())?;
        Ok(Self { pool, schema: schema.to_string(), created: HashSet::new(), synced: false })
    }

    /// The first write after a start covers every record (the tables may be new, or behind
    /// the checkpoint), page by page; later ones what changed.
    pub fn wants_all(&self) -> bool {
        !self.synced
    }

    /// Every record is written.
    pub fn mark_synced(&mut self) {
        self.synced = true;
    }

    /// Write `rows` (upserts and deletes, version-guarded) in one transaction. A row
    /// PostgreSQL refuses as data (SQLSTATE class 22: a NUL character, which neither `text`
    /// nor `jsonb` can hold; an invalid Unicode escape) would be refused at every retry, so
    /// the rows are then written again one at a time, each behind a savepoint, and those it
    /// refuses are returned: the caller dead-letters them, and the others are written. Any
    /// other failure is an error (retried by the caller).
    pub async fn write(&mut self, rows: &[Row]) -> Result<Vec<Refused>, PgError> {
        if rows.is_empty() && self.synced {
            return Ok(Vec::new());
        }
        let mut client = self.pool.get().await.map_err(|e| PgError::Pool(e.to_string()))?;
        let tx = client.transaction().await?;
        match self.write_rows(&tx, rows).await {
            Ok(created) => {
                tx.commit().await?;
                self.created.extend(created);
                return Ok(Vec::new());
            }
            Err(e) if is_data_error(&e) => tx.rollback().await?,
            Err(e) => return Err(e.into()),
        }
        let mut tx = client.transaction().await?;
        let mut refused = Vec::new();
        let mut created = Vec::new();
        for row in rows {
            let sp = tx.savepoint("row").await?;
            match self.write_rows(&sp, std::slice::from_ref(row)).await {
                Ok(c) => {
                    sp.commit().await?;
                    created.extend(c);
                }
                Err(e) if is_data_error(&e) => {
                    sp.rollback().await?;
                    refused.push(Refused { row: row.clone(), reason: refusal(&e) });
                }
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        self.created.extend(created);
        Ok(refused)
    }

    /// The statements writing `rows` in `tx`; the tables it created.
    async fn write_rows(&self, tx: &Transaction<'_>, rows: &[Row]) -> Result<Vec<String>, tokio_postgres::Error> {
        let schema = ident(&self.schema);
        let mut created = Vec::new();
        if self.created.is_empty() {
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}._tombstones (tbl text NOT NULL, key text NOT NULL,
                   version bigint NOT NULL, PRIMARY KEY (tbl, key));"
            ))
            .await?;
            created.push(String::new()); // the schema and `_tombstones` exist
        }
        let mut by_table: BTreeMap<&str, (Vec<&Row>, Vec<&Row>)> = BTreeMap::new();
        for r in rows {
            let entry = by_table.entry(r.collection.as_str()).or_default();
            if r.doc.is_some() { entry.0.push(r) } else { entry.1.push(r) }
        }
        for (table, (live, gone)) in by_table {
            let t = format!("{schema}.{}", ident(table));
            if !self.created.contains(table) {
                tx.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, doc jsonb NOT NULL,
                       version bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
                ))
                .await?;
                created.push(table.to_string());
            }
            if !live.is_empty() {
                let keys: Vec<&str> = live.iter().map(|r| r.key.as_str()).collect();
                let docs: Vec<&str> = live.iter().map(|r| r.doc.as_deref().unwrap_or("null")).collect();
                let versions: Vec<i64> = live.iter().map(|r| r.version as i64).collect();
                let sql = format!(
                    "INSERT INTO {t} AS t (key, doc, version, updated_at)
                     SELECT u.k, u.d::jsonb, u.v, now() FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(k, d, v)
                     WHERE NOT EXISTS (SELECT 1 FROM {schema}._tombstones z
                                       WHERE z.tbl = $4 AND z.key = u.k AND z.version >= u.v)
                     ON CONFLICT (key) DO UPDATE SET doc = excluded.doc, version = excluded.version,
                       updated_at = excluded.updated_at
                     WHERE t.version < excluded.version"
                );
                tx.execute(&sql, &[&keys, &docs, &versions, &table]).await?;
            }
            if !gone.is_empty() {
                let keys: Vec<&str> = gone.iter().map(|r| r.key.as_str()).collect();
                let versions: Vec<i64> = gone.iter().map(|r| r.version as i64).collect();
                let sql = format!(
                    "WITH u AS (SELECT * FROM unnest($1::text[], $2::int8[]) AS u(k, v)),
                          gone AS (DELETE FROM {t} t USING u WHERE t.key = u.k AND t.version < u.v)
                     INSERT INTO {schema}._tombstones AS z (tbl, key, version) SELECT $3, u.k, u.v FROM u
                     ON CONFLICT (tbl, key) DO UPDATE SET version = excluded.version WHERE z.version < excluded.version"
                );
                tx.execute(&sql, &[&keys, &versions, &table]).await?;
            }
        }
        Ok(created)
    }
}

/// Whether PostgreSQL refused the data itself (SQLSTATE class 22, "data exception"), which
/// no retry changes.
fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("22"))
}

/// Why PostgreSQL refused a record, in its own words.
fn refusal(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let detail = d.detail().map(|x| format!(" ({x})")).unwrap_or_default();
            format!("PostgreSQL refused the record: {}{detail} [SQLSTATE {}]", d.message(), d.code().code())
        }
        None => format!("PostgreSQL refused the record: {e}"),
    }
}

/// A record PostgreSQL refuses, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// The record as the mirror tried to write it.
    pub row: Row,
    /// PostgreSQL's error.
    pub reason: String,
}

impl Refused {
    /// The dead-letter message: `{"collection", "key", "version", "doc"}` (`doc` null for a
    /// delete).
    pub fn body(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            collection: &'a str,
            key: &'a str,
            version: u64,
            /// The document's text as the sink holds it, not re-encoded.
            doc: Option<&'a RawValue>,
        }
        let row = &self.row;
        let doc = row.doc.as_deref().and_then(|d| serde_json::from_str::<&RawValue>(d).ok());
        let body = Body { collection: &row.collection, key: &row.key, version: row.version, doc };
        serde_json::to_vec(&body).expect("strings, a number and raw JSON serialise")
    }
}

//! Runs `store::Stmt`s on D1.

use crate::api::ApiError;
use crate::store::{Stmt, Val, GUARD_FAILED};
use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;
use worker::{D1DatabaseSession, D1PreparedStatement, Env};

/// D1, always through a session (D1 read replication: a session's queries
/// see a sequentially consistent database, its reads may go to a nearby
/// replica, its writes go to the primary). Without replication enabled on the
/// database, every session is the primary.
pub struct Db(D1DatabaseSession);

/// Where a session starts.
pub enum Start<'a> {
    /// On the primary: requests that write, or must read the latest state.
    Primary,
    /// On any replica: tenant reads, which tolerate a replica's lag (as they
    /// tolerate the isolate's route window).
    Nearest,
    /// No earlier than a bookmark a client got from an earlier request (it
    /// reads its own writes).
    After(&'a str),
}

/// Whether text can be a D1 bookmark (four dash-separated hex groups, as D1
/// hands them out): anything else is not passed to D1.
pub fn is_bookmark(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    text.len() <= 128 && groups.len() == 4 && groups.iter().all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub enum BatchError {
    /// The batch's guard failed: its precondition did not hold and nothing was written.
    Precondition,
    Failed(ApiError),
}

fn db_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("database error: {e}"))
}

impl Db {
    pub fn open(env: &Env, start: Start<'_>) -> Result<Db, ApiError> {
        let d1 = env.d1(super::DB_BINDING).map_err(db_error)?;
        let at = match start {
            Start::Primary => "first-primary",
            Start::Nearest => "first-unconstrained",
            Start::After(bookmark) => bookmark,
        };
        d1.with_session(Some(at)).map(Db).map_err(db_error)
    }

    /// The latest bookmark of this session (None before its first query): a
    /// client that sends it back reads at least what this session saw or wrote.
    pub fn bookmark(&self) -> Option<String> {
        self.0.get_bookmark().ok().flatten()
    }

    fn prepare(&self, s: &Stmt) -> Result<D1PreparedStatement, ApiError> {
        let params: Vec<JsValue> = s
            .params
            .iter()
            .map(|v| match v {
                Val::Null => JsValue::NULL,
                Val::Int(i) => JsValue::from_f64(*i as f64),
                Val::Text(t) => JsValue::from_str(t),
            })
            .collect();
        self.0.prepare(&s.sql).bind(&params).map_err(db_error)
    }

    pub async fn all<T: DeserializeOwned>(&self, s: Stmt) -> Result<Vec<T>, ApiError> {
        let r = self.prepare(&s)?.all().await.map_err(db_error)?;
        r.results::<T>().map_err(db_error)
    }

    pub async fn first<T: DeserializeOwned>(&self, s: Stmt) -> Result<Option<T>, ApiError> {
        Ok(self.all::<T>(s).await?.into_iter().next())
    }

    /// The schema version recorded in the database (None: never initialised or unreadable).
    pub async fn recorded_schema(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct V {
            value: String,
        }
        self.first::<V>(crate::store::schema_version()).await.ok().flatten().map(|v| v.value)
    }

    /// Runs one write; returns how many rows it changed.
    pub async fn run(&self, s: Stmt) -> Result<usize, ApiError> {
        let r = self.prepare(&s)?.run().await.map_err(db_error)?;
        Ok(r.meta().map_err(db_error)?.and_then(|m| m.changes).unwrap_or(0))
    }

    /// Runs statements as one transaction; returns each one's changed-row count.
    pub async fn batch(&self, stmts: Vec<Stmt>) -> Result<Vec<usize>, BatchError> {
        let prepared = stmts.iter().map(|s| self.prepare(s)).collect::<Result<Vec<_>, _>>().map_err(BatchError::Failed)?;
        match self.0.batch(prepared).await {
            Ok(results) => Ok(results
                .iter()
                .map(|r| r.meta().ok().flatten().and_then(|m| m.changes).unwrap_or(0))
                .collect()),
            Err(e) => {
                let msg = e.to_string();
                if msg.contains(GUARD_FAILED) {
                    Err(BatchError::Precondition)
                } else {
                    Err(BatchError::Failed(db_error(msg)))
                }
            }
        }
    }
}

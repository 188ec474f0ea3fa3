//! Runs `store::Stmt`s on D1.

use crate::api::ApiError;
use crate::store::{Stmt, Val, GUARD_FAILED};
use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement};

pub struct Db(pub D1Database);

pub enum BatchError {
    /// The batch's guard failed: its precondition did not hold and nothing was written.
    Precondition,
    Failed(ApiError),
}

fn db_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("database error: {e}"))
}

impl Db {
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

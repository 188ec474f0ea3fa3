//! The admin API over HTTP: JSON in and out, bodies streamed from readers,
//! every error answer turned into an [`ApiFailure`] with its code and message.

use anyhow::{Context, Result};
use serde_json::Value;
use std::io::Read;
use std::time::Duration;

/// An error answer of the API (`{"error": {"code", "message", …}}`).
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// The whole `error` object (per-file `errors`, `problems`, …).
    pub error: Value,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)?;
        for e in self.error.get("errors").and_then(Value::as_array).into_iter().flatten() {
            write!(f, "\n  {}: {}", e["file"].as_str().unwrap_or("?"), e["reason"].as_str().unwrap_or("?"))?;
        }
        for p in self.error.get("problems").and_then(Value::as_array).into_iter().flatten() {
            write!(f, "\n  {}:{}:{} {}: {}", p["file"].as_str().unwrap_or(""), p["line"], p["column"], p["path"].as_str().unwrap_or(""), p["message"].as_str().unwrap_or(""))?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

pub struct Client {
    pub api: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A request body.
pub enum Body<'a> {
    None,
    Json(&'a Value),
    /// Raw bytes with their content type.
    Bytes(&'a [u8], &'a str),
    /// Streamed (chunked) with its content type.
    Reader(Box<dyn Read + Send + 'a>, &'a str),
}

impl Client {
    pub fn new(api: &str, token: Option<String>) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .user_agent(concat!("wharf-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Client { api: api.trim_end_matches('/').to_string(), token, agent }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.api, path)
    }

    /// Calls the API; a JSON answer (Null for an empty one) or the failure.
    pub fn call(&self, method: &str, path: &str, body: Body<'_>) -> Result<Value> {
        let text = self.raw(method, path, body)?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&text).with_context(|| format!("{method} {path}: the answer is not JSON"))
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.call("GET", path, Body::None)
    }

    /// Every item of a paged listing: `path` (with or without a query) is
    /// asked 1,000 at a time after the answer's `next_after`; `field` names
    /// the answer's list.
    pub fn all_pages(&self, path: &str, field: &str) -> Result<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut all = vec![];
        let mut after: Option<String> = None;
        loop {
            let page = self.get(&format!("{path}{sep}limit=1000{}", after.as_deref().map(|a| format!("&after={}", encode(a))).unwrap_or_default()))?;
            all.extend(page[field].as_array().cloned().unwrap_or_default());
            match page["next_after"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => return Ok(all),
            }
        }
    }

    pub fn json(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        self.call(method, path, Body::Json(body))
    }

    /// The answer's bytes (2xx), or the failure.
    pub fn raw(&self, method: &str, path: &str, body: Body<'_>) -> Result<Vec<u8>> {
        let url = self.url(path);
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let sent = match body {
            Body::None => self.agent.run(b.body(()).context("request")?),
            Body::Json(v) => self.agent.run(b.header("content-type", "application/json").body(serde_json::to_vec(v)?).context("request")?),
            Body::Bytes(bytes, ct) => self.agent.run(b.header("content-type", ct).body(bytes).context("request")?),
            Body::Reader(mut r, ct) => {
                let req = b.header("content-type", ct).body(()).context("request")?;
                let (parts, ()) = req.into_parts();
                let req = ureq::http::Request::from_parts(parts, ureq::SendBody::from_reader(&mut r));
                self.agent.run(req)
            }
        };
        let mut resp = sent.with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().with_config().limit(1 << 30).read_to_vec().with_context(|| format!("{method} {url}: reading the answer"))?;
        if status >= 400 {
            return Err(failure(status, &bytes).into());
        }
        Ok(bytes)
    }
}

/// A query value percent-encoded (all but unreserved characters and `/`).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn failure(status: u16, body: &[u8]) -> ApiFailure {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match v.get("error") {
        Some(e) => ApiFailure {
            status,
            code: e["code"].as_str().unwrap_or("error").to_string(),
            message: e["message"].as_str().unwrap_or("").to_string(),
            error: e.clone(),
        },
        None => ApiFailure { status, code: "error".into(), message: String::from_utf8_lossy(&body[..body.len().min(500)]).trim().to_string(), error: Value::Null },
    }
}

impl Client {
    /// Streams `length` bytes from `body` to a `PUT` (with its Content-Length).
    pub fn put_file(&self, path: &str, mut body: impl Read, length: u64) -> Result<Value> {
        let url = self.url(path);
        let mut b = ureq::http::Request::builder().method("PUT").uri(&url).header("content-type", "application/octet-stream").header("content-length", length.to_string());
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let (parts, ()) = b.body(()).context("request")?.into_parts();
        let req = ureq::http::Request::from_parts(parts, ureq::SendBody::from_reader(&mut body));
        let mut resp = self.agent.run(req).with_context(|| format!("PUT {url}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().read_to_vec().with_context(|| format!("PUT {url}: reading the answer"))?;
        if status >= 400 {
            return Err(failure(status, &bytes).into());
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// The API failure inside an error, if it is one.
pub fn api_failure(e: &anyhow::Error) -> Option<&ApiFailure> {
    e.downcast_ref::<ApiFailure>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_code_message_and_what_each_file_did() {
        let f = failure(422, br#"{"error":{"code":"invalid_batch","message":"nothing was added","errors":[{"file":"a.deb","reason":"not an ar archive"}]}}"#);
        assert_eq!((f.status, f.code.as_str(), f.message.as_str()), (422, "invalid_batch", "nothing was added"));
        assert_eq!(f.to_string(), "422 invalid_batch: nothing was added\n  a.deb: not an ar archive");
        let f = failure(502, b"Bad Gateway");
        assert_eq!(f.to_string(), "502 error: Bad Gateway");
    }
}

//! Wharf: package repositories and an OCI registry mirror served by one
//! Cloudflare Worker from one content-addressed store.
//!
//! Everything but `worker_glue` is pure Rust that `cargo test` covers natively;
//! the glue binds it to D1, R2 and the fetch handler on wasm32.

pub mod api;
pub mod auth;
pub mod formats;
pub mod hostname;
pub mod lookup;
pub mod http;
pub mod oci;
pub mod path;
pub mod release;
pub mod tarcheck;
pub mod schema;
pub mod store;
pub mod sync;

#[cfg(target_arch = "wasm32")]
mod worker_glue;

//! What a release is made of, as every part of Wharf names it (a leaf).

use serde::Serialize;

/// A validated change to a draft: a path set to a blob (with its content
/// type), or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    /// None deletes the path.
    pub sha256: Option<String>,
    pub content_type: Option<String>,
}

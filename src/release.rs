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

/// Where a release is in its life (the `state` column): a draft takes
/// changes; activation makes it the one active release of its site, which
/// never changes again; the release it replaced is retired (and may be
/// re-activated by a rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Draft,
    Active,
    Retired,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Draft => "draft",
            State::Active => "active",
            State::Retired => "retired",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn states_read_and_print_as_the_schema_spells_them() {
        for (s, text) in [(State::Draft, "draft"), (State::Active, "active"), (State::Retired, "retired")] {
            assert_eq!(s.to_string(), text);
            assert_eq!(serde_json::from_str::<State>(&format!("\"{text}\"")).unwrap(), s);
        }
        assert!(include_str!("../schema.sql").contains("CHECK (state IN ('draft', 'active', 'retired'))"));
    }
}

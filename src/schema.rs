//! The schema this worker was built with (from schema.sql, by build.rs).

include!(concat!(env!("OUT_DIR"), "/schema_info.rs"));

/// How the recorded schema version of a database compares with ours.
#[derive(Debug, PartialEq, Eq)]
pub enum SchemaState {
    Current,
    /// The database is older (or was never initialised): refuse to serve.
    Outdated { database: Option<u32> },
    /// The database is newer than this worker: also refuse, to write nothing wrong.
    Newer { database: u32 },
}

pub fn check(recorded: Option<&str>) -> SchemaState {
    match recorded.and_then(|v| v.trim().parse::<u32>().ok()) {
        Some(v) if v == SCHEMA_VERSION => SchemaState::Current,
        Some(v) if v > SCHEMA_VERSION => SchemaState::Newer { database: v },
        other => SchemaState::Outdated { database: other },
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded() {
        assert!(SCHEMA_VERSION >= 1);
        assert_eq!(SCHEMA_SHA256.len(), 64);
        assert!(SCHEMA_SQL.contains("CREATE TABLE IF NOT EXISTS path_versions"));
        assert!(SCHEMA_SQL.contains(&format!("VALUES ('version', '{SCHEMA_VERSION}')")));
    }

    #[test]
    fn states() {
        assert_eq!(check(Some(&SCHEMA_VERSION.to_string())), SchemaState::Current);
        assert_eq!(check(None), SchemaState::Outdated { database: None });
        assert_eq!(check(Some("0")), SchemaState::Outdated { database: Some(0) });
        assert_eq!(check(Some("999")), SchemaState::Newer { database: 999 });
    }
}

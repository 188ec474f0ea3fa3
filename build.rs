//! Embeds schema.sql and its digest so the worker can report and check the schema it expects.
use sha2::{Digest, Sha256};
use std::{env, fs, path::Path};

fn main() {
    println!("cargo:rerun-if-changed=schema.sql");
    let schema = fs::read_to_string("schema.sql").expect("schema.sql is readable");
    let version: u32 = schema
        .lines()
        .find_map(|l| l.trim().strip_prefix("-- wharf-schema-version:"))
        .expect("schema.sql declares `-- wharf-schema-version: N`")
        .trim()
        .parse()
        .expect("schema version is a number");
    let digest = hex::encode(Sha256::digest(schema.as_bytes()));
    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("schema_info.rs");
    fs::write(
        out,
        format!(
            "/// Schema version declared in schema.sql.\npub const SCHEMA_VERSION: u32 = {version};\n\
             /// sha256 of schema.sql as built into this worker.\npub const SCHEMA_SHA256: &str = \"{digest}\";\n\
             /// schema.sql itself.\npub const SCHEMA_SQL: &str = include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/schema.sql\"));\n"
        ),
    )
    .unwrap();
}

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
    let (by_site, by_release) = owned_tables(&schema);
    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("schema_info.rs");
    fs::write(
        out,
        format!(
            "/// Schema version declared in schema.sql.\npub const SCHEMA_VERSION: u32 = {version};\n\
             /// sha256 of schema.sql as built into this worker.\npub const SCHEMA_SHA256: &str = \"{digest}\";\n\
             /// schema.sql itself.\npub const SCHEMA_SQL: &str = include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/schema.sql\"));\n\
             /// Tables with a `site_id` column (a site's rows), in schema order.\npub const SITE_TABLES: &[&str] = &{by_site:?};\n\
             /// Tables with a `release_id` column (a release's rows), in schema order.\npub const RELEASE_TABLES: &[&str] = &{by_release:?};\n"
        ),
    )
    .unwrap();
}

/// The tables of `CREATE TABLE` statements that have a `site_id` column, and
/// those that have a `release_id` column: what deleting a site must clear.
/// Tables the schema drops (legacy ones, migrated) are left out.
fn owned_tables(schema: &str) -> (Vec<String>, Vec<String>) {
    let (mut by_site, mut by_release) = (vec![], vec![]);
    let dropped: Vec<&str> = schema.lines().filter_map(|l| l.trim().strip_prefix("DROP TABLE IF EXISTS ")).map(|t| t.trim_end_matches(';').trim()).collect();
    let mut table: Option<String> = None;
    for line in schema.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
            let name = rest.split([' ', '(']).next().unwrap().to_string();
            // A one-line statement (a legacy table) has no column lines to read.
            table = (!dropped.contains(&name.as_str()) && !l.ends_with(';')).then_some(name);
            continue;
        }
        if l.starts_with(')') {
            table = None;
            continue;
        }
        let Some(t) = &table else { continue };
        match l.split_whitespace().next() {
            Some("site_id") => by_site.push(t.clone()),
            Some("release_id") => by_release.push(t.clone()),
            _ => {}
        }
    }
    (by_site, by_release)
}

//! Runs the statements of `store` against real SQLite with the real schema,
//! each batch in one transaction, as D1 does.

use super::*;
use crate::release::Change;
use rusqlite::{params_from_iter, types::Value, Connection};

struct Db(Connection);

fn to_sql(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Int(i) => Value::Integer(*i),
        Val::Text(t) => Value::Text(t.clone()),
    }
}

impl Db {
    fn new() -> Db {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(crate::schema::SCHEMA_SQL).unwrap();
        Db(c)
    }
    /// Runs a batch atomically; returns each statement's changes, or the error.
    fn batch(&mut self, stmts: Vec<Stmt>) -> Result<Vec<usize>, String> {
        let tx = self.0.transaction().unwrap();
        let mut out = vec![];
        for s in &stmts {
            let mut st = tx.prepare(&s.sql).map_err(|e| e.to_string())?;
            let params = params_from_iter(s.params.iter().map(to_sql));
            if st.readonly() {
                drop(st.query(params).map_err(|e| e.to_string())?);
                out.push(0);
            } else {
                let mut rows = st.query(params).map_err(|e| e.to_string())?;
                while rows.next().map_err(|e| e.to_string())?.is_some() {}
                drop(rows);
                out.push(tx.changes() as usize);
            }
        }
        drop(stmts);
        tx.commit().map_err(|e| e.to_string())?;
        Ok(out)
    }
    fn rows(&self, s: Stmt) -> Vec<Vec<Value>> {
        let mut st = self.0.prepare(&s.sql).unwrap();
        let n = st.column_count();
        st.query_map(params_from_iter(s.params.iter().map(to_sql)), |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
    fn int(&self, s: Stmt) -> i64 {
        match &self.rows(s)[0][0] {
            Value::Integer(i) => *i,
            v => panic!("not an int: {v:?}"),
        }
    }
    fn count(&self, sql: &str) -> i64 {
        self.0.query_row(sql, [], |r| r.get(0)).unwrap()
    }
    fn site(&mut self, name: &str) -> i64 {
        let id = self.int(create_site(name, 1));
        self.batch(vec![add_hostname(&format!("{name}.test"), id, 1)]).unwrap();
        id
    }
    fn blob(&mut self, content: &str) -> String {
        let sha = crate::auth::sha256_hex(content.as_bytes());
        self.batch(vec![insert_blob(&sha, content.len() as i64, 1)]).unwrap();
        sha
    }
    fn draft(&mut self, site: i64) -> i64 {
        self.int(create_release_from_active(site, None, 2))
    }
    fn put(&mut self, site: i64, rel: i64, path: &str, content: &str) {
        let sha = self.blob(content);
        let c = Change { path: path.into(), sha256: Some(sha), content_type: Some("text/plain".into()) };
        self.batch(apply_changes(site, rel, &[c])).unwrap();
    }
    fn delete(&mut self, site: i64, rel: i64, path: &str) {
        let c = Change { path: path.into(), sha256: None, content_type: None };
        self.batch(apply_changes(site, rel, &[c])).unwrap();
    }
    fn active(&self, site: i64) -> Option<i64> {
        match &self.rows(list_sites(Some(site)))[0][2] {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }
    fn activate(&mut self, site: i64, rel: i64, expected: Option<i64>) -> Result<(usize, usize), String> {
        let r = self.batch(activate(site, rel, expected, 3))?;
        Ok((r[ACTIVATE_CLOSED], r[ACTIVATE_OPENED]))
    }
    /// What the data plane serves for host/path: the blob digest.
    fn serve(&self, host: &str, path: &str) -> Option<String> {
        match &self.rows(route(host, path))[0][8] {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
    fn served_content(&self, host: &str, path: &str) -> Option<String> {
        let sha = self.serve(host, path)?;
        let probes = ["a1", "a2", "b1", "b2", "c1", "new", "x"];
        Some(probes.iter().find(|c| crate::auth::sha256_hex(c.as_bytes()) == sha).map(|c| c.to_string()).unwrap_or(sha))
    }
    fn seq_of(&self, site: i64, rel: i64) -> (i64, i64) {
        let r = &self.rows(release(site, rel))[0];
        let seq = match &r[4] {
            Value::Integer(i) => Some(*i),
            _ => None,
        };
        let parent = match &r[3] {
            Value::Integer(i) => *i,
            _ => 0,
        };
        (read_seq(seq, parent), rel)
    }
}

#[test]
fn publish_serve_and_cas() {
    let mut db = Db::new();
    let s = db.site("a");
    assert_eq!(db.serve("a.test", "x"), None);
    let r1 = db.draft(s);
    db.put(s, r1, "a", "a1");
    db.put(s, r1, "b", "b1");
    assert_eq!(db.serve("a.test", "a"), None, "a draft is never served");
    assert_eq!(db.activate(s, r1, None).unwrap(), (0, 2));
    assert_eq!(db.served_content("a.test", "a").as_deref(), Some("a1"));
    assert_eq!(db.served_content("other.test", "a"), None);

    // Two drafts from the same active release: the second activation is stale.
    let r2 = db.draft(s);
    let r3 = db.draft(s);
    db.put(s, r2, "a", "a2");
    db.put(s, r3, "c", "c1");
    assert_eq!(db.activate(s, r2, Some(r1)).unwrap(), (1, 1));
    let before = db.count("SELECT COUNT(*) FROM path_versions");
    let err = db.activate(s, r3, Some(r1)).unwrap_err();
    assert!(err.contains(GUARD_FAILED), "{err}");
    assert_eq!(db.count("SELECT COUNT(*) FROM path_versions"), before, "a stale activation writes nothing");
    assert_eq!(db.count("SELECT COUNT(*) FROM batch_guard"), 0);
    assert_eq!(db.active(s), Some(r2));
    assert_eq!(db.served_content("a.test", "a").as_deref(), Some("a2"));
    assert_eq!(db.served_content("a.test", "c"), None);
    // An active release never changes: changes to it are refused.
    let c = Change { path: "z".into(), sha256: None, content_type: None };
    assert!(db.batch(apply_changes(s, r2, &[c])).unwrap_err().contains(GUARD_FAILED));
    // Re-activating an active release is refused too.
    assert!(db.activate(s, r2, Some(r2)).is_err());
}

#[test]
fn rollback_then_branch_from_the_old_release() {
    let mut db = Db::new();
    let s = db.site("a");
    let r1 = db.draft(s);
    db.put(s, r1, "a", "a1");
    db.put(s, r1, "b", "b1");
    db.activate(s, r1, None).unwrap();
    let r2 = db.draft(s);
    db.put(s, r2, "a", "a2");
    db.delete(s, r2, "b");
    db.put(s, r2, "c", "c1");
    db.activate(s, r2, Some(r1)).unwrap();
    assert_eq!(db.served_content("a.test", "b"), None);

    // Rollback is a pointer switch: a stale one is refused.
    assert!(db.batch(rollback(s, r1, Some(r1), 4)).is_err());
    assert_eq!(db.int(previous_release(s)), r1);
    db.batch(rollback(s, r1, Some(r2), 4)).unwrap();
    assert_eq!(db.served_content("a.test", "a").as_deref(), Some("a1"));
    assert_eq!(db.served_content("a.test", "b").as_deref(), Some("b1"));
    assert_eq!(db.served_content("a.test", "c"), None);

    // A release made from the rolled-back one builds on *its* contents.
    let r3 = db.draft(s);
    db.put(s, r3, "new", "new");
    db.activate(s, r3, Some(r1)).unwrap();
    assert_eq!(db.served_content("a.test", "a").as_deref(), Some("a1"));
    assert_eq!(db.served_content("a.test", "b").as_deref(), Some("b1"));
    assert_eq!(db.served_content("a.test", "c"), None);
    assert_eq!(db.served_content("a.test", "new").as_deref(), Some("new"));

    // Every activation lands in a later second than the one before, even when
    // they happen within one second, so If-Modified-Since never hides a switch.
    let times: Vec<i64> = [r1, r2, r3]
        .iter()
        .map(|r| match &db.rows(release(s, *r))[0][8] {
            Value::Integer(t) => *t,
            v => panic!("{v:?}"),
        })
        .collect();
    assert!(times[2] / 1000 > times[0] / 1000, "{times:?}");

    // Every earlier snapshot is still intact: roll forward to r2.
    db.batch(rollback(s, r2, Some(r3), 5)).unwrap();
    assert_eq!(db.served_content("a.test", "a").as_deref(), Some("a2"));
    assert_eq!(db.served_content("a.test", "b"), None);
    assert_eq!(db.served_content("a.test", "new"), None);
}

#[test]
fn listing_and_diff() {
    let mut db = Db::new();
    let s = db.site("a");
    let r1 = db.draft(s);
    for p in ["a", "b", "c"] {
        db.put(s, r1, p, "x");
    }
    db.activate(s, r1, None).unwrap();
    let r2 = db.draft(s);
    db.put(s, r2, "b", "b2");
    db.delete(s, r2, "c");
    db.put(s, r2, "d", "x");
    let (seq2, _) = db.seq_of(s, r2);
    let paths: Vec<_> = db.rows(list_paths(s, seq2, r2, "", 10)).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(paths, ["a", "b", "d"].map(|p| Value::Text(p.into())));
    let page: Vec<_> = db.rows(list_paths(s, seq2, r2, "a", 1)).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(page, [Value::Text("b".into())]);
    let d = db.rows(diff(s, db.seq_of(s, r1), db.seq_of(s, r2), "", 10));
    let summary: Vec<(Value, bool, bool)> = d.iter().map(|r| (r[0].clone(), r[1] != Value::Null, r[4] != Value::Null)).collect();
    assert_eq!(
        summary,
        vec![(Value::Text("b".into()), true, true), (Value::Text("c".into()), true, false), (Value::Text("d".into()), false, true)]
    );
    assert_eq!(db.rows(release_path(s, seq2, r2, "c")).len(), 0);
    db.activate(s, r2, Some(r1)).unwrap();
    let after = db.seq_of(s, r2);
    assert_eq!(db.rows(diff(s, db.seq_of(s, r1), after, "", 10)).len(), 3, "diff is the same once activated");
}

#[test]
fn one_change_on_a_large_release_writes_two_rows() {
    let mut db = Db::new();
    let s = db.site("big");
    let r1 = db.draft(s);
    let sha = db.blob("x");
    let changes: Vec<Change> = (0..100_000)
        .map(|i| Change { path: format!("pool/p{i:06}.deb"), sha256: Some(sha.clone()), content_type: Some("application/octet-stream".into()) })
        .collect();
    for chunk in changes.chunks(5000) {
        db.batch(apply_changes(s, r1, chunk)).unwrap();
    }
    assert_eq!(db.activate(s, r1, None).unwrap(), (0, 100_000));
    let r2 = db.draft(s);
    db.put(s, r2, "pool/p050000.deb", "new");
    let total = db.count("SELECT COUNT(*) FROM path_versions");
    assert_eq!(db.activate(s, r2, Some(r1)).unwrap(), (1, 1));
    assert_eq!(db.count("SELECT COUNT(*) FROM path_versions"), total + 1);
    assert_eq!(db.served_content("big.test", "pool/p050000.deb").as_deref(), Some("new"));
    assert_eq!(db.served_content("big.test", "pool/p050001.deb").as_deref(), Some("x"));
    // The data-plane lookup is a single indexed search, not a scan.
    let plan: Vec<String> = {
        let q = route("big.test", "pool/p050001.deb");
        let mut st = db.0.prepare(&format!("EXPLAIN QUERY PLAN {}", q.sql)).unwrap();
        st.query_map(params_from_iter(q.params.iter().map(to_sql)), |r| r.get::<_, String>(3)).unwrap().map(Result::unwrap).collect()
    };
    assert!(plan.iter().all(|l| !l.starts_with("SCAN")), "{plan:?}");
}

/// A row owned by site `s` (release `r`) in each table that can hold one.
fn owned_row(table: &str, s: i64, r: i64) -> String {
    let sha = "a".repeat(64);
    match table {
        "hostnames" => format!("INSERT INTO hostnames VALUES ('h{s}.test', {s}, 1)"),
        "site_blobs" => format!("INSERT INTO site_blobs VALUES ({s}, '{sha}', 1)"),
        "releases" => format!("SELECT {r}"), // made by the test
        "release_changes" => format!("INSERT INTO release_changes VALUES ({r}, 'p', '{sha}', 1, 't')"),
        "path_versions" => format!("INSERT INTO path_versions VALUES ({s}, 'p', 1, 2, '{sha}', 1, 't')"),
        "activation_plan" => format!("INSERT INTO activation_plan VALUES ({r}, 'p', NULL, NULL, NULL)"),
        "tokens" => format!("INSERT INTO tokens VALUES ('tok{s}', '{sha}', 'n', {s}, 'read', 1, NULL, NULL)"),
        "format_settings" => format!("INSERT INTO format_settings VALUES ({s}, 'deb', 'stable', '{{}}')"),
        "format_keys" => format!("INSERT INTO format_keys VALUES ({s}, 'apk', 'k', NULL, 1)"),
        "format_dirty" => format!("INSERT INTO format_dirty VALUES ({r}, 'deb', 'stable', 'main/all')"),
        "format_dirty_names" => format!("INSERT INTO format_dirty_names VALUES ({r}, 'deb', 'stable', 'main/all', 'hello')"),
        "format_layouts" => format!("INSERT INTO format_layouts VALUES ({s}, '{sha}', '{sha}', '{sha}', '{{}}')"),
        "format_pending_signatures" => format!("INSERT INTO format_pending_signatures VALUES ({r}, 'apk', 'v3/main', 'x86_64', '{sha}')"),
        "format_ledgers" => format!("INSERT INTO format_ledgers VALUES ({r}, 'deb', 'stable', '[]')"),
        "oci_uploads" => format!("INSERT INTO oci_uploads VALUES ('up{s}', {s}, 'app', 0, '[]', 1)"),
        "oci_staged_blobs" => format!("INSERT INTO oci_staged_blobs VALUES ({s}, 'app', '{sha}', 1, 1)"),
        "oci_settings" => format!("INSERT INTO oci_settings VALUES ({s}, '{{}}')"),
        "mirror_configs" => format!("INSERT INTO mirror_configs VALUES ({s}, 'images.yaml', 'images: []', NULL, NULL, 1, NULL, NULL)"),
        "mirror_runs" => format!("INSERT INTO mirror_runs(id, site_id, trigger, nonce, config, state, entries_pending, created_at) VALUES ({s}00, {s}, 'manual', 'n{s}', '{{}}', 'running', 1, 1)"),
        "mirror_entries" => format!("INSERT INTO mirror_entries(run_id, idx, site_id, state) VALUES ({s}00, 0, {s}, 'pending')"),
        "mirror_units" => format!("INSERT INTO mirror_units(run_id, seq, site_id, kind, entry, name, target, version, state) VALUES ({s}00, 0, {s}, 'image', 0, 'a', 'a', '1', 'pending')"),
        "mirror_sources" => format!("INSERT INTO mirror_sources VALUES ({s}, '{sha}', '{sha}')"),
        "oci_cache" => format!("INSERT INTO oci_cache VALUES ({s}, '', 'app', 'blob', '{sha}', '{sha}', 1, 't', 1)"),
        other => panic!("schema.sql has a table {other} with a site_id or release_id column: add a row for it here"),
    }
}

#[test]
fn delete_site_removes_every_row_it_owned_and_its_id_is_never_given_again() {
    use crate::schema::{RELEASE_TABLES, SITE_TABLES};
    assert!(SITE_TABLES.contains(&"oci_cache") && SITE_TABLES.contains(&"releases") && RELEASE_TABLES.contains(&"release_changes"));
    let mut db = Db::new();
    let keep = db.site("b");
    let s = db.site("a");
    let (rs, rk) = (db.draft(s), db.draft(keep));
    for t in SITE_TABLES.iter().chain(RELEASE_TABLES) {
        for (site, rel) in [(s, rs), (keep, rk)] {
            db.0.execute_batch(&owned_row(t, site, rel)).unwrap();
        }
    }
    let owned = |db: &Db, site: i64, rel: i64| -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = SITE_TABLES.iter().map(|t| (t.to_string(), db.count(&format!("SELECT COUNT(*) FROM {t} WHERE site_id = {site}")))).collect();
        v.extend(RELEASE_TABLES.iter().map(|t| (t.to_string(), db.count(&format!("SELECT COUNT(*) FROM {t} WHERE release_id = {rel}")))));
        v
    };
    assert!(owned(&db, s, rs).iter().all(|(_, n)| *n > 0), "{:?}", owned(&db, s, rs));
    db.batch(delete_site(s)).unwrap();
    assert!(owned(&db, s, rs).iter().all(|(_, n)| *n == 0), "left behind: {:?}", owned(&db, s, rs));
    assert!(owned(&db, keep, rk).iter().all(|(_, n)| *n > 0), "the other site lost rows: {:?}", owned(&db, keep, rk));
    assert_eq!(db.count("SELECT COUNT(*) FROM sites"), 1);
    assert!(db.batch(delete_site(s)).is_err(), "deleting a missing site is refused");
    // The highest id was deleted: the next site gets a new one, and so does the one after a second delete.
    let n = db.int(create_site("c", 1));
    assert!(n > s, "site id {n} reuses {s}");
    db.batch(delete_site(n)).unwrap();
    assert!(db.int(create_site("d", 1)) > n);
}

#[test]
fn delete_site_removes_everything_served() {
    let mut db = Db::new();
    let s = db.site("a");
    let keep = db.site("b");
    let r1 = db.draft(s);
    db.put(s, r1, "a", "a1");
    db.activate(s, r1, None).unwrap();
    let r2 = db.draft(keep);
    db.put(keep, r2, "a", "a2");
    db.activate(keep, r2, None).unwrap();
    db.batch(delete_site(s)).unwrap();
    assert_eq!(db.serve("a.test", "a"), None);
    assert!(db.serve("b.test", "a").is_some());
    assert_eq!(db.count("SELECT COUNT(*) FROM releases"), 1);
}

#[test]
fn a_site_holds_only_the_blobs_it_proved() {
    let mut db = Db::new();
    let (a, b) = (db.site("a"), db.site("b"));
    let sha = db.blob("private");
    db.batch(vec![own_blob(a, &sha, 1)]).unwrap();
    assert_eq!(db.rows(site_blob(a, &sha)).len(), 1);
    assert_eq!(db.rows(site_blob(b, &sha)).len(), 0, "b never proved it holds a's blob");
    let missing = "f".repeat(64);
    db.batch(vec![own_blob(b, &missing, 1)]).unwrap();
    assert_eq!(db.count("SELECT COUNT(*) FROM site_blobs WHERE site_id = 2"), 0, "no row for a digest not stored");
    let held = db.rows(site_blobs_among(a, &[sha.as_str(), missing.as_str()]));
    assert_eq!(held, vec![vec![Value::Text(sha.clone())]]);
    db.batch(insert_owned_blob(b, &sha, 7, 1)).unwrap();
    assert_eq!(db.rows(site_blob(b, &sha)).len(), 1);
}

#[test]
fn a_pool_file_is_shared_by_members_of_the_same_component_and_content() {
    let mut db = Db::new();
    let s = db.site("a");
    let r = db.draft(s);
    let f = "hello_1.0_all.deb";
    let m1 = deb::member_path("stable", "main", f);
    for (d, c, content) in [("stable", "main", "x"), ("testing", "main", "x"), ("testing", "contrib", "x"), ("old", "main", "new")] {
        db.put(s, r, &deb::member_path(d, c, f), content);
    }
    let x = crate::auth::sha256_hex(b"x");
    let (seq, _) = db.seq_of(s, r);
    assert_eq!(db.int(deb::pool_sharers(s, seq, r, &m1, "main", f, &x)), 1, "testing/main shares it; contrib and other content do not");
    db.delete(s, r, &deb::member_path("testing", "main", f));
    assert_eq!(db.int(deb::pool_sharers(s, seq, r, &m1, "main", f, &x)), 0);
}

#[test]
fn members_page_through_a_dist_with_their_control_data() {
    let mut db = Db::new();
    let s = db.site("a");
    let r = db.draft(s);
    for i in 0..5 {
        let f = format!("p{i}_1_all.deb");
        db.put(s, r, &deb::member_path("stable", "main", &f), &format!("deb {i}"));
        let sha = crate::auth::sha256_hex(format!("deb {i}").as_bytes());
        let row = [&sha, &format!("p{i}"), "1", "all", &format!("p{i}"), &format!("Package: p{i}\n")].map(|v| serde_json::json!(v)).to_vec();
        db.batch(vec![insert_records("deb_packages", &["sha256", "package", "version", "architecture", "source", "control"], &[row], 1)]).unwrap();
    }
    db.put(s, r, &deb::member_path("testing", "main", "p9_1_all.deb"), "deb 9");
    let (seq, _) = db.seq_of(s, r);
    let prefix = deb::member_prefix("stable", None);
    let (mut after, mut seen) = (String::new(), vec![]);
    loop {
        let page = db.rows(deb::members(s, seq, r, &prefix, &after, 2));
        let mut paths: Vec<String> = page.iter().map(|row| if let Value::Text(t) = &row[0] { t.clone() } else { panic!() }).collect();
        assert!(page.iter().all(|row| matches!(&row[7], Value::Text(c) if c.starts_with("Package: p"))));
        paths.sort();
        if let Some(last) = paths.last() {
            after = last.clone();
        }
        let n = paths.len();
        seen.extend(paths);
        if n < 2 {
            break;
        }
    }
    assert_eq!(seen, (0..5).map(|i| deb::member_path("stable", "main", &format!("p{i}_1_all.deb"))).collect::<Vec<_>>());
}

#[test]
fn the_mirror_cache_is_per_site_pages_in_key_order_and_purges() {
    use super::oci::*;
    let mut db = Db::new();
    let put = |site, up: &str, repo: &str, kind: &str, r: &str, sha: Option<&str>, now| {
        cache(site, up, repo, kind, r, sha, sha.map(|_| 10), sha.map(|_| "application/octet-stream"), now)
    };
    db.batch(vec![
        put(1, "", "library/alpine", "tag", "3", Some("aa"), 5),
        put(1, "", "library/alpine", "manifest", "aa", Some("aa"), 5),
        put(1, "ghcr.io", "org/x", "blob", "bb", None, 5),
        put(2, "", "library/alpine", "tag", "3", Some("cc"), 5),
    ])
    .unwrap();
    // Upsert: a tag moves; a 404 becomes content.
    db.batch(vec![put(1, "", "library/alpine", "tag", "3", Some("dd"), 9), put(1, "ghcr.io", "org/x", "blob", "bb", Some("bb"), 9)]).unwrap();
    let row = db.rows(cached(1, "", "library/alpine", "tag", "3"));
    assert_eq!(row[0][0], Value::Text("dd".into()));
    assert_eq!(row[0][3], Value::Integer(9));
    assert_eq!(db.rows(cached(2, "", "library/alpine", "tag", "3"))[0][0], Value::Text("cc".into()));
    // Pages of one entry each walk the site's entries in key order.
    let mut after: [String; 4] = Default::default();
    let mut seen = vec![];
    loop {
        let page = db.rows(cache_page(1, None, None, &after, 1));
        let Some(r) = page.first() else { break };
        let key: Vec<String> = r[..4].iter().map(|v| if let Value::Text(t) = v { t.clone() } else { panic!() }).collect();
        seen.push(key.join("|"));
        after = [key[0].clone(), key[1].clone(), key[2].clone(), key[3].clone()];
    }
    assert_eq!(seen, ["|library/alpine|manifest|aa", "|library/alpine|tag|3", "ghcr.io|org/x|blob|bb"]);
    assert_eq!(db.rows(cache_page(1, Some("ghcr.io"), None, &Default::default(), 10)).len(), 1);
    assert_eq!(db.batch(vec![purge_cache(1, None, Some("library/alpine"))]).unwrap(), vec![2]);
    assert_eq!(db.batch(vec![purge_cache(1, None, None)]).unwrap(), vec![1]);
    assert_eq!(db.rows(cache_page(2, None, None, &Default::default(), 10)).len(), 1);
}

#[test]
fn staged_blobs_belong_to_one_repository_until_swept() {
    use super::oci::*;
    let mut db = Db::new();
    db.batch(vec![stage_blob(1, "team/app", "aa", 10, 5), stage_blob(1, "team/app", "bb", 20, 50), stage_blob(2, "team/app", "aa", 10, 5)]).unwrap();
    // Staging again refreshes the clock, not the row count.
    assert_eq!(db.batch(vec![stage_blob(1, "team/app", "aa", 10, 60)]).unwrap(), vec![1]);
    assert_eq!(db.rows(staged_blob(1, "team/app", "aa"))[0][0], Value::Integer(10));
    assert!(db.rows(staged_blob(1, "team/other", "aa")).is_empty());
    assert_eq!(db.batch(vec![sweep_staged_blobs(1, 55)]).unwrap(), vec![1]); // bb (50) goes, aa (60) stays
    assert!(db.rows(staged_blob(1, "team/app", "bb")).is_empty());
    assert_eq!(db.batch(vec![unstage_blob(1, "team/app", "aa")]).unwrap(), vec![1]);
    assert_eq!(db.rows(staged_blob(2, "team/app", "aa")).len(), 1);
}

#[test]
fn a_rebased_activation_lands_on_whatever_is_active_and_loses_nothing() {
    let mut db = Db::new();
    let s = db.site("a");
    let r0 = db.draft(s);
    db.put(s, r0, "base", "x");
    db.activate(s, r0, None).unwrap();
    // Two pushes branch from the same release; the first one wins the swap.
    let (r1, r2) = (db.draft(s), db.draft(s));
    db.put(s, r1, "one", "a1");
    db.put(s, r2, "two", "a2");
    db.activate(s, r1, Some(r0)).unwrap();
    assert!(db.activate(s, r2, Some(r0)).is_err(), "a plain compare-and-swap loses");
    db.batch(activate_rebased(s, r2, 4)).unwrap();
    assert_eq!(db.active(s), Some(r2));
    for (p, c) in [("base", "x"), ("one", "a1"), ("two", "a2")] {
        assert_eq!(db.served_content("a.test", p).as_deref(), Some(c), "{p}");
    }
    // After a rollback the active release (not the newest snapshot) is the base.
    db.batch(rollback(s, r1, Some(r2), 5)).unwrap();
    let r3 = db.draft(s);
    let r4 = db.draft(s);
    db.put(s, r4, "four", "b1");
    db.put(s, r3, "three", "b2");
    db.batch(activate_rebased(s, r3, 6)).unwrap();
    db.batch(activate_rebased(s, r4, 7)).unwrap();
    assert_eq!(db.serve("a.test", "two"), None, "rolled back before these pushes");
    for (p, c) in [("base", "x"), ("one", "a1"), ("three", "b2"), ("four", "b1")] {
        assert_eq!(db.served_content("a.test", p).as_deref(), Some(c), "{p}");
    }
    // Only drafts: an active release is not activated again.
    assert!(db.batch(activate_rebased(s, r4, 8)).is_err());
}

#[test]
fn schema_5_applies_again_and_counts_what_sites_referenced_as_held() {
    let mut db = Db::new();
    let s = db.site("a");
    let r = db.draft(s);
    db.put(s, r, "p", "a1");
    db.activate(s, r, None).unwrap();
    // A database from before schema 5 had no site_blobs rows.
    db.0.execute_batch("DELETE FROM site_blobs").unwrap();
    db.0.execute_batch(crate::schema::SCHEMA_SQL).unwrap();
    let sha = crate::auth::sha256_hex(b"a1");
    assert_eq!(db.rows(site_blob(s, &sha)).len(), 1, "what the site's releases referenced counts as held");
    db.0.execute_batch(crate::schema::SCHEMA_SQL).unwrap();
    assert_eq!(db.count("SELECT COUNT(*) FROM site_blobs"), 1);
}

#[test]
fn a_published_path_is_known_with_the_blob_it_had() {
    let mut db = Db::new();
    let s = db.site("a");
    let r = db.draft(s);
    db.put(s, r, "pool/x.deb", "a1");
    db.activate(s, r, None).unwrap();
    let (a1, a2) = (crate::auth::sha256_hex(b"a1"), crate::auth::sha256_hex(b"a2"));
    let other = |db: &Db, puts: &[(&str, &str)]| db.rows(published_with_other_blob(s, puts)).len();
    assert_eq!(other(&db, &[("pool/x.deb", &a1)]), 0, "the same bytes again");
    assert_eq!(other(&db, &[("pool/x.deb", &a2), ("pool/new.deb", &a2)]), 1, "other bytes under a published path");
    // Still known after the path is deleted from the active release.
    let r2 = db.draft(s);
    db.delete(s, r2, "pool/x.deb");
    db.activate(s, r2, Some(r)).unwrap();
    assert_eq!(other(&db, &[("pool/x.deb", &a2)]), 1);
    assert_eq!(db.rows(published_with_other_blob(2, &[("pool/x.deb", &a2)])).len(), 0, "per site");
}

/// A database made with schema 5 (tests/fixtures/schema-v5.sql, the file as
/// it was) keeps every format's bookkeeping when schema 6 is applied, twice.
#[test]
fn schema_6_moves_each_formats_bookkeeping_into_the_format_tables() {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(include_str!("../../tests/fixtures/schema-v5.sql")).unwrap();
    c.execute_batch(
        "INSERT INTO deb_dists VALUES (1, 'stable', '{\"origin\":\"O\"}');
         INSERT INTO deb_dirty VALUES (7, 'stable', 'main', 'amd64');
         INSERT INTO deb_ledgers VALUES (7, 'stable', '[[\"x\"]]');
         INSERT INTO deb_keys VALUES (1, 'abcd', 'FPR', 5);
         INSERT INTO deb_pending_signatures VALUES (7, 'stable', 'rsha');
         INSERT INTO apk_settings VALUES (1, '{\"architectures\":[\"x86_64\"]}');
         INSERT INTO apk_keys VALUES (1, 'PEM', 6);
         INSERT INTO apk_dirty VALUES (7, 'v3.20', 'main', 'noarch');
         INSERT INTO apk_pending_signatures VALUES (7, 'v3.20', 'main', 'x86_64', 'ssha');",
    )
    .unwrap();
    for _ in 0..2 {
        c.execute_batch(crate::schema::SCHEMA_SQL).unwrap();
    }
    let rows = |sql: &str| -> Vec<String> {
        let mut st = c.prepare(sql).unwrap();
        let n = st.column_count();
        st.query_map([], |r| Ok((0..n).map(|i| r.get::<_, Value>(i).map(|v| format!("{v:?}")).unwrap()).collect::<Vec<_>>().join("|")))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(rows("SELECT format, scope, config FROM format_settings ORDER BY format"), [
        "Text(\"apk\")|Text(\"\")|Text(\"{\\\"architectures\\\":[\\\"x86_64\\\"]}\")",
        "Text(\"deb\")|Text(\"stable\")|Text(\"{\\\"origin\\\":\\\"O\\\"}\")",
    ]);
    assert_eq!(rows("SELECT format, public_key, fingerprint FROM format_keys ORDER BY format"), [
        "Text(\"apk\")|Text(\"PEM\")|Null",
        "Text(\"deb\")|Text(\"abcd\")|Text(\"FPR\")",
    ]);
    // Read back through the formats' own queries, as the worker reads them.
    let db = Db(c);
    let q = |s: Stmt| -> Vec<String> {
        db.rows(s)
            .into_iter()
            .map(|r| r.iter().map(|v| match v { Value::Text(t) => t.clone(), other => format!("{other:?}") }).collect::<Vec<_>>().join("|"))
            .collect()
    };
    assert_eq!(q(deb::dirty(7)), ["stable|main|amd64"]);
    assert_eq!(q(apk::dirty(7)), ["v3.20|main|noarch"]);
    assert_eq!(q(deb::pending(7, "stable")), ["rsha"]);
    assert_eq!(q(apk::pending(7)), ["v3.20|main|x86_64|ssha"]);
    assert_eq!(q(deb::published_dists(7)), ["stable"]);
    assert_eq!(q(deb::ledger(7, "stable")), ["[[\"x\"]]"]);
    let old = db.count("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'deb\\_%' ESCAPE '\\' AND name <> 'deb_packages'");
    assert_eq!(old, 0, "the legacy tables are gone");
}

#[test]
fn a_blob_kept_elsewhere_is_found_where_it_lies_and_its_first_location_stands() {
    let mut db = Db::new();
    let s = db.site("loc");
    let r = db.draft(s);
    db.put(s, r, "kept", "kept elsewhere");
    db.put(s, r, "plain", "at its digest");
    db.activate(s, r, None).unwrap();
    let sha = crate::auth::sha256_hex(b"kept elsewhere");
    assert_eq!(db.batch(vec![locate_blob(&sha, "uploads/abc/00000000000000000000")]).unwrap(), vec![1]);
    assert_eq!(db.batch(vec![locate_blob(&sha, "uploads/def/00000000000000000000")]).unwrap(), vec![0], "the first location stands");
    let key = |path: &str| db.rows(route("loc.test", path))[0][11].clone();
    assert_eq!(key("kept"), Value::Text("uploads/abc/00000000000000000000".into()));
    assert_eq!(key("plain"), Value::Null, "no row: the default key");
    assert_eq!(db.rows(blob_location(&sha))[0][0], Value::Text("uploads/abc/00000000000000000000".into()));
}

#[test]
fn packed_blobs_are_found_at_their_offsets_and_an_earlier_place_stands() {
    let mut db = Db::new();
    let s = db.site("pack");
    let r = db.draft(s);
    db.put(s, r, "a", "first file");
    db.put(s, r, "b", "second file");
    db.put(s, r, "c", "kept elsewhere");
    db.activate(s, r, None).unwrap();
    let sha = |b: &str| crate::auth::sha256_hex(b.as_bytes());
    let (a, b, c) = (sha("first file"), sha("second file"), sha("kept elsewhere"));
    db.batch(vec![locate_blob(&c, "uploads/abc/00000000000000000000")]).unwrap();
    assert_eq!(db.batch(vec![place_in_pack("packs/sha256/p", &[(&a, 0), (&b, 10), (&c, 21)])]).unwrap(), vec![2], "c keeps its place");
    let place = |path: &str| {
        let row = &db.rows(route("pack.test", path))[0];
        let offset = match row[12] { Value::Integer(o) => Some(o as u64), _ => None };
        let key = match &row[11] { Value::Text(k) => Some(k.clone()), _ => None };
        Place::of(&sha("x"), key, offset)
    };
    assert_eq!(place("a"), Place { key: "packs/sha256/p".into(), offset: Some(0) });
    assert_eq!(place("b"), Place { key: "packs/sha256/p".into(), offset: Some(10) });
    assert_eq!(place("c"), Place { key: "uploads/abc/00000000000000000000".into(), offset: None });
    assert_eq!(db.rows(blob_location(&b))[0], vec![Value::Text("packs/sha256/p".into()), Value::Integer(10)]);
    // What is read of R2: a pack's range for the blob, mapped ranges within it.
    let p = place("b");
    assert_eq!(p.r2_range(None, 11), Some((10, 11)));
    assert_eq!(p.r2_range(Some((3, 4)), 11), Some((13, 4)));
    assert_eq!(place("c").r2_range(None, 14), None, "a whole object is read whole");
    assert_eq!(place("c").r2_range(Some((3, 4)), 14), Some((3, 4)));
}

/// Schema 11 keeps the places recorded before it (blob_locations had no
/// offset), applied twice.
#[test]
fn schema_11_keeps_the_locations_recorded_before() {
    let c = Connection::open_in_memory().unwrap();
    // A schema-10 database: blob_locations with a row, no blob_places yet.
    c.execute_batch("CREATE TABLE blob_locations (sha256 TEXT PRIMARY KEY, r2_key TEXT NOT NULL); INSERT INTO blob_locations VALUES ('abc', 'uploads/u/0');").unwrap();
    for _ in 0..2 {
        c.execute_batch(crate::schema::SCHEMA_SQL).unwrap();
    }
    let n: i64 = c.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'blob_locations'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0, "the old table is gone");
    let row: (String, Option<i64>) = c.query_row("SELECT r2_key, r2_offset FROM blob_places WHERE sha256 = 'abc'", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(row, ("uploads/u/0".to_string(), None));
}

#[test]
fn a_mirror_config_file_replaces_its_part_only() {
    use crate::store::sync::{config, put_config};
    use rusqlite::types::Value::{Integer, Null, Text};
    let mut db = Db::new();
    let s = db.site("m");
    let t = |v: &str| Text(v.to_string());
    db.batch(vec![put_config(s, Some(("mirror.yaml", "both")), Some(("mirror.yaml", "both")), 1)]).unwrap();
    db.batch(vec![put_config(s, None, Some(("charts.yaml", "charts")), 2)]).unwrap();
    assert_eq!(db.rows(config(s)), vec![vec![t("mirror.yaml"), t("both"), t("charts.yaml"), t("charts"), Integer(2)]]);
    db.batch(vec![put_config(s, Some(("images.yaml", "images")), None, 3)]).unwrap();
    assert_eq!(db.rows(config(s)), vec![vec![t("images.yaml"), t("images"), t("charts.yaml"), t("charts"), Integer(3)]]);
    let other = db.site("n");
    db.batch(vec![put_config(other, None, Some(("charts.yaml", "c")), 4)]).unwrap();
    assert_eq!(db.rows(config(other)), vec![vec![Null, Null, t("charts.yaml"), t("c"), Integer(4)]]);
}

#[test]
fn a_mirror_schedule_counts_from_when_it_changed() {
    use crate::store::sync::{put_config, put_schedule, settings};
    use rusqlite::types::Value::{Integer, Null, Text};
    let mut db = Db::new();
    let s = db.site("m");
    db.batch(vec![put_schedule(s, Some("0 * * * *"), 10)]).unwrap();
    db.batch(vec![put_schedule(s, Some("0 * * * *"), 20)]).unwrap();
    assert_eq!(db.rows(settings(s)), vec![vec![Text("0 * * * *".into()), Integer(10)]], "unchanged: still from 10");
    db.batch(vec![put_schedule(s, Some("30 * * * *"), 30)]).unwrap();
    assert_eq!(db.rows(settings(s)), vec![vec![Text("30 * * * *".into()), Integer(30)]]);
    db.batch(vec![put_config(s, Some(("images.yaml", "images: []")), None, 40)]).unwrap();
    assert_eq!(db.rows(settings(s)), vec![vec![Text("30 * * * *".into()), Integer(30)]], "storing files keeps the schedule");
    db.batch(vec![put_schedule(s, None, 50)]).unwrap();
    assert_eq!(db.rows(settings(s)), vec![vec![Null, Integer(50)]]);
}

#[test]
fn a_mirror_run_counts_each_entry_and_unit_once_and_is_published_once() {
    use crate::store::sync::*;
    let mut db = Db::new();
    let s = db.site("m");
    db.batch(create_run(s, "n1", "manual", None, "{}", &[0, 1], 5)).unwrap();
    let run = db.int(run_by_nonce("n1"));
    assert_eq!(db.count(&format!("SELECT COUNT(*) FROM mirror_entries WHERE run_id = {run} AND site_id = {s}")), 2);
    let unit = |seq: i64, state: &'static str| NewUnit::new(seq, "image", "a", "a", &seq.to_string(), state);
    let progress = |db: &Db| db.rows(stmt_progress(run));
    fn stmt_progress(run: i64) -> Stmt {
        super::stmt("SELECT entries_pending, units_total, units_done, state FROM mirror_runs WHERE id = ?1", vec![run.into()])
    }
    use rusqlite::types::Value::{Integer, Text};
    // Entry 0: two units to copy, one already held. Its message comes twice.
    assert_eq!(db.int(start_entry(run, 0)), 1);
    let first = [unit(0, "pending"), unit(1, "pending"), unit(2, "skipped")];
    db.batch(resolve_entry(run, 0, &first, None, 6)).unwrap();
    db.batch(resolve_entry(run, 0, &first, None, 6)).unwrap();
    assert!(db.rows(start_entry(run, 0)).is_empty(), "a resolved entry does not start again");
    assert_eq!(progress(&db), vec![vec![Integer(1), Integer(3), Integer(1), Text("running".into())]]);
    assert_eq!(db.batch(vec![claim_publication(run)]).unwrap(), vec![0], "not complete: no publication");
    // Entry 1 resolves into nothing (the source failed).
    db.batch(resolve_entry(run, 1, &[], Some("image b: upstream 404"), 7)).unwrap();
    assert_eq!(db.rows(entry_failures(run)).len(), 1);
    // Units finish, each counted once however often its message comes.
    let copied = Finished { state: "copied", changes: Some("[]".into()), ..Default::default() };
    assert_eq!(db.rows(start_unit(run, 0, 8))[0][7], Integer(1));
    assert_eq!(db.rows(start_unit(run, 0, 9))[0][7], Integer(2), "a retry counts its try");
    db.batch(finish_unit(run, 0, &copied, 10)).unwrap();
    db.batch(finish_unit(run, 0, &copied, 10)).unwrap();
    assert!(db.rows(start_unit(run, 0, 11)).is_empty(), "a finished unit does not start again");
    assert_eq!(progress(&db), vec![vec![Integer(0), Integer(3), Integer(2), Text("running".into())]]);
    db.batch(finish_unit(run, 1, &Finished { state: "failed", reason: Some("digest mismatch".into()), ..Default::default() }, 12)).unwrap();
    assert_eq!(db.batch(vec![claim_publication(run)]).unwrap(), vec![1], "complete: one publication");
    assert_eq!(db.batch(vec![claim_publication(run)]).unwrap(), vec![0], "and only one");
    assert_eq!(db.rows(run_changes(run)).len(), 1, "only what was copied changes the release");
    // A stuck run: what it left pending fails, counted.
    db.batch(create_run(s, "n2", "schedule", None, "{}", &[0], 20)).unwrap();
    let stuck = db.int(run_by_nonce("n2"));
    db.batch(resolve_entry(stuck, 0, &[unit(0, "pending")], None, 21)).unwrap();
    db.batch(fail_unfinished(stuck, "timeout", 99)).unwrap();
    assert_eq!(db.batch(vec![claim_publication(stuck)]).unwrap(), vec![1]);
    assert_eq!(db.rows(units(stuck))[0][5], Text("failed".into()));
}

#[test]
fn a_batch_records_many_blobs_records_and_changes_in_a_few_statements() {
    use rusqlite::types::Value::Text;
    let mut db = Db::new();
    let s = db.site("batch");
    let r1 = db.draft(s);
    db.put(s, r1, "old.deb", "old");
    db.put(s, r1, "gone.deb", "gone");
    db.activate(s, r1, None).unwrap();
    let r2 = db.draft(s);
    let shas: Vec<String> = (0..3).map(|i| crate::auth::sha256_hex(format!("p{i}").as_bytes())).collect();
    let blobs: Vec<(&str, u64)> = shas.iter().map(|s| (s.as_str(), 2)).collect();
    let changes: Vec<Change> = shas
        .iter()
        .enumerate()
        .map(|(i, sha)| Change { path: format!("pool/p{i}.deb"), sha256: Some(sha.clone()), content_type: Some("application/vnd.debian.binary-package".into()) })
        .chain([Change { path: "gone.deb".into(), sha256: None, content_type: None }])
        .collect();
    let rows: Vec<Vec<serde_json::Value>> = shas.iter().map(|sha| [sha.as_str(), "p", "1", "all", "p", "Package: p\n"].map(|v| serde_json::json!(v)).to_vec()).collect();
    let mut extra = insert_owned_blobs(s, &blobs, 5);
    extra.push(insert_records("deb_packages", &["sha256", "package", "version", "architecture", "source", "control"], &rows, 5));
    let stmts = apply_many(s, r2, &changes, vec![]);
    let (guard, rest) = stmts.split_first().unwrap();
    let mut batch = vec![guard.clone()];
    batch.extend(extra);
    batch.extend(rest.iter().cloned());
    assert!(batch.len() <= 7, "a few statements whatever the number of packages");
    db.batch(batch).unwrap();
    assert_eq!(db.count(&format!("SELECT COUNT(*) FROM site_blobs WHERE site_id = {s}")), 3);
    assert_eq!(db.count("SELECT COUNT(*) FROM deb_packages"), 3);
    let among = db.rows(paths_among(s, 1, r2, &["pool/p1.deb", "old.deb", "gone.deb", "nowhere.deb"]));
    let mut got: Vec<(String, String)> = among.into_iter().map(|r| match (&r[0], &r[1]) { (Text(p), Text(h)) => (p.clone(), h.clone()), _ => panic!() }).collect();
    got.sort();
    assert_eq!(got, vec![("old.deb".into(), crate::auth::sha256_hex(b"old")), ("pool/p1.deb".into(), shas[1].clone())], "the draft's view: gone.deb removed");
    db.activate(s, r2, Some(r1)).unwrap();
    assert!(db.serve("batch.test", "pool/p2.deb").is_some() && db.serve("batch.test", "gone.deb").is_none());
    // Not a draft any more: the batch is refused whole.
    assert!(db.batch(apply_many(s, r2, &changes, vec![])).is_err());
}

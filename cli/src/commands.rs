//! What each command does: API calls, then a table (or `--json`: the
//! API's answer as it came).

use crate::client::{Body, Client};
use crate::config::{self, Config, Overrides};
use crate::progress::{human_bytes, Progress};
use crate::publish::{self, Target};
use crate::table::{self, cell, time};
use crate::*;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::Read;

struct Ctx {
    client: Client,
    json: bool,
    site: Option<String>,
    progress: Progress,
}

impl Ctx {
    fn site(&self, arg: &SiteArg) -> Result<String> {
        arg.site.clone().or_else(|| self.site.clone()).context("which site? give --site (or set WHARF_SITE, or a profile's site)")
    }

    /// Prints the answer as JSON with `--json`; else runs `human`.
    fn show(&self, v: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
        } else {
            human(v);
        }
    }
}

fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let q: Vec<String> = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", crate::client::encode(v)))).collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let path = config::path()?;
    let mut cfg = Config::load(&path)?;
    let token_env = std::env::var("WHARF_TOKEN").ok().filter(|t| !t.trim().is_empty());
    match &cli.command {
        Command::Login { url, name, default } => return login(&mut cfg, &path, url, name, *default, token_env, cli.json),
        Command::Logout { name } => {
            if !cfg.remove(name) {
                bail!("no profile named {name:?}");
            }
            cfg.save(&path)?;
            eprintln!("removed profile {name}");
            return Ok(());
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "wharf", &mut out);
            // A reader that stops early (`| head`) is not an error.
            match std::io::Write::write_all(&mut std::io::stdout(), &out) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => return Ok(()),
            }
        }
        Command::Mirror(MirrorCmd::Validate { files }) => return validate(files, cli.json),
        _ => {}
    }
    let r = cfg.resolve(&Overrides { profile: cli.profile.clone(), url: cli.url.clone(), token: token_env, site: None })?;
    let ctx = Ctx { client: Client::new(&r.api, r.token), json: cli.json, site: r.site, progress: Progress::new(cli.quiet || cli.json) };
    match cli.command {
        Command::Login { .. } | Command::Logout { .. } | Command::Completions { .. } => unreachable!("handled above"),
        Command::Whoami => {
            let v = ctx.client.get("/whoami")?;
            ctx.show(&v, |v| println!("token {} ({} scope) on {} at {}", cell(&v["token"]), cell(&v["scope"]), v["site"].as_str().unwrap_or("every site"), ctx.client.api));
        }
        Command::Site(c) => site(&ctx, c)?,
        Command::Host(c) => host(&ctx, c)?,
        Command::Token(c) => token(&ctx, c)?,
        Command::Release(c) => release(&ctx, c)?,
        Command::Deb(c) => deb(&ctx, c)?,
        Command::Apk(c) => apk(&ctx, c)?,
        Command::Helm(HelmCmd::Add { site, repo, opts, files }) => {
            let s = ctx.site(&site)?;
            add(&ctx, &s, Target::Helm { repo }, &files, opts, None)?;
        }
        Command::Oci(c) => oci(&ctx, c)?,
        Command::Mirror(c) => mirror(&ctx, c)?,
        Command::Keys(KeysCmd::Show { site, host }) => {
            let s = ctx.site(&site)?;
            crate::keys::show(&ctx.client, &s, host.as_deref(), ctx.json)?;
        }
    }
    Ok(())
}

fn login(cfg: &mut Config, path: &std::path::Path, url: &str, name: &str, default: bool, token_env: Option<String>, json: bool) -> Result<()> {
    let token = match token_env {
        Some(t) => t,
        None => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                eprint!("token for {url}: ");
            }
            let mut t = String::new();
            std::io::stdin().read_line(&mut t)?;
            t.trim().to_string()
        }
    };
    if token.is_empty() {
        bail!("no token: pipe it on stdin or set WHARF_TOKEN");
    }
    let api = config::api_base(url)?;
    // Check it before storing it.
    let who = Client::new(&api, Some(token.clone())).get("/whoami").context("checking the token")?;
    cfg.set(name, config::Profile { url: url.trim_end_matches('/').to_string(), token, site: who["site"].as_str().map(String::from) });
    if default {
        cfg.default = Some(name.to_string());
    }
    cfg.save(path)?;
    if json {
        println!("{}", json!({"profile": name, "url": url, "whoami": who, "config": path}));
    } else {
        eprintln!(
            "logged in to {url} as token {} ({} scope{}); profile {name:?} saved in {}",
            cell(&who["token"]),
            cell(&who["scope"]),
            who["site"].as_str().map(|s| format!(", site {s}")).unwrap_or_default(),
            path.display()
        );
    }
    Ok(())
}

fn validate(files: &[std::path::PathBuf], json: bool) -> Result<()> {
    use wharf::sync::config::{parse, Part};
    let mut all = vec![];
    let mut summaries = vec![];
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let part = Part::of_file(&name).with_context(|| format!("{}: the mirror's files are images.yaml, charts.yaml or mirror.yaml (both in one)", f.display()))?;
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        match parse(&name, &text, part) {
            Ok(c) => summaries.push(json!({"file": name, "valid": true, "declared": c.summary()})),
            Err(problems) => {
                summaries.push(json!({"file": name, "valid": false, "problems": problems.iter().map(|p| json!({"file": p.file, "line": p.line, "column": p.column, "path": p.path, "message": p.message})).collect::<Vec<_>>()}));
                all.extend(problems);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&json!({"valid": all.is_empty(), "files": summaries}))?);
    } else {
        for p in &all {
            eprintln!("{p}");
        }
        if all.is_empty() {
            eprintln!("{} valid", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
        }
    }
    if !all.is_empty() {
        bail!("{} problem{} found", all.len(), if all.len() == 1 { "" } else { "s" });
    }
    Ok(())
}

fn site(ctx: &Ctx, c: SiteCmd) -> Result<()> {
    let rows = |v: &Value| -> Vec<Vec<String>> {
        v.as_array().into_iter().flatten().map(|s| vec![cell(&s["name"]), cell(&s["id"]), cell(&s["active_release"]), time(&s["created_at"])]).collect()
    };
    const H: [&str; 4] = ["NAME", "ID", "ACTIVE RELEASE", "CREATED"];
    match c {
        SiteCmd::Create { name } => {
            let v = ctx.client.json("POST", "/sites", &json!({"name": name}))?;
            ctx.show(&v, |v| println!("created site {} (id {})", cell(&v["name"]), cell(&v["id"])));
        }
        SiteCmd::List => {
            let v = ctx.client.get("/sites")?;
            ctx.show(&v, |v| table::print(&H, &rows(&v["sites"])));
        }
        SiteCmd::Show { name } => {
            let mut v = ctx.client.get(&format!("/sites/{name}"))?;
            v["hostnames"] = ctx.client.get(&format!("/sites/{name}/hostnames"))?["hostnames"].clone();
            ctx.show(&v, |v| {
                table::print(&H, &rows(&json!([v])));
                let hosts: Vec<String> = v["hostnames"].as_array().into_iter().flatten().map(|h| cell(&h["hostname"])).collect();
                println!("hostnames: {}", if hosts.is_empty() { "-".into() } else { hosts.join(", ") });
            });
        }
        SiteCmd::Delete { name, yes } => {
            if !yes {
                bail!("deleting site {name} removes everything it owns and cannot be undone: add --yes");
            }
            ctx.client.call("DELETE", &format!("/sites/{name}"), Body::None)?;
            ctx.show(&json!({"deleted": name}), |_| println!("deleted site {name}"));
        }
    }
    Ok(())
}

fn host(ctx: &Ctx, c: HostCmd) -> Result<()> {
    match c {
        HostCmd::Add { site, hostname } => {
            let s = ctx.site(&site)?;
            let v = ctx.client.call("PUT", &format!("/sites/{s}/hostnames/{hostname}"), Body::None)?;
            ctx.show(&v, |_| println!("{hostname} now serves site {s}"));
        }
        HostCmd::Rm { site, hostname } => {
            let s = ctx.site(&site)?;
            ctx.client.call("DELETE", &format!("/sites/{s}/hostnames/{hostname}"), Body::None)?;
            ctx.show(&json!({"removed": hostname}), |_| println!("{hostname} no longer serves site {s}"));
        }
        HostCmd::List { site } => {
            let s = ctx.site(&site)?;
            let v = ctx.client.get(&format!("/sites/{s}/hostnames"))?;
            ctx.show(&v, |v| {
                let rows: Vec<Vec<String>> = v["hostnames"].as_array().into_iter().flatten().map(|h| vec![cell(&h["hostname"]), time(&h["created_at"])]).collect();
                table::print(&["HOSTNAME", "ADDED"], &rows);
            });
        }
    }
    Ok(())
}

fn token(ctx: &Ctx, c: TokenCmd) -> Result<()> {
    match c {
        TokenCmd::Create { name, scope, site, expires_in } => {
            let mut body = json!({"name": name, "scope": scope});
            if let Some(s) = site {
                body["site"] = json!(s);
            }
            if let Some(e) = expires_in {
                body["expires_in"] = json!(e);
            }
            let v = ctx.client.json("POST", "/tokens", &body)?;
            ctx.show(&v, |v| {
                eprintln!("created token {} ({} scope{}); the secret is shown once:", cell(&v["id"]), cell(&v["scope"]), v["site"].as_str().map(|s| format!(" on {s}")).unwrap_or_default());
                println!("{}", cell(&v["token"]));
            });
        }
        TokenCmd::List { site } => {
            let v = ctx.client.get(&format!("/tokens{}", query(&[("site", &site)])))?;
            ctx.show(&v, |v| {
                let rows: Vec<Vec<String>> = v["tokens"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| vec![cell(&t["id"]), cell(&t["name"]), cell(&t["scope"]), cell(&t["site"]), time(&t["created_at"]), time(&t["expires_at"]), time(&t["revoked_at"])])
                    .collect();
                table::print(&["ID", "NAME", "SCOPE", "SITE", "CREATED", "EXPIRES", "REVOKED"], &rows);
            });
        }
        TokenCmd::Revoke { id } => {
            let v = ctx.client.call("DELETE", &format!("/tokens/{id}"), Body::None)?;
            ctx.show(&v, |_| println!("revoked token {id}"));
        }
    }
    Ok(())
}

fn release_rows(v: &Value) -> Vec<Vec<String>> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| vec![cell(&r["id"]), cell(&r["state"]), cell(&r["parent"]), time(&r["created_at"]), time(&r["activated_at"]), cell(&r["note"])])
        .collect()
}
const RELEASE_H: [&str; 6] = ["ID", "STATE", "FROM", "CREATED", "ACTIVATED", "NOTE"];

fn release(ctx: &Ctx, c: ReleaseCmd) -> Result<()> {
    match c {
        ReleaseCmd::List { site, limit } => {
            let s = ctx.site(&site)?;
            let v = ctx.client.get(&format!("/sites/{s}/releases?limit={limit}"))?;
            ctx.show(&v, |v| table::print(&RELEASE_H, &release_rows(&v["releases"])));
        }
        ReleaseCmd::Show { site, id, paths } => {
            let s = ctx.site(&site)?;
            let mut v = ctx.client.get(&format!("/sites/{s}/releases/{id}"))?;
            if paths {
                v["paths"] = Value::Array(ctx.client.all_pages(&format!("/sites/{s}/releases/{id}/paths"), "paths")?);
            }
            ctx.show(&v, |v| {
                let r = v.get("release").unwrap_or(v);
                table::print(&RELEASE_H, &release_rows(&json!([r])));
                if let Some(p) = v["paths"].as_array() {
                    println!();
                    let rows: Vec<Vec<String>> = p.iter().map(|p| vec![cell(&p["path"]), cell(&p["size"]), cell(&p["content_type"]), cell(&p["sha256"])]).collect();
                    table::print(&["PATH", "SIZE", "TYPE", "SHA256"], &rows);
                }
            });
        }
        ReleaseCmd::Diff { site, from, to } => {
            let s = ctx.site(&site)?;
            let changes = ctx.client.all_pages(&format!("/sites/{s}/releases/{from}/diff/{to}"), "changes")?;
            let v = json!({"from": from, "to": to, "changes": changes});
            ctx.show(&v, |v| {
                for c in v["changes"].as_array().into_iter().flatten() {
                    let mark = match c["change"].as_str() {
                        Some("added") => "+",
                        Some("removed") => "-",
                        _ => "~",
                    };
                    println!("{mark} {}", cell(&c["path"]));
                }
            });
        }
        ReleaseCmd::Create { site, from, note } => {
            let s = ctx.site(&site)?;
            let from = from.parse::<i64>().map(|n| json!(n)).unwrap_or(json!(from));
            let mut body = json!({"from": from});
            if let Some(n) = note {
                body["note"] = json!(n);
            }
            let v = ctx.client.json("POST", &format!("/sites/{s}/releases"), &body)?;
            ctx.show(&v, |v| println!("created draft {}", cell(&v["id"])));
        }
        ReleaseCmd::Activate { site, id } => {
            let s = ctx.site(&site)?;
            let v = ctx.client.json("POST", &format!("/sites/{s}/releases/{id}/activate"), &json!({}))?;
            ctx.show(&v, |_| println!("release {id} of {s} is active"));
        }
        ReleaseCmd::Rollback { site, to } => {
            let s = ctx.site(&site)?;
            let body = match to {
                Some(t) => json!({"to": t}),
                None => json!({}),
            };
            let v = ctx.client.json("POST", &format!("/sites/{s}/rollback"), &body)?;
            ctx.show(&v, |v| println!("rolled back {s}: release {} is active", cell(v.get("active_release").or(v.get("id")).unwrap_or(&Value::Null))));
        }
        ReleaseCmd::Delete { site, id } => {
            let s = ctx.site(&site)?;
            ctx.client.call("DELETE", &format!("/sites/{s}/releases/{id}"), Body::None)?;
            ctx.show(&json!({"deleted": id}), |_| println!("deleted draft {id}"));
        }
    }
    Ok(())
}

/// Publishes files and reports what changed and where users find it.
fn add(ctx: &Ctx, site: &str, target: Target, files: &[std::path::PathBuf], o: AddOpts, signer: Option<crate::sign::Signer>) -> Result<()> {
    let opts = publish::Options { jobs: o.jobs, no_activate: o.no_activate, replace: o.replace, signer, progress: ctx.progress };
    let out = publish::add(&ctx.client, site, &target, files, &opts)?;
    let rel = out.release.context("no release was made")?;
    let hosts = ctx.client.get(&format!("/sites/{site}/hostnames")).ok();
    let url = hosts
        .as_ref()
        .and_then(|h| h["hostnames"].as_array()?.first()?.get("hostname")?.as_str().map(|h| format!("https://{h}/")))
        .unwrap_or_default();
    let summary = json!({
        "site": site, "release": rel, "activated": out.activated, "files": files.len(),
        "uploaded": out.uploaded, "uploaded_bytes": out.uploaded_bytes, "by_digest": out.by_digest,
        "attempts": out.attempts, "unchanged": out.unchanged, "url": url, "packages": out.packages, "answer": out.answer,
    });
    ctx.show(&summary, |_| {
        let what = target.what();
        let sent = format!("{} uploaded ({}), {} already held", out.uploaded, human_bytes(out.uploaded_bytes), out.by_digest);
        if out.unchanged {
            println!("nothing changed: {site} publishes these {} {} already; release {rel} stays active", files.len(), plural(files.len(), what));
            return;
        }
        if out.activated {
            let again = if out.attempts > 1 { format!(" after {} tries", out.attempts) } else { String::new() };
            println!("published {} {} to {site}: release {rel} is active{again} ({sent})", files.len(), plural(files.len(), what));
            if !url.is_empty() {
                println!("{url}");
            }
        } else {
            println!("draft {rel} of {site} holds the {} {} ({sent}); activate it with: wharf release activate --site {site} {rel}", files.len(), plural(files.len(), what));
        }
        // What was added, as the server read each file.
        const SHOWN: usize = 20;
        for p in out.packages.iter().take(SHOWN) {
            let name = p.get("package").or(p.get("name")).map(cell).unwrap_or_default();
            let arch = p.get("architecture").or(p.get("arch")).map(|a| format!(" ({})", cell(a))).unwrap_or_default();
            println!("  + {name} {}{arch}", cell(&p["version"]));
        }
        if out.packages.len() > SHOWN {
            println!("  … and {} more", out.packages.len() - SHOWN);
        }
    });
    Ok(())
}

/// "packages" → "package" for one.
fn plural(n: usize, what: &str) -> &str {
    if n == 1 {
        what.strip_suffix('s').unwrap_or(what)
    } else {
        what
    }
}

fn deb(ctx: &Ctx, c: DebCmd) -> Result<()> {
    match c {
        DebCmd::Add { site, dist, component, opts, sign_with, sign_key, files } => {
            let s = ctx.site(&site)?;
            let signer = crate::sign::Signer::for_deb(sign_with.as_deref(), sign_key.as_deref())?;
            add(ctx, &s, Target::Deb { dist, component }, &files, opts, signer)?;
        }
        DebCmd::Sign { site, release, dist, sign_with, sign_key } => {
            let s = ctx.site(&site)?;
            let signer = crate::sign::Signer::for_deb(sign_with.as_deref(), sign_key.as_deref())?.context("give --sign-with KEYID or --sign-key FILE")?;
            let target = Target::Deb { dist: dist.clone(), component: String::new() };
            crate::sign::publish_and_sign(&ctx.client, &s, release, &target, &signer)?;
            ctx.show(&json!({"release": release, "dist": dist, "signed": true}), |_| println!("signed {dist} of draft {release}; activate it with: wharf release activate --site {s} {release}"));
        }
        DebCmd::Dist(DistCmd::Get { site, dist }) => {
            let s = ctx.site(&site)?;
            let v = ctx.client.get(&format!("/sites/{s}/deb/dists/{dist}"))?;
            ctx.show(&v, |v| println!("{}", serde_json::to_string_pretty(&v["config"]).expect("serialisable")));
        }
        DebCmd::Dist(DistCmd::Set { site, dist, origin, label, suite, codename, description, components, architectures, valid_until_days, by_hash_keep, signing, compressions }) => {
            let s = ctx.site(&site)?;
            let mut config = ctx.client.get(&format!("/sites/{s}/deb/dists/{dist}"))?["config"].clone();
            if !config.is_object() {
                config = json!({});
            }
            let set = [
                ("origin", origin.map(|v| json!(v))),
                ("label", label.map(|v| json!(v))),
                ("suite", suite.map(|v| json!(v))),
                ("codename", codename.map(|v| json!(v))),
                ("description", description.map(|v| json!(v))),
                ("components", components.map(|v| json!(v))),
                ("architectures", architectures.map(|v| json!(v))),
                ("valid_until_days", valid_until_days.map(|v| json!(v))),
                ("by_hash_keep", by_hash_keep.map(|v| json!(v))),
                ("signing", signing.map(|v| json!(v))),
                ("compressions", compressions.map(|v| json!(v))),
            ];
            for (k, v) in set {
                if let Some(v) = v {
                    config[k] = v;
                }
            }
            let v = ctx.client.json("PUT", &format!("/sites/{s}/deb/dists/{dist}"), &config)?;
            ctx.show(&v, |v| println!("{}", serde_json::to_string_pretty(&v["config"]).expect("serialisable")));
        }
    }
    Ok(())
}

fn apk(ctx: &Ctx, c: ApkCmd) -> Result<()> {
    match c {
        ApkCmd::Add { site, branch, repo, opts, sign_key, files } => {
            let s = ctx.site(&site)?;
            let signer = crate::sign::Signer::for_apk(sign_key.as_deref())?;
            add(ctx, &s, Target::Apk { branch, repo }, &files, opts, signer)?;
        }
        ApkCmd::Sign { site, release, branch, repo, sign_key } => {
            let s = ctx.site(&site)?;
            let signer = crate::sign::Signer::for_apk(Some(&sign_key))?.expect("a key");
            let target = Target::Apk { branch: branch.clone(), repo: repo.clone() };
            let published = crate::sign::publish_and_sign(&ctx.client, &s, release, &target, &signer)?;
            let signed = published["signing"]["waiting_for_signatures"].clone();
            ctx.show(&json!({"release": release, "signed": signed}), |_| {
                println!("signed {branch}/{repo} of draft {release} ({}); activate it with: wharf release activate --site {s} {release}", cell(&signed))
            });
        }
        ApkCmd::Settings { site, architectures, signing, key_name, description } => {
            let s = ctx.site(&site)?;
            let mut v = ctx.client.get(&format!("/sites/{s}/apk/settings"))?;
            if architectures.is_some() || signing.is_some() || key_name.is_some() || description.is_some() {
                let mut config = v["settings"].clone();
                if !config.is_object() {
                    config = json!({});
                }
                for (k, val) in [
                    ("architectures", architectures.map(|a| json!(a))),
                    ("signing", signing.map(|a| json!(a))),
                    ("key_name", key_name.map(|a| json!(a))),
                    ("description", description.map(|a| json!(a))),
                ] {
                    if let Some(val) = val {
                        config[k] = val;
                    }
                }
                v = ctx.client.json("PUT", &format!("/sites/{s}/apk/settings"), &config)?;
            }
            ctx.show(&v, |v| println!("{}", serde_json::to_string_pretty(&v["settings"]).expect("serialisable")));
        }
    }
    Ok(())
}

fn oci(ctx: &Ctx, c: OciCmd) -> Result<()> {
    match c {
        OciCmd::Settings(OciSettingsCmd::Get { site }) => {
            let s = ctx.site(&site)?;
            let v = ctx.client.get(&format!("/sites/{s}/oci/settings"))?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        OciCmd::Settings(OciSettingsCmd::Set { site, file }) => {
            let s = ctx.site(&site)?;
            let text = read_input(&file)?;
            let body: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            let v = ctx.client.json("PUT", &format!("/sites/{s}/oci/settings"), &body)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        OciCmd::Cache(OciCacheCmd::List { site, upstream, repository }) => {
            let s = ctx.site(&site)?;
            let q = query(&[("upstream", &upstream), ("repository", &repository)]);
            let entries = ctx.client.all_pages(&format!("/sites/{s}/oci/cache{q}"), "entries")?;
            let v = json!({"entries": entries});
            ctx.show(&v, |v| {
                let rows: Vec<Vec<String>> = v["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| vec![cell(&e["upstream"]), cell(&e["repository"]), cell(&e["kind"]), cell(&e["reference"]), cell(&e["sha256"]), time(&e["checked_at"])])
                    .collect();
                table::print(&["UPSTREAM", "REPOSITORY", "KIND", "REFERENCE", "SHA256", "CHECKED"], &rows);
            });
        }
        OciCmd::Cache(OciCacheCmd::Purge { site, upstream, repository }) => {
            let s = ctx.site(&site)?;
            let v = ctx.client.call("DELETE", &format!("/sites/{s}/oci/cache{}", query(&[("upstream", &upstream), ("repository", &repository)])), Body::None)?;
            ctx.show(&v, |v| println!("forgot {} cache entries", cell(&v["removed"])));
        }
    }
    Ok(())
}

fn read_input(file: &std::path::Path) -> Result<String> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    }
}

fn mirror(ctx: &Ctx, c: MirrorCmd) -> Result<()> {
    match c {
        MirrorCmd::Validate { .. } => unreachable!("offline, handled first"),
        MirrorCmd::Apply { site, files, wait } => {
            let s = ctx.site(&site)?;
            let mut answers = vec![];
            let mut run = None;
            for f in &files {
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let text = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                let path = if name.starts_with("mirror.") { format!("/sites/{s}/mirror/config") } else { format!("/sites/{s}/mirror/config/{name}") };
                let v = ctx.client.call("PUT", &path, Body::Bytes(&text, "application/yaml"))?;
                if let Some(r) = v["run"].as_i64() {
                    run = Some(r);
                }
                answers.push(v);
            }
            let v = json!({"applied": answers, "run": run});
            if !ctx.json {
                match run {
                    Some(r) => println!("stored; run {r} started"),
                    None => println!("stored; nothing changed, no run started"),
                }
            }
            match (wait, run) {
                (true, Some(r)) => follow(ctx, &s, r)?,
                _ => ctx.show(&v, |_| {}),
            }
        }
        MirrorCmd::Run { site, image, chart, wait } => {
            let s = ctx.site(&site)?;
            let mut body = json!({});
            if let Some(i) = image {
                body["image"] = json!(i);
            }
            if let Some(c) = chart {
                body["chart"] = json!(c);
            }
            let v = ctx.client.json("POST", &format!("/sites/{s}/mirror/runs"), &body)?;
            let id = v["id"].as_i64().context("the run has no id")?;
            if wait {
                follow(ctx, &s, id)?;
            } else {
                ctx.show(&v, |v| println!("run {id} {}", cell(&v["state"])));
            }
        }
        MirrorCmd::Runs { site, id: Some(id) } => {
            let s = ctx.site(&site)?;
            let v = ctx.client.get(&format!("/sites/{s}/mirror/runs/{id}"))?;
            ctx.show(&v, print_run);
        }
        MirrorCmd::Runs { site, id: None } => {
            let s = ctx.site(&site)?;
            let v = ctx.client.get(&format!("/sites/{s}/mirror/runs"))?;
            ctx.show(&v, |v| {
                let rows: Vec<Vec<String>> = v["runs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| vec![cell(&r["id"]), cell(&r["trigger"]), cell(&r["state"]), cell(&r["copied"]), cell(&r["skipped"]), cell(&r["failed"]), cell(&r["bytes"]), cell(&r["release"]), time(&r["started_at"])])
                    .collect();
                table::print(&["ID", "TRIGGER", "STATE", "COPIED", "SKIPPED", "FAILED", "BYTES", "RELEASE", "STARTED"], &rows);
            });
        }
    }
    Ok(())
}

fn print_run(v: &Value) {
    println!("run {}: {} (trigger {}, release {})", cell(&v["id"]), cell(&v["state"]), cell(&v["trigger"]), cell(&v["release"]));
    let rows: Vec<Vec<String>> =
        v["units"].as_array().into_iter().flatten().map(|u| vec![cell(&u["kind"]), cell(&u["name"]), cell(&u["version"]), cell(&u["state"]), cell(&u["reason"])]).collect();
    if !rows.is_empty() {
        table::print(&["KIND", "NAME", "VERSION", "STATE", "REASON"], &rows);
    }
}

/// Follows a run until it is done or failed; fails if the run failed.
fn follow(ctx: &Ctx, site: &str, id: i64) -> Result<()> {
    let mut last = String::new();
    loop {
        let v = ctx.client.get(&format!("/sites/{site}/mirror/runs/{id}"))?;
        let state = v["state"].as_str().unwrap_or("").to_string();
        let now = format!("run {id}: {state} {}", v.get("counts").map(|c| c.to_string()).unwrap_or_default());
        if now != last {
            ctx.progress.line(&now);
            last = now;
        }
        if state == "done" || state == "failed" {
            ctx.show(&v, print_run);
            if state == "failed" {
                bail!("run {id} failed");
            }
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

"""The `wharf` command-line tool, built from cli/ and run against the worker
on workerd: profiles, management, one-command publishing that apt-get and
the APK checks then accept, signing on the publisher's machine (gpg and a
key file), racing publishers, a malformed package, --json, rollback, diff,
offline mirror validation and the users' setup snippets."""

import hashlib
import json
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest
import requests
from apk import build_apk, check_index, rsa_key
from debian import Gpg, packages_text, quick_deb
from test_debian import apt_for
from test_helm import chart, verify_repository
from wharf import ADMIN_HOST, ROOT, Wharf

BIN = ROOT / "target" / "debug" / "wharf"


@pytest.fixture(scope="module")
def env(tmp_path_factory, hosts):
    subprocess.run(["cargo", "build", "--quiet", "-p", "wharf-cli"], cwd=ROOT, check=True)
    root = tmp_path_factory.mktemp("cli")
    key = Gpg(root / "server-gpg").generate("Wharf Archive <archive@example.com>")
    apk_key, _ = rsa_key(root / "apk-server")
    w = Wharf(root / "state", extra_vars={"DEB_SIGNING_KEY": key.secret_armored(), "APK_SIGNING_KEY": apk_key.read_text()})
    hosts.add(ADMIN_HOST)

    class Env:
        pass

    e = Env()
    e.root, e.wharf, e.url = root, w, f"http://{ADMIN_HOST}:{w.port}"
    e.config = root / "config.toml"
    yield e
    w.stop()


def wharf(env, *args, token=None, input=None, ok=True, extra_env=None):
    """Runs the CLI with the module's profile file; returns the process."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    e["WHARF_CONFIG"] = str(env.config)
    if token:
        e["WHARF_TOKEN"] = token
    e.update(extra_env or {})
    r = subprocess.run([str(BIN), *map(str, args)], env=e, input=input, capture_output=True, text=True, timeout=300)
    if ok is True:
        assert r.returncode == 0, f"wharf {' '.join(map(str, args))}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    elif ok is False:
        assert r.returncode != 0, f"wharf {' '.join(map(str, args))} should have failed:\n{r.stdout}\n{r.stderr}"
    return r


def jwharf(env, *args, **kw):
    return json.loads(wharf(env, "--json", *args, **kw).stdout)


def write(dir_: Path, files: dict[str, bytes]) -> list[Path]:
    dir_.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in files.items():
        (dir_ / name).write_bytes(data)
        out.append(dir_ / name)
    return out


def site_with_token(env, hosts, name: str, scope="publish") -> tuple[str, str]:
    """A site with a hostname, made through the CLI with the root token; returns (host, a token of the site)."""
    root = env.wharf.root_token
    host = hosts.add(f"{name}.wharf.test")
    wharf(env, "--url", env.url, "site", "create", name, token=root)
    wharf(env, "--url", env.url, "host", "add", "--site", name, host, token=root)
    t = jwharf(env, "--url", env.url, "token", "create", "--name", f"{name}-ci", "--scope", scope, "--site", name, token=root)
    return host, t["token"]


def test_login_profiles_and_whoami(env, hosts):
    root = env.wharf.root_token
    r = wharf(env, "login", "--url", env.url, "--name", "root", input=root + "\n")
    assert "logged in" in r.stderr
    mode = stat.S_IMODE(env.config.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert jwharf(env, "whoami") == {"token": "root", "scope": "admin", "site": None}
    host, tok = site_with_token(env, hosts, "cli-who")
    # A second profile, from WHARF_TOKEN; its site becomes the profile's default site.
    wharf(env, "login", "--url", env.url + "/api/v1/", "--name", "ci", token=tok)
    assert jwharf(env, "--profile", "ci", "whoami") == {"token": tok.split("_")[1], "scope": "publish", "site": "cli-who"}
    assert "root" in wharf(env, "whoami").stdout, "the first profile stays the default"
    # The environment overrides the profile; an unknown profile or a bad token fails with the server's code.
    assert jwharf(env, "whoami", token=tok)["site"] == "cli-who"
    r = wharf(env, "--profile", "nope", "whoami", ok=False)
    assert r.returncode == 1 and 'no profile named "nope"' in r.stderr
    r = wharf(env, "whoami", token="wharf_000000000000_" + "0" * 64, ok=False)
    assert "401 unauthorized" in r.stderr, r.stderr
    r = wharf(env, "login", "--url", env.url, "--name", "bad", input="not-a-token\n", ok=False)
    assert "401" in r.stderr and "bad" not in env.config.read_text()
    # The site's hostnames through the profile's site.
    listed = jwharf(env, "--profile", "ci", "host", "list")
    assert [h["hostname"] for h in listed["hostnames"]] == [host]
    sites = [s["name"] for s in jwharf(env, "site", "list")["sites"]]
    assert "cli-who" in sites
    assert "cli-who" in wharf(env, "site", "list").stdout.split()
    wharf(env, "logout", "--name", "ci")
    assert "[profiles.ci]" not in env.config.read_text()
    r = wharf(env, "site", "delete", "cli-who", ok=False)
    assert "--yes" in r.stderr
    wharf(env, "site", "delete", "cli-who", "--yes")
    assert "cli-who" not in [s["name"] for s in jwharf(env, "site", "list")["sites"]]


def test_deb_add_publishes_in_one_command_and_apt_installs(env, hosts, tmp_path):
    host, tok = site_with_token(env, hosts, "cli-apt")
    debs = {f"cli-pkg{i}_1.0_amd64.deb": quick_deb(f"cli-pkg{i}", "1.0", "amd64") for i in range(40)}
    files = write(tmp_path / "debs", debs)
    out = jwharf(env, "--url", env.url, "deb", "add", "--site", "cli-apt", "--dist", "stable", *files, token=tok)
    assert out["activated"] and out["uploaded"] == 40 and out["by_digest"] == 0, out
    assert out["url"] == f"https://{host}/"
    url = f"http://{host}:{env.wharf.port}/"
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(requests.get(url + "keys/wharf-archive-keyring.gpg").content)
    apt = apt_for(tmp_path / "apt", url, keyring)
    apt.run("update")
    assert apt.candidate("cli-pkg0") == "1.0" and apt.candidate("cli-pkg39") == "1.0"
    apt.run("download", "cli-pkg7")
    assert (apt.root / "downloads" / "cli-pkg7_1.0_amd64.deb").read_bytes() == debs["cli-pkg7_1.0_amd64.deb"]

    # Again with one new file: the site holds the others, which go by digest (not uploaded again).
    new = write(tmp_path / "more", {"cli-new_2.0_amd64.deb": quick_deb("cli-new", "2.0", "amd64")})
    r = wharf(env, "--url", env.url, "deb", "add", "--site", "cli-apt", "--dist", "stable", *files[:5], *new, token=tok)
    assert "1 uploaded" in r.stdout and "5 already held" in r.stdout and "release" in r.stdout, r.stdout
    assert r.stderr.count("uploading 1 file:") == 1, r.stderr  # progress as plain lines when not a terminal
    assert "  + cli-new 2.0 (amd64)" in r.stdout and "  + cli-pkg0 1.0 (amd64)" in r.stdout, r.stdout
    apt.run("update")
    assert apt.candidate("cli-new") == "2.0"
    # The same files again (a CI job run twice): nothing changes, no new release.
    active = jwharf(env, "--url", env.url, "site", "show", "cli-apt", token=tok)["active_release"]
    r = wharf(env, "--url", env.url, "deb", "add", "--site", "cli-apt", "--dist", "stable", *files[:5], *new, token=tok)
    assert f"nothing changed: cli-apt publishes these 6 packages already; release {active} stays active" in r.stdout, r.stdout
    assert jwharf(env, "--url", env.url, "site", "show", "cli-apt", token=tok)["active_release"] == active
    # One of them into another dist is a change (the pool file is shared, the dist's list is not).
    out = jwharf(env, "--url", env.url, "deb", "add", "--site", "cli-apt", "--dist", "testing", *new, token=tok)
    assert out["activated"] and not out["unchanged"] and out["release"] != active


def test_a_malformed_package_fails_the_command_and_nothing_is_activated(env, hosts, tmp_path):
    _, tok = site_with_token(env, hosts, "cli-bad")
    good = write(tmp_path / "g", {"ok_1.0_all.deb": quick_deb("cli-ok", "1.0", "all")})
    wharf(env, "--url", env.url, "deb", "add", "--site", "cli-bad", "--dist", "stable", *good, token=tok)
    before = jwharf(env, "--url", env.url, "site", "show", "cli-bad", token=tok)["active_release"]
    files = write(tmp_path / "b", {"fine_1.0_all.deb": quick_deb("cli-fine", "1.0", "all"), "junk_1.0_all.deb": b"!<arch>\nthis is no package"})
    r = wharf(env, "--url", env.url, "deb", "add", "--site", "cli-bad", "--dist", "stable", *files, token=tok, ok=False)
    assert r.returncode == 1
    assert "invalid_batch" in r.stderr and "junk_1.0_all.deb" in r.stderr, r.stderr
    after = jwharf(env, "--url", env.url, "site", "show", "cli-bad", token=tok)
    assert after["active_release"] == before
    releases = jwharf(env, "--url", env.url, "release", "list", "--site", "cli-bad", token=tok)["releases"]
    assert [r["state"] for r in releases].count("draft") == 0, releases
    # The same through the draft flow (one file already held): refused, and no draft left behind.
    r = wharf(env, "--url", env.url, "deb", "add", "--site", "cli-bad", "--dist", "stable", *good, *files, token=tok, ok=False)
    assert "junk_1.0_all.deb" in r.stderr
    releases = jwharf(env, "--url", env.url, "release", "list", "--site", "cli-bad", token=tok)["releases"]
    assert [r["state"] for r in releases].count("draft") == 0, releases
    assert jwharf(env, "--url", env.url, "site", "show", "cli-bad", token=tok)["active_release"] == before


def test_two_publishers_racing_both_land(env, hosts, tmp_path):
    host, tok = site_with_token(env, hosts, "cli-race")
    sets = []
    for who in ("a", "b", "c"):
        sets.append(write(tmp_path / who, {f"race-{who}{i}_1.0_all.deb": quick_deb(f"race-{who}{i}", "1.0", "all") for i in range(5)}))
    # Something held, so the racers take the draft flow (compare-and-swap in the CLI) as well as the one-request one.
    wharf(env, "--url", env.url, "deb", "add", "--site", "cli-race", "--dist", "stable", sets[2][0], token=tok)
    results = [None] * 3

    def go(i, files):
        results[i] = wharf(env, "--url", env.url, "--json", "deb", "add", "--site", "cli-race", "--dist", "stable", *files, token=tok, ok=None)

    threads = [threading.Thread(target=go, args=(i, files)) for i, files in enumerate(sets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert r.returncode == 0, r.stderr
    text = packages_text(env.wharf, host)
    for who in ("a", "b", "c"):
        for i in range(5):
            assert f"Package: race-{who}{i}\n" in text, (who, i)


def test_signing_on_the_publishers_machine_with_gpg_and_with_a_key_file(env, hosts, tmp_path):
    host, tok = site_with_token(env, hosts, "cli-sign", scope="admin")
    mine = Gpg(tmp_path / "mine").generate("Release Manager <rm@example.com>")
    wharf(env, "--url", env.url, "deb", "dist", "set", "--site", "cli-sign", "stable", "--signing", "client", "--origin", "Mine", token=tok)
    got = jwharf(env, "--url", env.url, "deb", "dist", "get", "--site", "cli-sign", "stable", token=tok)["config"]
    assert got["signing"] == "client" and got["origin"] == "Mine"
    requests.put(f"http://127.0.0.1:{env.wharf.port}/api/v1/sites/cli-sign/deb/key", data=mine.public(armor=True),
                 headers={"Host": ADMIN_HOST, "Authorization": f"Bearer {tok}"}).raise_for_status()
    fpr = mine.run("--with-colons", "--list-keys").decode().split("fpr:::::::::")[1].split(":")[0]
    files = write(tmp_path / "d1", {"signed-a_1.0_all.deb": quick_deb("signed-a", "1.0", "all")})
    out = jwharf(env, "--url", env.url, "deb", "add", "--site", "cli-sign", "--dist", "stable", "--sign-with", fpr, *files,
                 token=tok, extra_env={"GNUPGHOME": str(mine.home)})
    assert out["activated"], out
    url = f"http://{host}:{env.wharf.port}/"
    keyring = tmp_path / "mine.gpg"
    keyring.write_bytes(requests.get(url + "keys/wharf-archive-keyring.gpg").content)
    assert keyring.read_bytes() == mine.public(), "the site serves the publisher's key"
    apt = apt_for(tmp_path / "apt", url, keyring)
    apt.run("update")
    assert apt.candidate("signed-a") == "1.0"
    # The same key as an armored file, signed in-process (no gpg on the way).
    secret = tmp_path / "secret.asc"
    secret.write_text(mine.secret_armored())
    files = write(tmp_path / "d2", {"signed-b_1.0_all.deb": quick_deb("signed-b", "1.0", "all")})
    wharf(env, "--url", env.url, "deb", "add", "--site", "cli-sign", "--dist", "stable", "--sign-key", secret, *files, token=tok,
          extra_env={"WHARF_GPG": "/nonexistent/gpg"})
    apt.run("update")
    assert apt.candidate("signed-b") == "1.0"
    # A key the site does not know: refused by the server, nothing activated.
    stranger = Gpg(tmp_path / "stranger").generate("Stranger <s@example.com>")
    other = tmp_path / "stranger.asc"
    other.write_text(stranger.secret_armored())
    files = write(tmp_path / "d3", {"signed-c_1.0_all.deb": quick_deb("signed-c", "1.0", "all")})
    r = wharf(env, "--url", env.url, "deb", "add", "--site", "cli-sign", "--dist", "stable", "--sign-key", other, *files, token=tok, ok=False)
    assert "bad_signature" in r.stderr, r.stderr
    apt.run("update")
    assert apt.candidate("signed-c") in ("", "(none)")


def test_apk_add_with_server_and_client_signing(env, hosts, tmp_path):
    host, tok = site_with_token(env, hosts, "cli-apk", scope="admin")
    apks = {f"cli-apk{i}-1.0-r0.apk": build_apk(f"cli-apk{i}", "1.0-r0", "x86_64") for i in range(3)}
    out = jwharf(env, "--url", env.url, "apk", "add", "--site", "cli-apk", "--branch", "v3.20", *write(tmp_path / "a", apks), token=tok)
    assert out["activated"] and out["uploaded"] == 3
    # Client signing: the site's key is ours; the CLI signs each changed index here.
    key, pub = rsa_key(tmp_path / "mine")
    wharf(env, "--url", env.url, "apk", "settings", "--site", "cli-apk", "--signing", "client", token=tok)
    requests.put(f"http://127.0.0.1:{env.wharf.port}/api/v1/sites/cli-apk/apk/key", json={"public_key": pub.read_text()},
                 headers={"Host": ADMIN_HOST, "Authorization": f"Bearer {tok}"}).raise_for_status()
    more = {"cli-apk-more-2.0-r0.apk": build_apk("cli-apk-more", "2.0-r0", "x86_64")}
    out = jwharf(env, "--url", env.url, "apk", "add", "--site", "cli-apk", "--branch", "v3.20", "--sign-key", key, *write(tmp_path / "b", more), token=tok)
    assert out["activated"], out
    keys = [p for p in jwharf(env, "--url", env.url, "release", "show", "--site", "cli-apk", out["release"], "--paths", token=tok)["paths"]
            if p["path"].startswith("keys/apk/")]
    served = {k["path"].rsplit("/", 1)[1]: requests.get(f"http://{host}:{env.wharf.port}/{k['path']}").text.strip() for k in keys}
    key_name = next(name for name, text in served.items() if text == pub.read_text().strip())
    index = requests.get(f"http://{host}:{env.wharf.port}/v3.20/main/x86_64/APKINDEX.tar.gz").content
    _, records = check_index(index, pub, key_name, tmp_path)
    assert {r["P"] for r in records} == {"cli-apk0", "cli-apk1", "cli-apk2", "cli-apk-more"}
    # Without a key the client-signed repository cannot be activated: the command fails, the server says why.
    r = wharf(env, "--url", env.url, "apk", "add", "--site", "cli-apk", "--branch", "v3.20",
              *write(tmp_path / "c", {"x-1-r0.apk": build_apk("cli-x", "1-r0", "x86_64")}), token=tok, ok=False)
    assert "signed by you" in r.stderr, r.stderr


def test_helm_add_no_activate_release_activate_diff_and_rollback(env, hosts, tmp_path):
    host, tok = site_with_token(env, hosts, "cli-helm")
    one = write(tmp_path / "c1", {"web-1.0.0.tgz": chart("web", "1.0.0")})
    first = jwharf(env, "--url", env.url, "helm", "add", "--site", "cli-helm", "--repo", "stable", *one, token=tok)
    two = write(tmp_path / "c2", {"web-1.1.0.tgz": chart("web", "1.1.0")})
    r = wharf(env, "--url", env.url, "helm", "add", "--site", "cli-helm", "--repo", "stable", "--no-activate", *two, token=tok)
    draft = int(r.stdout.split("draft ")[1].split()[0])
    assert f"wharf release activate --site cli-helm {draft}" in r.stdout
    listed = jwharf(env, "--url", env.url, "release", "list", "--site", "cli-helm", token=tok)["releases"]
    assert {"id": draft, "state": "draft"}.items() <= next(x for x in listed if x["id"] == draft).items()
    wharf(env, "--url", env.url, "release", "activate", "--site", "cli-helm", draft, token=tok)
    index = verify_repository(env.wharf, host, "stable")
    assert index == {"web": ["1.1.0", "1.0.0"]}
    d = wharf(env, "--url", env.url, "release", "diff", "--site", "cli-helm", first["release"], draft, token=tok).stdout
    assert "+ stable/web-1.1.0.tgz" in d and "~ stable/index.yaml" in d, d
    wharf(env, "--url", env.url, "release", "rollback", "--site", "cli-helm", token=tok)
    index = verify_repository(env.wharf, host, "stable")
    assert index == {"web": ["1.0.0"]}
    table = wharf(env, "--url", env.url, "release", "list", "--site", "cli-helm", token=tok).stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "STATE", "FROM"]


def test_mirror_validate_offline_with_the_servers_rules(env, tmp_path):
    good = tmp_path / "images.yaml"
    good.write_text("images:\n  - name: 'library/alpine'\n    source_registry: 'docker.io'\n    versions: ['3.20']\n")
    wharf(env, "mirror", "validate", good)  # no URL, no token: offline
    bad = tmp_path / "bad" / "images.yaml"
    bad.parent.mkdir()
    bad.write_text("images:\n  - name: 'a'\n    source_registry: 'https://docker.io'\n    versions: '3.20'\n")
    r = wharf(env, "mirror", "validate", bad, ok=False)
    assert "images.yaml:3:" in r.stderr and "images[0].source_registry" in r.stderr and "2 problems" in r.stderr, r.stderr
    out = json.loads(wharf(env, "--json", "mirror", "validate", good, bad, ok=False).stdout)
    assert [f["valid"] for f in out["files"]] == [True, False] and len(out["files"][1]["problems"]) == 2


def test_keys_show_prints_what_users_paste(env, hosts, tmp_path):
    host, tok = site_with_token(env, hosts, "cli-keys")
    jwharf(env, "--url", env.url, "deb", "add", "--site", "cli-keys", "--dist", "stable",
           *write(tmp_path / "k", {"k_1.0_all.deb": quick_deb("cli-k", "1.0", "all")}), token=tok)
    out = wharf(env, "--url", env.url, "keys", "show", "--site", "cli-keys", token=tok).stdout
    assert f"curl -fsSL https://{host}/keys/wharf-archive-keyring.gpg | sudo tee /usr/share/keyrings/cli-keys-archive-keyring.gpg" in out
    assert "Suites: stable\nComponents: main\nSigned-By: /usr/share/keyrings/cli-keys-archive-keyring.gpg" in out
    # The deb822 stanza as printed, with its keyring, works for apt (the URL made local).
    stanza = out.split("<<'EOF'\n")[1].split("EOF")[0].replace(f"https://{host}/", f"http://{host}:{env.wharf.port}/")
    keyring = tmp_path / "cli-keys-archive-keyring.gpg"
    keyring.write_bytes(requests.get(f"http://{host}:{env.wharf.port}/keys/wharf-archive-keyring.gpg").content)
    stanza = stanza.replace("/usr/share/keyrings/cli-keys-archive-keyring.gpg", str(keyring))
    from debian import Apt
    apt = Apt(tmp_path / "apt")
    (apt.root / "etc/sources.list.d/cli-keys.sources").write_text(stanza)
    apt.run("update")
    assert apt.candidate("cli-k") == "1.0"


def test_tokens_registry_settings_and_cache(env, hosts, tmp_path):
    root = env.wharf.root_token
    host, tok = site_with_token(env, hosts, "cli-mgmt", scope="admin")
    made = jwharf(env, "--url", env.url, "token", "create", "--name", "reader", "--scope", "read", "--site", "cli-mgmt", "--expires-in", "3600", token=tok)
    listed = jwharf(env, "--url", env.url, "token", "list", "--site", "cli-mgmt", token=tok)["tokens"]
    assert {t["name"] for t in listed} == {"cli-mgmt-ci", "reader"}
    assert jwharf(env, "--url", env.url, "whoami", token=made["token"])["scope"] == "read"
    # A read token may not create tokens: the server's code, exit 1.
    r = wharf(env, "--url", env.url, "token", "create", "--name", "x", "--scope", "read", "--site", "cli-mgmt", token=made["token"], ok=False)
    assert r.returncode == 1 and "403" in r.stderr, r.stderr
    wharf(env, "--url", env.url, "token", "revoke", made["id"], token=tok)
    r = wharf(env, "--url", env.url, "whoami", token=made["token"], ok=False)
    assert "401" in r.stderr
    human = wharf(env, "--url", env.url, "token", "list", "--site", "cli-mgmt", token=tok).stdout
    assert human.splitlines()[0].split()[:4] == ["ID", "NAME", "SCOPE", "SITE"] and "reader" in human
    # Registry settings from a file and from stdin; the cache lists and purges.
    settings = tmp_path / "oci.json"
    settings.write_text(json.dumps({"anonymous_pull": False, "tag_ttl_seconds": 30}))
    wharf(env, "--url", env.url, "oci", "settings", "set", "--site", "cli-mgmt", settings, token=tok)
    got = json.loads(wharf(env, "--url", env.url, "oci", "settings", "get", "--site", "cli-mgmt", token=tok).stdout)
    assert got["settings"]["anonymous_pull"] is False and got["settings"]["tag_ttl_seconds"] == 30, got
    wharf(env, "--url", env.url, "oci", "settings", "set", "--site", "cli-mgmt", "-", token=tok, input='{"anonymous_pull": true}')
    got = json.loads(wharf(env, "--url", env.url, "oci", "settings", "get", "--site", "cli-mgmt", token=tok).stdout)
    assert got["settings"]["anonymous_pull"] is True
    r = wharf(env, "--url", env.url, "oci", "settings", "set", "--site", "cli-mgmt", "-", token=tok, input='{"upstreams": [{"url": "ftp://x"}]}', ok=False)
    assert "422" in r.stderr or "400" in r.stderr, r.stderr
    assert jwharf(env, "--url", env.url, "oci", "cache", "list", "--site", "cli-mgmt", token=tok) == {"entries": []}
    assert jwharf(env, "--url", env.url, "oci", "cache", "purge", "--site", "cli-mgmt", "--upstream", "x", token=tok) == {"removed": 0}


def test_mirror_apply_run_wait_and_runs(env, hosts, tmp_path):
    from test_mirror_runs import ChartRepo
    host, tok = site_with_token(env, hosts, "cli-mirror", scope="admin")
    repo = ChartRepo(tmp_path / "charts-src")
    try:
        repo.add("vault", "0.29.0", chart("vault", "0.29.0"))
        repo.add("vault", "0.30.0", chart("vault", "0.30.0"))
        charts = tmp_path / "charts.yaml"
        charts.write_text(f"charts:\n  - name: vault\n    versions: ['0.29.0']\n    repo_name: hashicorp\n    repo_url: '{repo.url}'\n")
        wharf(env, "mirror", "validate", charts)
        out = wharf(env, "--url", env.url, "mirror", "apply", "--site", "cli-mirror", "--wait", charts, token=tok).stdout
        assert "run " in out and "done" in out and "copied" in out, out
        assert verify_repository(env.wharf, host, "hashicorp") == {"vault": ["0.29.0"]}
        # A run by hand for one chart, followed; the runs listed, one shown as JSON.
        charts.write_text(charts.read_text().replace("['0.29.0']", "['0.29.0', '0.30.0']"))
        wharf(env, "--url", env.url, "mirror", "apply", "--site", "cli-mirror", charts, "--wait", token=tok)
        ran = jwharf(env, "--url", env.url, "mirror", "run", "--site", "cli-mirror", "--chart", "vault", "--wait", token=tok)
        assert ran["state"] == "done" and {u["state"] for u in ran["units"]} == {"skipped"}, ran
        runs = jwharf(env, "--url", env.url, "mirror", "runs", "--site", "cli-mirror", token=tok)["runs"]
        assert len(runs) == 3 and {r["state"] for r in runs} == {"done"}
        one = jwharf(env, "--url", env.url, "mirror", "runs", "--site", "cli-mirror", str(runs[0]["id"]), token=tok)
        assert one["id"] == runs[0]["id"]
        assert verify_repository(env.wharf, host, "hashicorp") == {"vault": ["0.30.0", "0.29.0"]}
    finally:
        repo.stop()


def test_signing_as_separate_steps_and_drafts_by_hand(env, hosts, tmp_path):
    """`wharf release create`, a package added into the draft (no activation),
    `wharf deb sign` / `wharf apk sign` on it, `wharf release activate`; and
    `wharf release delete` of a draft."""
    host, tok = site_with_token(env, hosts, "cli-steps", scope="admin")
    url = f"http://{host}:{env.wharf.port}/"
    # Debian, client-signed with a key file.
    mine = Gpg(tmp_path / "mine").generate("Steps <steps@example.com>")
    secret = tmp_path / "secret.asc"
    secret.write_text(mine.secret_armored())
    wharf(env, "--url", env.url, "deb", "dist", "set", "--site", "cli-steps", "stable", "--signing", "client", token=tok)
    requests.put(f"http://127.0.0.1:{env.wharf.port}/api/v1/sites/cli-steps/deb/key", data=mine.public(armor=True),
                 headers={"Host": ADMIN_HOST, "Authorization": f"Bearer {tok}"}).raise_for_status()
    files = write(tmp_path / "d", {"step_1.0_all.deb": quick_deb("cli-step", "1.0", "all")})
    out = jwharf(env, "--url", env.url, "deb", "add", "--site", "cli-steps", "--dist", "stable", "--no-activate", *files, token=tok)
    rel = out["release"]
    assert not out["activated"]
    r = wharf(env, "--url", env.url, "release", "activate", "--site", "cli-steps", rel, token=tok, ok=False)
    assert "409" in r.stderr and "signed by you" in r.stderr, r.stderr
    wharf(env, "--url", env.url, "deb", "sign", "--site", "cli-steps", "--release", rel, "--dist", "stable", "--sign-key", secret, token=tok)
    wharf(env, "--url", env.url, "release", "activate", "--site", "cli-steps", rel, token=tok)
    keyring = tmp_path / "mine.gpg"
    keyring.write_bytes(mine.public())
    apt = apt_for(tmp_path / "apt", url, keyring)
    apt.run("update")
    assert apt.candidate("cli-step") == "1.0"
    # APK, client-signed, signed as a separate step.
    key, pub = rsa_key(tmp_path / "apk")
    wharf(env, "--url", env.url, "apk", "settings", "--site", "cli-steps", "--signing", "client", "--architectures", "x86_64", token=tok)
    requests.put(f"http://127.0.0.1:{env.wharf.port}/api/v1/sites/cli-steps/apk/key", json={"public_key": pub.read_text()},
                 headers={"Host": ADMIN_HOST, "Authorization": f"Bearer {tok}"}).raise_for_status()
    out = jwharf(env, "--url", env.url, "apk", "add", "--site", "cli-steps", "--branch", "edge", "--no-activate",
                 *write(tmp_path / "a", {"s-1-r0.apk": build_apk("cli-apk-step", "1-r0", "x86_64")}), token=tok)
    signed = jwharf(env, "--url", env.url, "apk", "sign", "--site", "cli-steps", "--release", out["release"], "--branch", "edge", "--sign-key", key, token=tok)
    assert signed["signed"] == ["x86_64"], signed
    wharf(env, "--url", env.url, "release", "activate", "--site", "cli-steps", out["release"], token=tok)
    key_name = jwharf(env, "--url", env.url, "apk", "settings", "--site", "cli-steps", token=tok)
    index = requests.get(url + "edge/main/x86_64/APKINDEX.tar.gz").content
    served = [p["path"] for p in jwharf(env, "--url", env.url, "release", "show", "--site", "cli-steps", out["release"], "--paths", token=tok)["paths"]
              if p["path"].startswith("keys/apk/")]
    names = [p.rsplit("/", 1)[1] for p in served if requests.get(url + p).text.strip() == pub.read_text().strip()]
    _, records = check_index(index, pub, names[0], tmp_path)
    assert [r["P"] for r in records] == ["cli-apk-step"], key_name
    # A draft made by hand (from nothing), then deleted.
    draft = jwharf(env, "--url", env.url, "release", "create", "--site", "cli-steps", "--from", "empty", "--note", "scratch", token=tok)
    shown = jwharf(env, "--url", env.url, "release", "show", "--site", "cli-steps", draft["id"], token=tok)
    assert shown["state"] == "draft" and shown["note"] == "scratch" and shown["parent"] is None, shown
    wharf(env, "--url", env.url, "release", "delete", "--site", "cli-steps", draft["id"], token=tok)
    r = wharf(env, "--url", env.url, "release", "show", "--site", "cli-steps", draft["id"], token=tok, ok=False)
    assert "404" in r.stderr

"""The README's recipes, run as written (extracted from README.md, not copied)."""

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from debian import packages_text
from wharf import ROOT, Wharf

README = (ROOT / "README.md").read_text()
CLI_DIR = ROOT / "target" / "debug"


@pytest.fixture(scope="module", autouse=True)
def cli_built():
    subprocess.run(["cargo", "build", "--quiet", "-p", "wharf-cli"], cwd=ROOT, check=True)


def block_after(*headings: str) -> str:
    """The first ```sh block after the headings of the README (each searched after the one before)."""
    at = 0
    for h in headings:
        at = README.index(h, at)
    m = re.compile(r"```sh\n(.*?)```", re.S).search(README, at)
    assert m, f"no sh block after {headings!r}"
    return m.group(1)


def run_block(script: str, cwd: Path, env: dict) -> str:
    """Runs a block with the built `wharf` on PATH, its profiles in `cwd`, no WHARF_* from outside."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    base["PATH"] = f"{CLI_DIR}:{base['PATH']}"
    base["WHARF_CONFIG"] = str(cwd / "wharf-config.toml")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env={**base, **env},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the README's block failed:\n{script}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A worker as `make dev` runs it: the admin API on localhost."""
    w = Wharf(tmp_path_factory.mktemp("readme-state"), extra_vars={"ADMIN_HOSTNAMES": "localhost,127.0.0.1,admin.wharf.test"})
    yield w
    w.stop()


def test_using_it_locally_runs_as_pasted(local, tmp_path):
    script = block_after("## Using it locally").replace("<token>", local.root_token).replace(":8787", f":{local.port}")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("hello from wharf"), r.stdout
    # Pasted again into the same worker it fails loudly, with the server's message, not silently.
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and '"error"' in r.stdout, r.stdout + r.stderr


def test_an_empty_draft_is_not_activated_by_mistake(local):
    admin = local.admin
    admin.site("empty-draft")
    rel = admin.draft("empty-draft")
    err = admin.call("POST", f"/sites/empty-draft/releases/{rel}/activate", {}, expect=422)
    assert err["error"]["code"] == "empty_release"
    assert admin.call("POST", f"/sites/empty-draft/releases/{rel}/activate?allow_empty=true", {})["state"] == "active"


def test_make_dev_prints_the_readme_block():
    """`make dev` prints the block through scripts/readme-block: the same text."""
    out = subprocess.run([str(ROOT / "scripts/readme-block"), "## Using it locally"], capture_output=True, text=True, check=True).stdout
    assert out == block_after("## Using it locally")
    assert 'readme-block" "## Using it locally"' in (ROOT / "scripts/dev").read_text()


def test_the_local_keys_make_dev_creates_sign_what_is_published(tmp_path):
    """scripts/dev-keys (run by `make dev` on .dev.vars) makes keys the worker
    signs with: apt's gpgv accepts the Debian InRelease with the served keyring,
    openssl verifies the APK index with the served key."""
    from apk import build_apk, check_index
    from debian import build_deb

    env = tmp_path / "dev.vars"
    subprocess.run([str(ROOT / "scripts/dev-keys"), str(env)], check=True, capture_output=True)
    text = env.read_text()
    assert text.count("\n") == 2 and "DEB_SIGNING_KEY=" in text and "APK_SIGNING_KEY=" in text
    w = Wharf(tmp_path / "state", env_file=env)
    try:
        admin = w.admin
        admin.site("signed", "signed.local.test")
        rel = admin.draft("signed")
        deb = build_deb(tmp_path, "hello", "1.0", "amd64", "xz")
        admin.call("POST", f"/sites/signed/releases/{rel}/deb/stable/main/packages?sha256={hashlib.sha256(deb).hexdigest()}", data=deb,
                   expect=201, headers={"Content-Type": "application/vnd.debian.binary-package"})
        apk = build_apk("hello", "1.0-r0", "x86_64")
        admin.call("POST", f"/sites/signed/releases/{rel}/apk/v3.20/main/packages?sha256={hashlib.sha256(apk).hexdigest()}", data=apk,
                   expect=201, headers={"Content-Type": "application/octet-stream"})
        admin.activate("signed", rel)
        keyring = tmp_path / "keyring.gpg"
        keyring.write_bytes(w.get("signed.local.test", "/keys/wharf-archive-keyring.gpg").content)
        inrelease = tmp_path / "InRelease"
        inrelease.write_bytes(w.get("signed.local.test", "/dists/stable/InRelease").content)
        r = subprocess.run(["gpgv", "--keyring", str(keyring), str(inrelease)], capture_output=True, text=True)
        assert r.returncode == 0 and "Wharf local archive key" in r.stderr, r.stderr
        paths = [p["path"] for p in admin.call("GET", f"/sites/signed/releases/{rel}/paths")["paths"]]
        key_name = [p for p in paths if p.startswith("keys/apk/")][0].rsplit("/", 1)[1]
        pub = tmp_path / "apk.pub"
        pub.write_bytes(w.get("signed.local.test", f"/keys/apk/{key_name}").content)
        index = w.get("signed.local.test", "/v3.20/main/x86_64/APKINDEX.tar.gz").content
        _, records = check_index(index, pub, key_name, tmp_path)
        assert [rec["P"] for rec in records] == ["hello"]
    finally:
        w.stop()


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    """A worker set up as `make dev` sets one up (local keys), admin API on localhost."""
    tmp = tmp_path_factory.mktemp("recipes")
    subprocess.run([str(ROOT / "scripts/dev-keys"), str(tmp / "dev.vars")], check=True, capture_output=True)
    w = Wharf(tmp / "state", env_file=tmp / "dev.vars", extra_vars={"ADMIN_HOSTNAMES": "localhost,admin.wharf.test"})
    yield w
    w.stop()


def gpgv_ok(keyring: Path, signed: Path, data: Path | None = None) -> bool:
    return subprocess.run(["gpgv", "--keyring", str(keyring), str(signed), *([str(data)] if data else [])], capture_output=True).returncode == 0


def test_the_debian_recipes_run_as_written(recipes, tmp_path):
    from debian import Gpg, build_deb

    w, admin, host = recipes, recipes.admin, "apt.recipes.test"
    admin.site("apt", host)
    token = admin.make_token("publish", "apt").token
    api = f"http://localhost:{w.port}"
    (tmp_path / "dist").mkdir()
    for name in ("hello", "tool"):
        (tmp_path / "dist" / f"{name}.deb").write_bytes(build_deb(tmp_path, name, "1.0", "amd64", "xz"))
    # Publishing from CI with the CLI, with the server's key.
    ci = block_after("## Debian repositories", "### Publishing (from CI)").replace("https://admin.pkgs.example.com", api)
    assert ci.lstrip().startswith("export WHARF_URL=") and "wharf deb add" in ci
    run_block(ci, tmp_path, {"WHARF_TOKEN": token})
    (tmp_path / "keyring.gpg").write_bytes(w.get(host, "/keys/wharf-archive-keyring.gpg").content)
    (tmp_path / "InRelease").write_bytes(w.get(host, "/dists/stable/InRelease").content)
    assert gpgv_ok(tmp_path / "keyring.gpg", tmp_path / "InRelease")
    packages = packages_text(w, host)
    assert "Package: hello\n" in packages and "Package: tool\n" in packages
    # The same with curl, other packages.
    for name in ("hello", "tool"):
        (tmp_path / "dist" / f"{name}.deb").write_bytes(build_deb(tmp_path, f"{name}-curl", "1.0", "amd64", "xz"))
    curl = block_after("## Debian repositories", "### Publishing (from CI)", "**With curl**").replace("https://admin.pkgs.example.com", api)
    run_block(curl, tmp_path, {"WHARF_TOKEN": token})
    packages = packages_text(w, host)
    assert "Package: hello-curl\n" in packages and "Package: tool-curl\n" in packages and "Package: hello\n" in packages

    # Client-side signing, with a key that never reaches the server: the CLI, then curl step by step.
    gpg = Gpg(tmp_path / "gnupg").generate("Recipe Signer <signer@example.com>")
    admin.call("PUT", "/sites/apt/deb/dists/stable", {"signing": "client"})
    admin.call("PUT", "/sites/apt/deb/key", data=gpg.public(armor=True))
    keyid = gpg.run("--with-colons", "--list-keys").decode().split("fpr:::::::::")[1].split(":")[0]
    for f in (tmp_path / "dist").iterdir():
        f.unlink()
    (tmp_path / "dist" / "cli-signed.deb").write_bytes(build_deb(tmp_path, "cli-signed", "1.0", "amd64", "xz"))
    run_block(block_after("## Debian repositories", "**Client-side signing**"), tmp_path,
              {"WHARF_URL": api, "WHARF_TOKEN": token, "KEYID": keyid, "GNUPGHOME": str(tmp_path / "gnupg")})
    (tmp_path / "client.gpg").write_bytes(gpg.public())
    (tmp_path / "InRelease").write_bytes(w.get(host, "/dists/stable/InRelease").content)
    assert gpgv_ok(tmp_path / "client.gpg", tmp_path / "InRelease")
    assert "Package: cli-signed\n" in packages_text(w, host)
    rel = admin.draft("apt")
    deb = build_deb(tmp_path, "signed", "2.0", "amd64", "xz")
    admin.call("POST", f"/sites/apt/releases/{rel}/deb/stable/main/packages?sha256={hashlib.sha256(deb).hexdigest()}", data=deb,
               expect=201, headers={"Content-Type": "application/vnd.debian.binary-package"})
    signing = block_after("## Debian repositories", "**Client-side signing**", "**Step by step with curl**")
    run_block(signing, tmp_path, {"API": f"{api}/api/v1", "AUTH": f"Authorization: Bearer {token}", "REL": str(rel),
                                   "GNUPGHOME": str(tmp_path / "gnupg")})
    (tmp_path / "client.gpg").write_bytes(gpg.public())
    (tmp_path / "InRelease").write_bytes(w.get(host, "/dists/stable/InRelease").content)
    assert gpgv_ok(tmp_path / "client.gpg", tmp_path / "InRelease")
    assert "Package: signed\n" in packages_text(w, host)


def test_the_apk_recipes_run_as_written(recipes, tmp_path):
    from apk import build_apk, check_index, rsa_key

    w, admin, host = recipes, recipes.admin, "apk.recipes.test"
    admin.site("apk", host)
    admin.call("PUT", "/sites/apk/apk/settings", {"architectures": ["x86_64"]})
    token = admin.make_token("publish", "apk").token
    env = {"API": f"http://localhost:{w.port}/api/v1", "AUTH": f"Authorization: Bearer {token}"}
    (tmp_path / "packages/main/x86_64").mkdir(parents=True)
    for name in ("hello", "tool"):
        (tmp_path / "packages/main/x86_64" / f"{name}-1.0-r0.apk").write_bytes(build_apk(name, "1.0-r0", "x86_64"))
    cli_env = {"WHARF_URL": f"http://localhost:{w.port}", "WHARF_TOKEN": token}
    run_block(block_after("## APK repositories", "### Publishing (from CI)"), tmp_path, cli_env)
    for name in ("hello", "tool"):
        (tmp_path / "packages/main/x86_64" / f"{name}-1.0-r0.apk").write_bytes(build_apk(f"{name}-curl", "1.0-r0", "x86_64"))
    run_block(block_after("## APK repositories", "### Publishing (from CI)", "**With curl:**"), tmp_path, env)
    rel = admin.call("GET", "/sites/apk")["active_release"]
    paths = [p["path"] for p in admin.call("GET", f"/sites/apk/releases/{rel}/paths")["paths"]]
    key_name = [p for p in paths if p.startswith("keys/apk/")][0].rsplit("/", 1)[1]
    (tmp_path / "server.pub").write_bytes(w.get(host, f"/keys/apk/{key_name}").content)
    _, records = check_index(w.get(host, "/v3.20/main/x86_64/APKINDEX.tar.gz").content, tmp_path / "server.pub", key_name, tmp_path)
    assert sorted(r["P"] for r in records) == ["hello", "hello-curl", "tool", "tool-curl"]

    # Client-side signing with the recipe's key file name: the CLI, then curl step by step.
    key, pub = rsa_key(tmp_path, "my-key")
    key.rename(tmp_path / "my-key.rsa")
    admin.call("PUT", "/sites/apk/apk/settings", {"architectures": ["x86_64"], "signing": "client"})
    client_name = admin.call("PUT", "/sites/apk/apk/key", {"public_key": pub.read_text()})["key_name"]
    for f in (tmp_path / "packages/main/x86_64").iterdir():
        f.unlink()
    (tmp_path / "packages/main/x86_64/cli-signed-1.0-r0.apk").write_bytes(build_apk("cli-signed", "1.0-r0", "x86_64"))
    run_block(block_after("## APK repositories", "**Client-side signing**"), tmp_path, cli_env)
    _, records = check_index(w.get(host, "/v3.20/main/x86_64/APKINDEX.tar.gz").content, pub, client_name, tmp_path)
    assert "cli-signed" in [r["P"] for r in records]
    rel = admin.draft("apk")
    apk = build_apk("signed", "2.0-r0", "x86_64")
    admin.call("POST", f"/sites/apk/releases/{rel}/apk/v3.20/main/packages?sha256={hashlib.sha256(apk).hexdigest()}", data=apk,
               expect=201, headers={"Content-Type": "application/octet-stream"})
    run_block(block_after("## APK repositories", "**Client-side signing**", "**Step by step with curl**"), tmp_path, {**env, "REL": str(rel)})
    _, records = check_index(w.get(host, "/v3.20/main/x86_64/APKINDEX.tar.gz").content, pub, client_name, tmp_path)
    assert sorted(r["P"] for r in records) == ["cli-signed", "hello", "hello-curl", "signed", "tool", "tool-curl"]


def test_the_helm_recipe_runs_as_written(recipes, tmp_path):
    import yaml
    from test_helm import chart

    w, admin, host = recipes, recipes.admin, "charts.recipes.test"
    admin.site("charts", host)
    token = admin.make_token("publish", "charts").token
    env = {"API": f"http://localhost:{w.port}/api/v1", "AUTH": f"Authorization: Bearer {token}"}
    (tmp_path / "dist").mkdir()
    for name, version in (("web", "1.10.0"), ("api", "0.1.0")):
        (tmp_path / "dist" / f"{name}-{version}.tgz").write_bytes(chart(name, version))
    run_block(block_after("## Helm chart repositories", "### Publishing (from CI)"), tmp_path,
              {"WHARF_URL": f"http://localhost:{w.port}", "WHARF_TOKEN": token})
    index = yaml.safe_load(w.get(host, "/stable/index.yaml").text)
    assert {n: [v["version"] for v in vs] for n, vs in index["entries"].items()} == {"api": ["0.1.0"], "web": ["1.10.0"]}
    assert w.get(host, "/stable/web-1.10.0.tgz").content == (tmp_path / "dist/web-1.10.0.tgz").read_bytes()
    for f in (tmp_path / "dist").iterdir():
        f.unlink()
    (tmp_path / "dist" / "web-1.11.0.tgz").write_bytes(chart("web", "1.11.0"))
    run_block(block_after("## Helm chart repositories", "### Publishing (from CI)", "**With curl:**"), tmp_path, env)
    index = yaml.safe_load(w.get(host, "/stable/index.yaml").text)
    assert {n: [v["version"] for v in vs] for n, vs in index["entries"].items()} == {"api": ["0.1.0"], "web": ["1.11.0", "1.10.0"]}


def test_make_dev_serves_the_quickstart_over_http_and_registries_over_https(tmp_path, hosts):
    """scripts/dev (what `make dev` runs) with its state and .dev.vars moved
    aside: the README's block works on its plain-HTTP port, skopeo pushes and
    pulls over its HTTPS port, and what it prints is what the README says."""
    import time

    from test_oci import oci_layout, skopeo
    from wharf import free_port, stop_process_group

    port, https_port = free_port(), free_port()
    env = {**os.environ, "PORT": str(port), "HTTPS_PORT": str(https_port), "WHARF_STATE": str(tmp_path / "state"),
           "DEV_VARS": str(tmp_path / "dev.vars"), "WRANGLER_SEND_METRICS": "false"}
    log = open(tmp_path / "dev.log", "w")
    dev = subprocess.Popen([str(ROOT / "scripts/dev")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while True:
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: localhost",
                                f"http://127.0.0.1:{port}/api/v1/health"], capture_output=True, text=True)
            if r.stdout == "200":
                break
            assert dev.poll() is None and time.time() < deadline, (tmp_path / "dev.log").read_text()[-3000:]
            time.sleep(1)
        printed = (tmp_path / "dev.log").read_text()
        token = re.search(r"Root token: (\S+)", printed).group(1)
        assert "DEB_SIGNING_KEY=" in (tmp_path / "dev.vars").read_text()
        script = block_after("## Using it locally").replace("<token>", token).replace(":8787", f":{port}")
        for line in script.splitlines():
            assert line in printed, f"make dev does not print the README's line {line!r}"
        out = run_block(script, tmp_path, {})
        assert out.rstrip().endswith("hello from wharf"), out
        # A registry client over HTTPS, no TLS stall: push and pull a small image.
        hosts.add("demo.localhost")
        oci_layout(tmp_path / "img", "v1", {"hi.txt": b"hi\n"})
        ref = f"docker://demo.localhost:{https_port}/app:v1"
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", f"ci:{token}", f"oci:{tmp_path / 'img'}:v1", ref)
        info = json.loads(skopeo("inspect", "--tls-verify=false", ref).stdout)
        assert info["Digest"].startswith("sha256:")
    finally:
        stop_process_group(dev)
        log.close()


def test_the_tests_the_readme_names_exist():
    """`What the tests prove` names tests; each must still exist."""
    text = (ROOT / "README.md").read_text().split("## What the tests prove", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(tests/e2e/[\w/]+\.py)::(test_\w+)`", text)
    assert len(named) >= 20, named
    for path, test in named:
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {test}\(", source, re.M), f"README names {path}::{test}, which does not exist"


def test_the_cli_block_runs_as_pasted(recipes, tmp_path):
    script = block_after("## The wharf CLI").replace("<token>", recipes.root_token).replace(":8787", f":{recipes.port}")
    out = run_block(script, tmp_path, {})
    assert "published 1 package to cli-demo" in out, out
    assert "Signed-By: /usr/share/keyrings/cli-demo-archive-keyring.gpg" in out, out
    assert "Package: hello\n" in packages_text(recipes, "cli-demo.localhost")
    assert 'readme-block" "## The wharf CLI"' in (ROOT / "scripts/dev").read_text()

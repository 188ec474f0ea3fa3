"""The README's recipes, run as written (extracted from README.md, not copied)."""

import hashlib
import re
import subprocess

import pytest
from wharf import ROOT, Wharf

README = (ROOT / "README.md").read_text()


def block_after(heading: str) -> str:
    """The first ```sh block after a heading of the README."""
    at = README.index(heading)
    m = re.compile(r"```sh\n(.*?)```", re.S).search(README, at)
    assert m, f"no sh block after {heading!r}"
    return m.group(1)


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

"""Debian repositories proven with the real apt-get, gpgv and dpkg-deb."""

import gzip
import lzma
import subprocess
from pathlib import Path

import pytest
import requests
from debian import Apt, Gpg, StagingProxy, build_deb, sha256
from wharf import Wharf



@pytest.fixture(scope="module")
def server_key(tmp_path_factory):
    return Gpg(tmp_path_factory.mktemp("gpg-server")).generate("Wharf Archive <archive@example.com>")


@pytest.fixture(scope="module")
def debwharf(tmp_path_factory, server_key):
    w = Wharf(tmp_path_factory.mktemp("deb-state"), extra_vars={"DEB_SIGNING_KEY": server_key.secret_armored()})
    yield w
    w.stop()


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    d = tmp_path_factory.mktemp("debs")
    return {
        "hello1": build_deb(d, "wharf-hello", "1.0", "all", "gzip"),
        "hello2": build_deb(d, "wharf-hello", "2.0", "all", "gzip"),
        "tool": build_deb(d, "wharf-tool", "1.0-1", "amd64", "xz", "Depends: wharf-hello\n"),
        "lib": build_deb(d, "libwharf1", "1:0.9", "amd64", "zstd", "Source: wharf-src (0.9)\n"),
        "arm": build_deb(d, "wharf-tool", "1.0-1", "arm64", "xz"),
    }


def upload_raw(admin, site, rel, deb: bytes, dist="stable", comp="main", expect=201, **params):
    q = "&".join([f"sha256={sha256(deb)}"] + [f"{k}={v}" for k, v in params.items()])
    return admin.call("POST", f"/sites/{site}/releases/{rel}/deb/{dist}/{comp}/packages?{q}", data=deb, expect=expect,
                      headers={"Content-Type": "application/vnd.debian.binary-package"})


def apt_for(tmp: Path, url: str, keyring: Path, dist="stable") -> Apt:
    apt = Apt(tmp)
    apt.sources(f"deb [signed-by={keyring}] {url} {dist} main")
    return apt


def test_apt_installs_from_a_signed_repository(debwharf, hosts, debs, tmp_path, unique):
    w, admin = debwharf, debwharf.admin
    host = hosts.add(f"{unique}-apt.wharf.test")
    admin.site(unique, host)
    rel = admin.draft(unique)
    upload_raw(admin, unique, rel, debs["hello1"])
    admin.blob(debs["tool"])
    out = admin.call("POST", f"/sites/{unique}/releases/{rel}/deb/stable/main/packages", {"sha256": sha256(debs["tool"])}, expect=201)
    assert out["filename"] == "pool/main/w/wharf-tool/wharf-tool_1.0-1_amd64.deb"
    lib = upload_raw(admin, unique, rel, debs["lib"])
    assert lib["filename"] == "pool/main/w/wharf-src/libwharf1_0.9_amd64.deb"
    admin.activate(unique, rel)

    url = f"http://{host}:{w.port}/"
    keyring = tmp_path / "wharf-archive-keyring.gpg"
    subprocess.run(["curl", "-sSf", "-o", str(keyring), url + "keys/wharf-archive-keyring.gpg"], check=True)
    apt = apt_for(tmp_path / "apt", url, keyring)
    r = apt.run("update")
    assert "stable InRelease" in r.stdout
    assert apt.candidate("wharf-hello") == "1.0"
    assert apt.candidate("wharf-tool") == "1.0-1"
    assert apt.candidate("libwharf1") == "1:0.9"
    apt.run("download", "wharf-tool", "libwharf1")
    got = sorted(p.name for p in (apt.root / "downloads").iterdir())
    assert got == ["libwharf1_1%3a0.9_amd64.deb", "wharf-tool_1.0-1_amd64.deb"]
    assert (apt.root / "downloads" / "wharf-tool_1.0-1_amd64.deb").read_bytes() == debs["tool"]

    # gpgv accepts the signatures with the served keyring (binary) and the armored one too.
    inrelease = tmp_path / "InRelease"
    inrelease.write_bytes(requests.get(url + "dists/stable/InRelease").content)
    release = tmp_path / "Release"
    release.write_bytes(requests.get(url + "dists/stable/Release").content)
    sig = tmp_path / "Release.gpg"
    sig.write_bytes(requests.get(url + "dists/stable/Release.gpg").content)
    assert subprocess.run(["gpgv", "--keyring", str(keyring), str(inrelease)], capture_output=True).returncode == 0
    assert subprocess.run(["gpgv", "--keyring", str(keyring), str(sig), str(release)], capture_output=True).returncode == 0
    # The armored key is the same key: the same packets once dearmored.
    asc = requests.get(url + "keys/wharf-archive-keyring.asc").content
    assert asc.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    dearmored = subprocess.run(["gpg", "--dearmor"], input=asc, capture_output=True, check=True).stdout
    assert dearmored == keyring.read_bytes()

    # Every index is served by hash, and the Release is right about each.
    text = release.read_text()
    assert "Acquire-By-Hash: yes" in text and "Architectures: amd64" in text and "Components: main" in text
    # The uncompressed Packages is listed (apt checks what it decompresses
    # against it) but, as in Debian's archive, only .xz and .gz are served.
    listed = {}
    for line in text.split("SHA256:\n")[1].strip().splitlines():
        digest, size, path = line.split()
        listed[path] = (digest, int(size))
        if path.endswith("/Packages"):
            assert requests.get(f"{url}dists/stable/{path}").status_code == 404
            continue
        body = requests.get(f"{url}dists/stable/{path}").content
        assert sha256(body) == digest and len(body) == int(size)
        byhash = requests.get(f"{url}dists/stable/{path.rsplit('/', 1)[0]}/by-hash/SHA256/{digest}")
        assert byhash.status_code == 200 and byhash.content == body
        assert "immutable" in byhash.headers["Cache-Control"]
    assert sorted(listed) == ["main/binary-amd64/Packages", "main/binary-amd64/Packages.gz", "main/binary-amd64/Packages.xz"]
    packages = gzip.decompress(requests.get(url + "dists/stable/main/binary-amd64/Packages.gz").content).decode()
    assert lzma.decompress(requests.get(url + "dists/stable/main/binary-amd64/Packages.xz").content).decode() == packages
    assert (sha256(packages.encode()), len(packages.encode())) == listed["main/binary-amd64/Packages"]
    assert "Description: test package wharf-hello\n a package made by the Wharf tests.\n" in packages

    # A release switch lands between apt's InRelease fetch and its index fetch:
    # stock apt (no options) asks for the indexes the old InRelease lists by
    # hash, and gets them from the new release. The proxy sees every request.
    old_inrelease = requests.get(url + "dists/stable/InRelease").text
    old_xz_digest = [l.split()[0] for l in old_inrelease.splitlines() if l.strip().endswith("main/binary-amd64/Packages.xz")][0]
    rel2 = admin.draft(unique)
    upload_raw(admin, unique, rel2, debs["hello2"])
    proxy = StagingProxy(w.port)
    switched = []
    proxy.after_inrelease = lambda: switched.append(admin.activate(unique, rel2)["state"])
    try:
        apt2 = apt_for(tmp_path / "apt-byhash", url, keyring)
        apt2.run("update", *proxy.option)
    finally:
        proxy.stop()
    assert switched == ["active"], "the switch happened during apt's update"
    fetched = [(p, st) for m, p, st in proxy.log if m == "GET"]
    assert (f"/dists/stable/main/binary-amd64/by-hash/SHA256/{old_xz_digest}", 200) in fetched, fetched
    assert all(st == 200 for _, st in fetched), fetched
    assert not [p for p, _ in fetched if p.rsplit("/", 1)[-1].startswith("Packages")], f"apt fell back to plain indexes: {fetched}"
    assert apt2.candidate("wharf-hello") == "1.0", "apt used the generation its InRelease named"
    apt.run("update")
    assert apt.candidate("wharf-hello") == "2.0"
    # The old generation stays reachable by hash for clients that read the old InRelease.
    old = requests.get(f"{url}dists/stable/main/binary-amd64/by-hash/SHA256/{old_xz_digest}")
    assert old.status_code == 200 and sha256(old.content) == old_xz_digest
    back = admin.call("POST", f"/sites/{unique}/rollback", {})
    assert back["rolled_back_to"] == rel and back["state"] == "active"
    apt.run("update")
    assert apt.candidate("wharf-hello") == "1.0"
    # The rolled-back contents are exactly the earlier release's, Release files aside.
    diff = admin.call("GET", f"/sites/{unique}/releases/{rel}/diff/{back['id']}")["changes"]
    assert {d["path"] for d in diff} <= {"dists/stable/Release", "dists/stable/InRelease", "dists/stable/Release.gpg"}


def test_apt_refuses_a_wrong_or_unknown_key(debwharf, hosts, debs, tmp_path, unique):
    w, admin = debwharf, debwharf.admin
    host = hosts.add(f"{unique}-apt.wharf.test")
    admin.site(unique, host)
    rel = admin.draft(unique)
    upload_raw(admin, unique, rel, debs["hello1"])
    admin.activate(unique, rel)
    url = f"http://{host}:{w.port}/"
    other = Gpg(tmp_path / "other").generate("Someone Else <else@example.com>")
    wrong = tmp_path / "wrong.gpg"
    wrong.write_bytes(other.public())
    apt = apt_for(tmp_path / "apt", url, wrong)
    r = apt.run("update", check=False)
    assert r.returncode != 0 or "W:" in r.stdout + r.stderr
    assert "NO_PUBKEY" in r.stdout + r.stderr or "not signed" in r.stdout + r.stderr
    assert apt.candidate("wharf-hello") in ("", "(none)")
    # A tampered InRelease fails gpgv with the right key.
    good = tmp_path / "good.gpg"
    good.write_bytes(requests.get(url + "keys/wharf-archive-keyring.gpg").content)
    tampered = tmp_path / "InRelease"
    tampered.write_text(requests.get(url + "dists/stable/InRelease").text.replace("Suite: stable", "Suite: evil"))
    assert subprocess.run(["gpgv", "--keyring", str(good), str(tampered)], capture_output=True).returncode != 0


def test_client_side_signing(debwharf, hosts, debs, tmp_path, unique):
    w, admin = debwharf, debwharf.admin
    host = hosts.add(f"{unique}-apt.wharf.test")
    admin.site(unique, host)
    mine = Gpg(tmp_path / "mine").generate("Release Manager <rm@example.com>")
    admin.call("PUT", f"/sites/{unique}/deb/dists/stable", {"signing": "client", "origin": "Mine", "architectures": ["amd64", "arm64"]})
    admin.call("PUT", f"/sites/{unique}/deb/key", data=mine.public(armor=True))
    rel = admin.draft(unique)
    upload_raw(admin, unique, rel, debs["tool"])
    upload_raw(admin, unique, rel, debs["arm"])
    err = admin.call("POST", f"/sites/{unique}/releases/{rel}/activate", {}, expect=409)
    assert "signed by you" in err["error"]["message"]
    pub = admin.call("POST", f"/sites/{unique}/releases/{rel}/deb/stable/publish")
    assert pub["signing"].startswith("waiting")
    err = admin.call("POST", f"/sites/{unique}/releases/{rel}/activate", {}, expect=409)
    assert "waits for InRelease" in err["error"]["message"]
    release = admin.call("GET", f"/sites/{unique}/releases/{rel}/deb/stable/Release")["release"]
    assert "Origin: Mine" in release and "Architectures: amd64 arm64" in release

    # Signatures over other content, or by another key, are refused.
    forged = mine.run("--clearsign", input=(release + "Extra: injected\n").encode()).decode()
    detached = mine.run("--armor", "--detach-sign", input=release.encode()).decode()
    admin.call("PUT", f"/sites/{unique}/releases/{rel}/deb/stable/signatures", {"inrelease": forged, "release_gpg": detached}, expect=422)
    stranger = Gpg(tmp_path / "stranger").generate("Stranger <s@example.com>")
    inrelease = mine.run("--clearsign", input=release.encode()).decode()
    for bad in ({"inrelease": stranger.run("--clearsign", input=release.encode()).decode(), "release_gpg": detached},
                {"inrelease": inrelease, "release_gpg": stranger.run("--armor", "--detach-sign", input=release.encode()).decode()},
                {"inrelease": inrelease, "release_gpg": mine.run("--armor", "--detach-sign", input=(release + "X: y\n").encode()).decode()}):
        err = admin.call("PUT", f"/sites/{unique}/releases/{rel}/deb/stable/signatures", bad, expect=422)
        assert err["error"]["code"] == "bad_signature", err
    admin.call("POST", f"/sites/{unique}/releases/{rel}/activate", {}, expect=409)  # still waiting

    admin.call("PUT", f"/sites/{unique}/releases/{rel}/deb/stable/signatures", {"inrelease": inrelease, "release_gpg": detached})
    admin.activate(unique, rel)

    url = f"http://{host}:{w.port}/"
    keyring = tmp_path / "mine.gpg"
    keyring.write_bytes(requests.get(url + "keys/wharf-archive-keyring.gpg").content)
    apt = apt_for(tmp_path / "apt", url, keyring)
    apt.run("update")
    assert apt.candidate("wharf-tool") == "1.0-1"
    apt.run("download", "wharf-tool")

    # The detached signature as apt checks it: with InRelease hidden (a mirror
    # that lacks it), apt falls back to Release + Release.gpg and accepts them.
    proxy = StagingProxy(w.port)
    proxy.hide = ("/InRelease",)
    try:
        apt2 = apt_for(tmp_path / "apt-detached", url, keyring)
        r = apt2.run("update", *proxy.option)
    finally:
        proxy.stop()
    fetched = [(p, st) for m, p, st in proxy.log if m == "GET"]
    assert ("/dists/stable/InRelease", 404) in fetched, fetched
    assert ("/dists/stable/Release", 200) in fetched and ("/dists/stable/Release.gpg", 200) in fetched, fetched
    assert "W:" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert apt2.candidate("wharf-tool") == "1.0-1"


def test_ingest_errors_and_removal(debwharf, debs, unique, tmp_path):
    admin = debwharf.admin
    admin.site(unique, f"{unique}.wharf.test")
    rel = admin.draft(unique)
    junk = b"this is not a debian package at all"
    err = upload_raw(admin, unique, rel, junk, expect=422)
    assert "ar archive" in err["error"]["message"]
    no_version = build_deb(tmp_path, "broken", "1.0", "all", "gzip")
    # Corrupt the control member: still an ar archive, but its control.tar.gz is garbage.
    bad = bytearray(no_version)
    bad[140:200] = b"\0" * 60
    upload_raw(admin, unique, rel, bytes(bad), expect=422)
    upload_raw(admin, unique, rel, debs["hello1"])
    # Same name, version and architecture with other bytes: refused unless replaced.
    other = build_deb(tmp_path, "wharf-hello", "1.0", "all", "xz")
    upload_raw(admin, unique, rel, other, expect=409)
    upload_raw(admin, unique, rel, other, replace="true")
    listed = admin.call("GET", f"/sites/{unique}/releases/{rel}/deb/stable/packages")["packages"]
    assert [(p["package"], p["sha256"]) for p in listed] == [("wharf-hello", sha256(other))]
    # Several versions coexist.
    upload_raw(admin, unique, rel, debs["hello2"])
    assert len(admin.call("GET", f"/sites/{unique}/releases/{rel}/deb/stable/packages")["packages"]) == 2
    admin.call("DELETE", f"/sites/{unique}/releases/{rel}/deb/stable/main/packages/wharf-hello/1.0/all", expect=204)
    admin.call("DELETE", f"/sites/{unique}/releases/{rel}/deb/stable/main/packages/wharf-hello/1.0/all", expect=404)
    paths = [p["path"] for p in admin.call("GET", f"/sites/{unique}/releases/{rel}/paths")["paths"]]
    assert "pool/main/w/wharf-hello/wharf-hello_1.0_all.deb" not in paths
    assert "pool/main/w/wharf-hello/wharf-hello_2.0_all.deb" in paths
    # A pool file two dists list stays until the last of them drops it.
    upload_raw(admin, unique, rel, debs["hello2"], dist="testing")
    pool2 = "pool/main/w/wharf-hello/wharf-hello_2.0_all.deb"
    admin.call("DELETE", f"/sites/{unique}/releases/{rel}/deb/testing/main/packages/wharf-hello/2.0/all", expect=204)
    assert pool2 in [p["path"] for p in admin.call("GET", f"/sites/{unique}/releases/{rel}/paths")["paths"]]
    # A component left without packages loses its indexes at the next publish.
    upload_raw(admin, unique, rel, debs["tool"], comp="contrib")
    admin.call("POST", f"/sites/{unique}/releases/{rel}/deb/stable/publish")
    contrib = "dists/stable/contrib/binary-amd64/Packages.xz"
    assert contrib in [p["path"] for p in admin.call("GET", f"/sites/{unique}/releases/{rel}/paths")["paths"]]
    admin.call("DELETE", f"/sites/{unique}/releases/{rel}/deb/stable/contrib/packages/wharf-tool/1.0-1/amd64", expect=204)
    admin.call("POST", f"/sites/{unique}/releases/{rel}/deb/stable/publish")
    paths = [p["path"] for p in admin.call("GET", f"/sites/{unique}/releases/{rel}/paths")["paths"]]
    assert not any(p.startswith("dists/stable/contrib/binary-amd64/Packages") or p.startswith("pool/contrib/") for p in paths), paths
    # Internal bookkeeping paths are never served.
    admin.activate(unique, rel)
    assert debwharf.get(f"{unique}.wharf.test", "/_wharf/deb/stable/main/wharf-hello_2.0_all.deb").status_code == 404
    assert debwharf.get(f"{unique}.wharf.test", "/pool/main/w/wharf-hello/wharf-hello_2.0_all.deb").content == debs["hello2"]


def test_apt_with_an_rsa4096_key_and_a_signing_subkey(tmp_path, hosts, debs, unique):
    key = Gpg(tmp_path / "rsa")
    key.run("--quick-gen-key", "Wharf RSA Archive <rsa@example.com>", "rsa4096", "cert", "never")
    fpr = [l for l in key.run("--with-colons", "--list-secret-keys").decode().splitlines() if l.startswith("fpr:")][0].split(":")[9]
    key.run("--quick-add-key", fpr, "rsa4096", "sign", "never")
    w = Wharf(tmp_path / "state", extra_vars={"DEB_SIGNING_KEY": key.secret_armored()})
    try:
        host = hosts.add(f"{unique}-rsa.wharf.test")
        w.admin.site(unique, host)
        rel = w.admin.draft(unique)
        upload_raw(w.admin, unique, rel, debs["tool"])
        w.admin.activate(unique, rel)
        url = f"http://{host}:{w.port}/"
        keyring = tmp_path / "keyring.gpg"
        keyring.write_bytes(key.public())  # the user's own export of the key works as signed-by
        apt = apt_for(tmp_path / "apt", url, keyring)
        apt.run("update")
        assert apt.candidate("wharf-tool") == "1.0-1"
    finally:
        w.stop()


def test_a_published_pool_file_never_gets_other_bytes(debwharf, debs, unique, tmp_path):
    """Pool files are served `immutable` (cached for a year): once published,
    their path never gets other bytes, by package replace or by hand."""
    admin, host = debwharf.admin, f"{unique}.wharf.test"
    admin.site(unique, host)
    rel = admin.draft(unique)
    upload_raw(admin, unique, rel, debs["hello1"])
    other = build_deb(tmp_path, "wharf-hello", "1.0", "all", "xz")
    upload_raw(admin, unique, rel, other, replace="true")  # still a draft: nothing published yet
    admin.activate(unique, rel)
    pool = "pool/main/w/wharf-hello/wharf-hello_1.0_all.deb"
    r = debwharf.get(host, f"/{pool}")
    assert r.content == other and "immutable" in r.headers["Cache-Control"]
    rel2 = admin.draft(unique)
    err = upload_raw(admin, unique, rel2, debs["hello1"], replace="true", expect=409)
    assert err["error"]["code"] == "immutable_path" and pool in err["error"]["message"]
    err = admin.call("PUT", f"/sites/{unique}/releases/{rel2}/paths/{pool}", {"sha256": admin.blob(b"anything")}, expect=409)
    assert err["error"]["code"] == "immutable_path"
    # The same bytes again are fine, and so are other bytes under a path that is not immutable.
    upload_raw(admin, unique, rel2, other, replace="true")
    admin.call("PUT", f"/sites/{unique}/releases/{rel2}/paths/index.html", {"sha256": admin.blob(b"<p>new</p>")}, expect=200)

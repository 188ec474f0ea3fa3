"""APK repositories, verified independently and strictly as apk-tools 2.14
would (see apk.py), against the worker on workerd."""

import base64
import hashlib

import pytest
from apk import build_apk, check_index, gzip_streams, identity, openssl_sign, rsa_key
from debian import packages_text
from wharf import Wharf


@pytest.fixture(scope="module")
def server_key(tmp_path_factory):
    return rsa_key(tmp_path_factory.mktemp("apk-server-key"))


@pytest.fixture(scope="module")
def apkwharf(tmp_path_factory, server_key):
    w = Wharf(tmp_path_factory.mktemp("apk-state"), extra_vars={"APK_SIGNING_KEY": server_key[0].read_text()})
    yield w
    w.stop()


def upload(admin, site, rel, apk: bytes, branch="v3.20", repo="main", expect=201, **params):
    q = "&".join([f"sha256={hashlib.sha256(apk).hexdigest()}"] + [f"{k}={v}" for k, v in params.items()])
    return admin.call("POST", f"/sites/{site}/releases/{rel}/apk/{branch}/{repo}/packages?{q}", data=apk, expect=expect,
                      headers={"Content-Type": "application/octet-stream"})


def verify_repo(w, host, base, archs, public_key, key_name, tmp):
    """Every architecture's index verifies, and every record matches the served file."""
    listed = {}
    for arch in archs:
        r = w.get(host, f"/{base}/{arch}/APKINDEX.tar.gz", headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200, (arch, r.status_code)
        assert r.headers.get("content-encoding", "identity") == "identity", "served byte for byte"
        description, records = check_index(r.content, public_key, key_name, tmp)
        assert description == base
        for rec in records:
            assert set("CPVASITUL") <= set(rec), rec
            assert rec["A"] in (arch, "noarch"), rec
            f = w.get(host, f"/{base}/{arch}/{rec['P']}-{rec['V']}.apk")
            assert f.status_code == 200, rec
            assert int(rec["S"]) == len(f.content), rec
            assert rec["C"] == identity(f.content), rec
        listed[arch] = sorted((rec["P"], rec["V"], rec["A"]) for rec in records)
    return listed


def test_a_signed_repository_with_noarch_and_two_architectures(apkwharf, server_key, unique, tmp_path):
    admin, host = apkwharf.admin, f"{unique}.wharf.test"
    admin.site(unique, host)
    admin.call("PUT", f"/sites/{unique}/apk/settings", {"architectures": ["x86_64", "aarch64"], "key_name": "wharf-test.rsa.pub"})
    builder_key, _ = rsa_key(tmp_path / "builder")
    rel = admin.draft(unique)
    hello = build_apk("hello", "1.0-r0", "x86_64", ["so:libc.musl-x86_64.so.1"], sign=(builder_key, "builder.rsa.pub"))
    up = upload(admin, unique, rel, hello)
    assert up["identity"] == identity(hello) and up["signed"] is True
    upload(admin, unique, rel, build_apk("hello", "1.0-r0", "aarch64"))
    upload(admin, unique, rel, build_apk("hello-doc", "1.0-r0", "noarch"))
    upload(admin, unique, rel, build_apk("extra", "2.1-r3", "x86_64", ["hello>=1.0"]), repo="community")
    admin.activate(unique, rel)

    served_key = apkwharf.get(host, "/keys/apk/wharf-test.rsa.pub")
    assert served_key.status_code == 200
    (tmp_path / "served.pub").write_bytes(served_key.content)
    assert served_key.content.decode().strip() == server_key[1].read_text().strip()
    listed = verify_repo(apkwharf, host, "v3.20/main", ["x86_64", "aarch64"], tmp_path / "served.pub", "wharf-test.rsa.pub", tmp_path)
    assert listed["x86_64"] == [("hello", "1.0-r0", "x86_64"), ("hello-doc", "1.0-r0", "noarch")]
    assert listed["aarch64"] == [("hello", "1.0-r0", "aarch64"), ("hello-doc", "1.0-r0", "noarch")]
    community = verify_repo(apkwharf, host, "v3.20/community", ["x86_64", "aarch64"], tmp_path / "served.pub", "wharf-test.rsa.pub", tmp_path)
    assert community == {"x86_64": [("extra", "2.1-r3", "x86_64")], "aarch64": []}

    # Negative checks of the verifier itself: another key, a tampered package, a truncated index.
    _, other_pub = rsa_key(tmp_path / "other")
    index = apkwharf.get(host, "/v3.20/main/x86_64/APKINDEX.tar.gz").content
    with pytest.raises(ValueError, match="BAD signature"):
        check_index(index, other_pub, "wharf-test.rsa.pub", tmp_path)
    with pytest.raises(ValueError, match="truncated"):
        check_index(index[:-10], tmp_path / "served.pub", "wharf-test.rsa.pub", tmp_path)
    # A package changed after indexing no longer has the indexed identity
    # (here: the control stream's gzip header mtime, bytes 4-7, so it still unpacks).
    control_at = len(gzip_streams(hello)[0][0])
    tampered = bytearray(hello)
    tampered[control_at + 4] ^= 0x01
    assert identity(bytes(tampered)) != up["identity"]

    # Deterministic: publishing the same contents again gives the same index.
    # The draft is a copy of the release, so its indexes are removed first:
    # equal digests then come from a new generation, not from the copy.
    rel2 = admin.draft(unique)
    indexes = [f"v3.20/main/{a}/APKINDEX.tar.gz" for a in ("aarch64", "x86_64")]
    for path in indexes:
        assert admin.call("DELETE", f"/sites/{unique}/releases/{rel2}/paths/{path}")["changed"] == 1
    pub = admin.call("POST", f"/sites/{unique}/releases/{rel2}/apk/v3.20/main/publish?full=true")
    assert sorted(pub["regenerated"]) == ["aarch64", "x86_64"], pub
    paths = {p["path"]: p["sha256"] for p in admin.call("GET", f"/sites/{unique}/releases/{rel2}/paths")["paths"]}
    before = {p["path"]: p["sha256"] for p in admin.call("GET", f"/sites/{unique}/releases/{rel}/paths")["paths"]}
    for path in indexes:
        assert paths[path] == before[path], path

    # A new version in the next release, then a rollback: the old index is served again.
    upload(admin, unique, rel2, build_apk("hello", "1.1-r0", "x86_64"))
    admin.activate(unique, rel2)
    newer = verify_repo(apkwharf, host, "v3.20/main", ["x86_64"], tmp_path / "served.pub", "wharf-test.rsa.pub", tmp_path)
    assert ("hello", "1.1-r0", "x86_64") in newer["x86_64"]
    admin.call("POST", f"/sites/{unique}/rollback", {"to": rel})
    again = verify_repo(apkwharf, host, "v3.20/main", ["x86_64"], tmp_path / "served.pub", "wharf-test.rsa.pub", tmp_path)
    assert again["x86_64"] == listed["x86_64"]


def test_ingest_errors_duplicates_and_removal(apkwharf, server_key, unique, tmp_path):
    admin, host = apkwharf.admin, f"{unique}.wharf.test"
    admin.site(unique, host)
    rel = admin.draft(unique)
    err = upload(admin, unique, rel, b"PK\x03\x04 not an apk", expect=422)
    assert "not an apk v2 package" in err["error"]["message"]
    good = build_apk("tool", "3.0-r1", "x86_64")
    err = upload(admin, unique, rel, good[:40], expect=422)
    assert "truncated" in err["error"]["message"]
    tampered = bytearray(good)
    tampered[-12] ^= 0x55  # inside the data stream: no longer what .PKGINFO's datahash says
    err = upload(admin, unique, rel, bytes(tampered), expect=422)
    assert "datahash" in err["error"]["message"] or "gzip" in err["error"]["message"]
    upload(admin, unique, rel, good)
    other = build_apk("tool", "3.0-r1", "x86_64", payload=b"other bytes\n")
    upload(admin, unique, rel, other, expect=409)
    upload(admin, unique, rel, other, replace="true")
    upload(admin, unique, rel, build_apk("tool", "3.1-r0", "x86_64"))
    listed = admin.call("GET", f"/sites/{unique}/releases/{rel}/apk/v3.20/main/packages")["packages"]
    assert sorted((p["name"], p["version"]) for p in listed) == [("tool", "3.0-r1"), ("tool", "3.1-r0")]
    admin.activate(unique, rel)
    assert apkwharf.get(host, "/v3.20/main/x86_64/tool-3.0-r1.apk").content == other
    # Published package files are served immutable: their bytes never change.
    r = upload(admin, unique, admin.draft(unique), good, replace="true", expect=409)
    assert r["error"]["code"] == "immutable_path", r
    assert apkwharf.get(host, "/_wharf/apk/v3.20/main/x86_64/tool-3.0-r1.apk").status_code == 404

    rel2 = admin.draft(unique)
    admin.call("DELETE", f"/sites/{unique}/releases/{rel2}/apk/v3.20/main/packages/tool/3.0-r1/x86_64", expect=204)
    admin.call("DELETE", f"/sites/{unique}/releases/{rel2}/apk/v3.20/main/packages/tool/3.0-r1/x86_64", expect=404)
    admin.activate(unique, rel2)
    assert apkwharf.get(host, "/v3.20/main/x86_64/tool-3.0-r1.apk").status_code == 404
    (tmp_path / "pub.pem").write_text(server_key[1].read_text())
    paths = [p["path"] for p in admin.call("GET", f"/sites/{unique}/releases/{rel2}/paths")["paths"]]
    key_name = next(p for p in paths if p.startswith("keys/apk/")).removeprefix("keys/apk/")
    assert key_name.startswith(f"{unique}-") and key_name.endswith(".rsa.pub")
    listed = verify_repo(apkwharf, host, "v3.20/main", ["x86_64"], tmp_path / "pub.pem", key_name, tmp_path)
    assert listed["x86_64"] == [("tool", "3.1-r0", "x86_64")]
    # Only noarch packages and no architectures configured: a clear refusal.
    rel3 = admin.draft(unique)
    upload(admin, unique, rel3, build_apk("docs", "1-r0", "noarch"), repo="docs")
    err = admin.call("POST", f"/sites/{unique}/releases/{rel3}/apk/v3.20/docs/publish", expect=409)
    assert "noarch" in err["error"]["message"]


def test_client_side_signing(tmp_path, unique):
    key, pub = rsa_key(tmp_path / "mine")
    w = Wharf(tmp_path / "state")  # no server key at all
    try:
        admin, host = w.admin, f"{unique}.wharf.test"
        admin.site(unique, host)
        admin.call("PUT", f"/sites/{unique}/apk/settings", {"signing": "client", "architectures": ["x86_64"]})
        shown = admin.call("PUT", f"/sites/{unique}/apk/key", {"public_key": pub.read_text()})
        key_name = shown["key_name"]
        rel = admin.draft(unique)
        upload(admin, unique, rel, build_apk("signed-by-me", "1.0-r0", "x86_64"))
        err = admin.call("POST", f"/sites/{unique}/releases/{rel}/activate", {}, expect=409)
        assert "signed by you" in err["error"]["message"]
        res = admin.call("POST", f"/sites/{unique}/releases/{rel}/apk/v3.20/main/publish")
        assert res["signing"] == {"waiting_for_signatures": ["x86_64"]}
        admin.call("POST", f"/sites/{unique}/releases/{rel}/activate", {}, expect=409)
        unsigned = admin.call("GET", f"/sites/{unique}/releases/{rel}/apk/v3.20/main/x86_64/unsigned")
        stream = base64.b64decode(unsigned["stream_base64"])
        assert hashlib.sha256(stream).hexdigest() == unsigned["stream_sha256"]
        other_key, _ = rsa_key(tmp_path / "other")
        bad = base64.b64encode(openssl_sign(other_key, stream)).decode()
        err = admin.call("PUT", f"/sites/{unique}/releases/{rel}/apk/v3.20/main/x86_64/signature", {"signature_base64": bad}, expect=422)
        assert err["error"]["code"] == "bad_signature"
        good = base64.b64encode(openssl_sign(key, stream)).decode()
        admin.call("PUT", f"/sites/{unique}/releases/{rel}/apk/v3.20/main/x86_64/signature", {"signature_base64": good})
        admin.activate(unique, rel)
        assert w.get(host, f"/keys/apk/{key_name}").content.decode().strip() == pub.read_text().strip()
        listed = verify_repo(w, host, "v3.20/main", ["x86_64"], pub, key_name, tmp_path)
        assert listed["x86_64"] == [("signed-by-me", "1.0-r0", "x86_64")]
    finally:
        w.stop()


def test_deb_and_apk_switch_and_roll_back_together(tmp_path, unique):
    from debian import Gpg, build_deb

    gpg = Gpg(tmp_path / "gpg").generate("Both <both@example.com>")
    key, pub = rsa_key(tmp_path / "rsa")
    w = Wharf(tmp_path / "state", extra_vars={"APK_SIGNING_KEY": key.read_text(), "DEB_SIGNING_KEY": gpg.secret_armored()})
    try:
        admin, host = w.admin, f"{unique}.wharf.test"
        admin.site(unique, host)
        admin.call("PUT", f"/sites/{unique}/apk/settings", {"key_name": "both.rsa.pub"})

        def add_both(rel, version):
            deb = build_deb(tmp_path, "both", version, "all", "gzip")
            admin.call("POST", f"/sites/{unique}/releases/{rel}/deb/stable/main/packages?sha256={hashlib.sha256(deb).hexdigest()}",
                       data=deb, headers={"Content-Type": "application/vnd.debian.binary-package"})
            upload(admin, unique, rel, build_apk("both", f"{version}-r0", "x86_64"))

        def served():
            packages = packages_text(w, host)
            deb_version = next(l.split(": ")[1] for l in packages.splitlines() if l.startswith("Version: "))
            _, records = check_index(w.get(host, "/v3.20/main/x86_64/APKINDEX.tar.gz").content, pub, "both.rsa.pub", tmp_path)
            return deb_version, [r["V"] for r in records]

        r1 = admin.draft(unique)
        add_both(r1, "1.0")
        admin.call("PUT", f"/sites/{unique}/deb/dists/stable", {"architectures": ["amd64"]})
        admin.activate(unique, r1)  # one activation publishes both formats
        assert served() == ("1.0", ["1.0-r0"])
        r2 = admin.draft(unique)
        admin.call("DELETE", f"/sites/{unique}/releases/{r2}/deb/stable/main/packages/both/1.0/all", expect=204)
        admin.call("DELETE", f"/sites/{unique}/releases/{r2}/apk/v3.20/main/packages/both/1.0-r0/x86_64", expect=204)
        add_both(r2, "2.0")
        admin.activate(unique, r2)
        assert served() == ("2.0", ["2.0-r0"])
        admin.call("POST", f"/sites/{unique}/rollback", {"to": r1})
        assert served() == ("1.0", ["1.0-r0"])
    finally:
        w.stop()

"""Indexes regenerated in proportion to the change: after adds, removes and
replaces in a repository of 1,500 packages (built by one batch), a
publication splices the pieces around the changed names (the answer says how
many it rendered) and gives byte for byte the indexes a full regeneration of
the same packages gives; apt reads the Debian ones by hash, the APK checks
(as apk-tools 2.14 verifies) accept the APK ones."""

import gzip
import lzma
import subprocess

import pytest
from apk import build_apk, check_index
from debian import StagingProxy, packages_text, quick_deb, sha256
from test_debian import apt_for
from test_batch import env  # noqa: F401  (the module's worker, as the batch tests start it)
from wharf import tar_of

INDEX = "dists/stable/main/binary-amd64/"


@pytest.fixture(scope="module")
def w(env):
    """The worker of the batch tests' module fixture (Debian and APK keys)."""
    env.wharf.apk_pub = env.apk_pub
    return env.wharf


def batch(admin, site, rel, files: dict[str, bytes], **params):
    q = "&".join(f"{k}={v}" for k, v in params.items())
    return admin.call("POST", f"/sites/{site}/releases/{rel}/deb/stable/main/packages/batch" + (f"?{q}" if q else ""),
                      data=tar_of(files), expect=201, headers={"Content-Type": "application/x-tar"})


def index_files(admin, site, rel) -> dict[str, str]:
    """The draft's Packages files under the index, with their sha256."""
    paths = admin.call("GET", f"/sites/{site}/releases/{rel}/paths?after={INDEX}&limit=1000")["paths"]
    return {p["path"]: p["sha256"] for p in paths if p["path"].startswith(INDEX) and "/by-hash/" not in p["path"]}


def listed(w, host) -> dict[str, tuple[str, int]]:
    text = w.get(host, "/dists/stable/Release").text
    out = {}
    for line in text.split("SHA256:\n")[1].strip().splitlines():
        digest, size, path = line.split()
        out[path] = (digest, int(size))
    return out


def test_a_publication_splices_around_the_change_equals_a_full_one_and_apt_reads_it_by_hash(w, hosts, tmp_path):
    admin = w.admin
    host = hosts.add("incremental.wharf.test")
    admin.site("incremental", host)
    names = [f"wharf-inc-{i:04d}" for i in range(1500)]
    debs = {f"{n}.deb": quick_deb(n, "1.0", "all" if i % 10 == 0 else "amd64") for i, n in enumerate(names)}
    rel = admin.draft("incremental")
    assert batch(admin, "incremental", rel, debs)["added"] == 1500
    first = admin.call("POST", f"/sites/incremental/releases/{rel}/deb/stable/publish")
    assert first["indexes"][0]["packages"] == 1500 and first["indexes"][0]["pieces_rendered"] == first["indexes"][0]["pieces"]
    admin.activate("incremental", rel)

    # Adds (one `all`, which every architecture lists), a removal, a replace
    # (a package added in this draft, replaced before publishing).
    rel = admin.draft("incremental")
    batch(admin, "incremental", rel, {"a.deb": quick_deb("wharf-inc-0700b", "2.0", "amd64"), "b.deb": quick_deb("wharf-inc-1200x", "1.0", "all"),
                                      "c.deb": quick_deb("wharf-inc-0300", "1.1", "amd64")})
    replaced = quick_deb("wharf-inc-0300", "1.1", "amd64", payload=b"replaced\n")
    batch(admin, "incremental", rel, {"c.deb": replaced}, replace="true")
    admin.call("DELETE", f"/sites/incremental/releases/{rel}/deb/stable/main/packages/wharf-inc-0901/1.0/amd64", expect=204)
    out = admin.call("POST", f"/sites/incremental/releases/{rel}/deb/stable/publish")
    (idx,) = out["indexes"]
    assert idx["index"] == "main/binary-amd64" and idx["packages"] == 1500 + 3 - 1
    # Splicing, not a full regeneration: a handful of pieces rendered.
    assert idx["pieces"] >= 15 and idx["pieces_rendered"] <= 8, idx
    spliced = index_files(admin, "incremental", rel)
    assert set(spliced) == {INDEX + "Packages.gz", INDEX + "Packages.xz"}

    # The same draft regenerated whole from its packages: the same bytes.
    full = admin.call("POST", f"/sites/incremental/releases/{rel}/deb/stable/publish?full=true")
    assert full["indexes"][0]["pieces_rendered"] == full["indexes"][0]["pieces"] == idx["pieces"]
    assert index_files(admin, "incremental", rel) == spliced
    admin.activate("incremental", rel)

    # What is served: the plain index's listed digest is what the compressed
    # forms decompress to; the removed package is gone, the others there.
    text = packages_text(w, host)
    gz = w.get(host, "/" + INDEX + "Packages.gz").content
    assert gzip.decompress(gz).decode() == text == lzma.decompress(w.get(host, "/" + INDEX + "Packages.xz").content).decode()
    got = listed(w, host)
    assert got["main/binary-amd64/Packages"] == (sha256(text.encode()), len(text.encode()))
    assert "Package: wharf-inc-0901\n" not in text and "Package: wharf-inc-0700b\n" in text and "Package: wharf-inc-1200x\n" in text
    assert f"SHA256: {sha256(replaced)}\n" in text

    # apt reads it, by hash (the proxy sees the by-hash fetch of the new
    # Packages.xz answered 200), and sees the change.
    url = f"http://{host}:{w.port}/"
    keyring = tmp_path / "keyring.gpg"
    subprocess.run(["curl", "-sSf", "-o", str(keyring), url + "keys/wharf-archive-keyring.gpg"], check=True)
    apt = apt_for(tmp_path / "apt", url, keyring)
    proxy = StagingProxy(w.port)
    try:
        apt.run("update", *proxy.option)
    finally:
        proxy.stop()
    xz_digest = got["main/binary-amd64/Packages.xz"][0]
    assert ("GET", f"/{INDEX}by-hash/SHA256/{xz_digest}", 200) in proxy.log, proxy.log
    assert apt.candidate("wharf-inc-0700b") == "2.0" and apt.candidate("wharf-inc-1200x") == "1.0"
    assert apt.candidate("wharf-inc-0300") == "1.1" and apt.candidate("wharf-inc-0901") == ""
    apt.run("download", "wharf-inc-0300")
    assert (apt.root / "downloads" / "wharf-inc-0300_1.1_amd64.deb").read_bytes() == replaced


def test_an_apk_index_is_spliced_around_the_change_and_equals_a_full_one(w, hosts, tmp_path):
    admin = w.admin
    host = hosts.add("incremental-apk.wharf.test")
    admin.site("inc-apk", host)
    admin.call("PUT", "/sites/inc-apk/apk/settings", {"architectures": ["x86_64"], "key_name": "inc.rsa.pub"})
    apks = {f"a{i}.apk": build_apk(f"inc-{i:04d}", "1.0-r0", "noarch" if i % 9 == 0 else "x86_64") for i in range(1500)}
    rel = admin.draft("inc-apk")
    admin.call("POST", f"/sites/inc-apk/releases/{rel}/apk/v3.20/main/packages/batch", data=tar_of(apks), expect=201,
               headers={"Content-Type": "application/x-tar"})
    first = admin.call("POST", f"/sites/inc-apk/releases/{rel}/apk/v3.20/main/publish")
    assert first["indexes"][0]["packages"] == 1500
    admin.activate("inc-apk", rel)

    rel = admin.draft("inc-apk")
    new = {"n1.apk": build_apk("inc-0700b", "2.0-r0", "x86_64"), "n2.apk": build_apk("inc-1200x", "1.0-r0", "noarch"),
           "n3.apk": build_apk("inc-0300", "1.1-r0", "x86_64")}
    admin.call("POST", f"/sites/inc-apk/releases/{rel}/apk/v3.20/main/packages/batch", data=tar_of(new), expect=201,
               headers={"Content-Type": "application/x-tar"})
    admin.call("DELETE", f"/sites/inc-apk/releases/{rel}/apk/v3.20/main/packages/inc-0901/1.0-r0/x86_64", expect=204)
    out = admin.call("POST", f"/sites/inc-apk/releases/{rel}/apk/v3.20/main/publish")
    (idx,) = out["indexes"]
    assert idx["arch"] == "x86_64" and idx["packages"] == 1500 + 3 - 1
    assert idx["pieces"] >= 15 and idx["pieces_rendered"] <= 8, idx
    index_path = "v3.20/main/x86_64/APKINDEX.tar.gz"
    paths = lambda: {p["path"]: p["sha256"] for p in admin.call("GET", f"/sites/inc-apk/releases/{rel}/paths?after=v3.20/main/x86_64/&limit=5")["paths"]}  # noqa: E731
    spliced = paths()[index_path]
    # The same draft regenerated whole: the same index, signature and all (RSA PKCS#1 v1.5 signs deterministically).
    full = admin.call("POST", f"/sites/inc-apk/releases/{rel}/apk/v3.20/main/publish?full=true")
    assert full["indexes"][0]["pieces_rendered"] == full["indexes"][0]["pieces"]
    assert paths()[index_path] == spliced
    admin.activate("inc-apk", rel)

    _, records = check_index(w.get(host, "/" + index_path).content, w.apk_pub, "inc.rsa.pub", tmp_path)
    by_name = {r["P"]: r["V"] for r in records}
    assert len(records) == 1502 and "inc-0901" not in by_name
    assert by_name["inc-0700b"] == "2.0-r0" and by_name["inc-1200x"] == "1.0-r0" and by_name["inc-0300"] in ("1.0-r0", "1.1-r0")
    assert sorted(v for n, v in ((r["P"], r["V"]) for r in records) if n == "inc-0300") == ["1.0-r0", "1.1-r0"]
    # The package files follow the index: new ones served, the removed one gone.
    assert w.get(host, "/v3.20/main/x86_64/inc-0700b-2.0-r0.apk").content == new["n1.apk"]
    assert w.get(host, "/v3.20/main/x86_64/inc-1200x-1.0-r0.apk").content == new["n2.apk"]
    assert w.get(host, "/v3.20/main/x86_64/inc-0901-1.0-r0.apk").status_code == 404
    assert w.get(host, "/v3.20/main/x86_64/inc-0902-1.0-r0.apk").content == apks["a902.apk"]


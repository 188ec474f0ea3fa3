"""Batch ingest: many packages in one request (a tar stream), for every
format, all or nothing; then the real clients (apt-get, the APK check, the
Helm index check) read what one batch published."""

import hashlib
import io
import subprocess
import tarfile
import threading

import pytest
from apk import build_apk, check_index, rsa_key
from debian import Gpg, build_deb, packages_text
from test_debian import apt_for
from test_helm import chart, verify_repository
from wharf import Wharf, tar_of


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    deb_key = Gpg(root / "gpg").generate("Wharf Archive <archive@example.com>")
    apk_key, apk_pub = rsa_key(root / "apk-key")
    w = Wharf(root / "state", extra_vars={"DEB_SIGNING_KEY": deb_key.secret_armored(), "APK_SIGNING_KEY": apk_key.read_text()})

    class Env:
        pass

    e = Env()
    e.root, e.wharf, e.apk_pub = root, w, apk_pub
    yield e
    w.stop()


def batch(admin, site: str, rel: int, path: str, body: bytes, expect=201, **params):
    q = "&".join(f"{k}={v}" for k, v in params.items())
    return admin.call("POST", f"/sites/{site}/releases/{rel}/{path}/batch" + (f"?{q}" if q else ""), data=body, expect=expect,
                      headers={"Content-Type": "application/x-tar"})


def test_apt_installs_from_a_repository_built_by_one_batch(env, hosts, tmp_path):
    w, admin = env.wharf, env.wharf.admin
    host = hosts.add("batch-apt.wharf.test")
    admin.site("batch-apt", host)
    debs = {f"pkg{i:03d}_1.0_all.deb": build_deb(tmp_path, f"wharf-batch-{i:03d}", "1.0", "all", "gzip") for i in range(300)}
    rel = admin.draft("batch-apt")
    out = batch(admin, "batch-apt", rel, "deb/stable/main/packages", tar_of(debs, claim=True))
    assert out["added"] == 300 and len(out["packages"]) == 300
    assert {p["package"] for p in out["packages"]} == {f"wharf-batch-{i:03d}" for i in range(300)}
    admin.activate("batch-apt", rel)
    url = f"http://{host}:{w.port}/"
    keyring = tmp_path / "keyring.gpg"
    subprocess.run(["curl", "-sSf", "-o", str(keyring), url + "keys/wharf-archive-keyring.gpg"], check=True)
    apt = apt_for(tmp_path / "apt", url, keyring)
    apt.run("update")
    assert apt.candidate("wharf-batch-000") == "1.0" and apt.candidate("wharf-batch-299") == "1.0"
    apt.run("download", "wharf-batch-123")
    assert (apt.root / "downloads" / "wharf-batch-123_1.0_all.deb").read_bytes() == debs["pkg123_1.0_all.deb"]


def test_a_batchs_small_files_are_stored_in_packs_and_served_byte_for_byte(env, hosts, tmp_path):
    """A batch's small files go into R2 together (packs); every read (whole,
    ranges, conditional, the edge cache, memory, inspection by digest) gets
    exactly the file's bytes from within the pack."""
    import os
    import requests
    from debian import quick_deb
    w, admin = env.wharf, env.wharf.admin
    host = hosts.add("batch-pack.wharf.test")
    admin.site("batch-pack", host)
    # Above the isolate's small-body size (64 KiB: read from R2, through the
    # edge cache) and below it (kept in memory); incompressible payloads.
    debs = {f"big{i}_1.0_all.deb": quick_deb(f"pack-big-{i}", "1.0", "all", payload=os.urandom(200_000)) for i in range(3)}
    debs |= {f"small{i}_1.0_all.deb": quick_deb(f"pack-small-{i}", "1.0", "all") for i in range(20)}
    rel = admin.draft("batch-pack")
    out = batch(admin, "batch-pack", rel, "deb/stable/main/packages", tar_of(debs))
    admin.activate("batch-pack", rel)
    paths = {p["sha256"]: p["filename"] for p in out["packages"]}
    for name, data in debs.items():
        info = admin.call("GET", f"/blobs/sha256/{sha(data)}")
        assert info["packed"] and info["stored"] and info["stored_size"] == len(data), (name, info)
    base = f"http://{host}:{w.port}/"
    for name, data in debs.items():
        url = base + paths[sha(data)]
        for _ in range(2):  # the second read comes from memory or the edge cache
            r = requests.get(url)
            assert r.status_code == 200 and r.content == data, name
        r = requests.get(url, headers={"Range": "bytes=100-4099"})
        assert r.status_code == 206 and r.content == data[100:4100], name
        assert r.headers["content-range"] == f"bytes 100-{min(4099, len(data) - 1)}/{len(data)}"
        r = requests.get(url, headers={"Range": f"bytes=-{len(data) // 3}"})
        assert r.status_code == 206 and r.content == data[-(len(data) // 3):], name
        r = requests.head(url)
        assert r.status_code == 200 and int(r.headers["content-length"]) == len(data)
        assert requests.get(url, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    # Packed blobs inspected again from R2: a batch naming them by digest.
    rel2 = admin.draft("batch-pack")
    again = admin.call("POST", f"/sites/batch-pack/releases/{rel2}/deb/stable/main/packages/batch",
                       {"sha256": [sha(d) for d in debs.values()]}, expect=201)
    assert {p["package"] for p in again["packages"]} == {f"pack-big-{i}" for i in range(3)} | {f"pack-small-{i}" for i in range(20)}


def test_a_batch_with_one_bad_file_adds_nothing_and_names_it(env, tmp_path):
    admin = env.wharf.admin
    admin.site("batch-bad")
    rel = admin.draft("batch-bad")
    good = {f"g{i}.deb": build_deb(tmp_path, f"good-{i}", "1.0", "all", "gzip") for i in range(3)}
    files = {**good, "broken.deb": b"!<arch>\nthis is not a package", "lying.deb": build_deb(tmp_path, "lying", "1.0", "all", "gzip")}
    body = tar_of(files)
    # A claimed digest that does not match is refused too.
    claimed = io.BytesIO()
    with tarfile.open(fileobj=claimed, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if name == "lying.deb":
                info.pax_headers = {"WHARF.sha256": "0" * 64}
            t.addfile(info, io.BytesIO(data))
    err = batch(admin, "batch-bad", rel, "deb/stable/main/packages", claimed.getvalue(), expect=422)["error"]
    assert err["code"] == "invalid_batch" and err["message"].startswith("nothing was added: 2 files were refused")
    assert [e["file"] for e in err["errors"]] == ["broken.deb", "lying.deb"]
    assert err["errors"][0]["reason"].startswith("not a valid Debian package")
    assert "not the 0000" in err["errors"][1]["reason"]
    listed = lambda: admin.call("GET", f"/sites/batch-bad/releases/{rel}/deb/stable/packages")["packages"]  # noqa: E731
    assert listed() == [], "nothing of the batch was added"
    # Not a tar stream at all; an empty one.
    assert batch(admin, "batch-bad", rel, "deb/stable/main/packages", b"x" * 1024, expect=400)["error"]["code"] == "invalid_batch"
    assert batch(admin, "batch-bad", rel, "deb/stable/main/packages", b"", expect=400)["error"]["code"] == "bad_request"
    # Two files of one batch taking one place with different bytes; then a clash with the draft.
    twice = {"a.deb": build_deb(tmp_path / "a", "twice", "1.0", "all", "gzip"), "b.deb": build_deb(tmp_path / "b", "twice", "1.0", "all", "gzip")}
    err = batch(admin, "batch-bad", rel, "deb/stable/main/packages", tar_of(twice), expect=422)["error"]
    assert err["errors"][0]["file"] == "b.deb" and "(as a.deb of this batch)" in err["errors"][0]["reason"]
    batch(admin, "batch-bad", rel, "deb/stable/main/packages", tar_of({"a.deb": twice["a.deb"]}))
    err = batch(admin, "batch-bad", rel, "deb/stable/main/packages", tar_of({"b.deb": twice["b.deb"], **good}), expect=409)["error"]
    assert [e["file"] for e in err["errors"]] == ["b.deb"] and "replace=true" in err["errors"][0]["reason"]
    assert [p["sha256"] for p in listed()] == [sha(twice["a.deb"])], "only the a.deb batch landed"
    replaced = batch(admin, "batch-bad", rel, "deb/stable/main/packages", tar_of({"b.deb": twice["b.deb"]}), replace="true")
    assert replaced["packages"][0]["sha256"] == sha(twice["b.deb"])


def test_twenty_concurrent_batches_into_one_draft_all_land(env, tmp_path):
    admin = env.wharf.admin
    admin.site("batch-many")
    rel = admin.draft("batch-many")
    bodies = [tar_of({f"p{b}-{i}.deb": build_deb(tmp_path / f"{b}", f"many-{b}-{i}", "1.0", "all", "gzip") for i in range(10)}) for b in range(20)]
    results = [None] * 20

    def send(i):
        results[i] = batch(admin, "batch-many", rel, "deb/stable/main/packages", bodies[i])["added"]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [10] * 20
    admin.activate("batch-many", rel)
    listed = admin.call("GET", f"/sites/batch-many/releases/{rel}/deb/stable/packages")["packages"]
    assert len(listed) == 200


def test_apk_and_helm_batches(env, tmp_path):
    w, admin = env.wharf, env.wharf.admin
    admin.site("batch-apk", "batch-apk.wharf.test")
    admin.call("PUT", "/sites/batch-apk/apk/settings", {"architectures": ["x86_64"]})
    rel = admin.draft("batch-apk")
    apks = {f"p{i}-1.0-r0.apk": build_apk(f"batch{i}", "1.0-r0", "x86_64") for i in range(40)}
    assert batch(admin, "batch-apk", rel, "apk/v3.20/main/packages", tar_of(apks))["added"] == 40
    admin.activate("batch-apk", rel)
    paths = [p["path"] for p in admin.call("GET", f"/sites/batch-apk/releases/{rel}/paths")["paths"]]
    key_name = [p for p in paths if p.startswith("keys/apk/")][0].rsplit("/", 1)[1]
    index = w.get("batch-apk.wharf.test", "/v3.20/main/x86_64/APKINDEX.tar.gz").content
    _, records = check_index(index, env.apk_pub, key_name, tmp_path)
    assert sorted(r["P"] for r in records) == sorted(f"batch{i}" for i in range(40))

    admin.site("batch-helm", "batch-helm.wharf.test")
    rel = admin.draft("batch-helm")
    charts = {f"web-1.{i}.0.tgz": chart("web", f"1.{i}.0") for i in range(5)}
    out = batch(admin, "batch-helm", rel, "helm/stable/charts", tar_of(charts))
    assert out["added"] == 5 and {p["version"] for p in out["packages"]} == {f"1.{i}.0" for i in range(5)}
    admin.activate("batch-helm", rel)
    assert sorted(verify_repository(w, "batch-helm.wharf.test", "stable")["web"]) == sorted(f"1.{i}.0" for i in range(5))


def test_the_readme_batch_recipe_runs_as_written(env, hosts, tmp_path):
    from test_readme import block_after, run_block

    w, admin = env.wharf, env.wharf.admin
    host = hosts.add("apt.batch-readme.test")
    admin.site("apt", host)
    token = admin.make_token("publish", "apt").token
    (tmp_path / "dist").mkdir()
    for i in range(12):
        (tmp_path / "dist" / f"r{i}.deb").write_bytes(build_deb(tmp_path / "build", f"readme-{i}", "1.0", "all", "gzip"))
    api_host = hosts.add("admin.wharf.test")
    out = run_block(block_after("## Debian repositories", "**Many packages in one request.**"), tmp_path,
                    {"API": f"http://{api_host}:{w.port}/api/v1", "AUTH": f"Authorization: Bearer {token}"})
    assert '{"added":12}' in out, out
    packages = packages_text(w, host)
    assert all(f"Package: readme-{i}\n" in packages for i in range(12))


def test_a_batch_of_blobs_uploaded_before_is_named_by_digest(env, tmp_path):
    admin = env.wharf.admin
    admin.site("batch-digests")
    rel = admin.draft("batch-digests")
    debs = [build_deb(tmp_path, f"digest-{i}", "1.0", "all", "gzip") for i in range(5)]
    for d in debs:
        admin.blob(d)
    out = admin.call("POST", f"/sites/batch-digests/releases/{rel}/deb/stable/main/packages/batch", {"sha256": [sha(d) for d in debs]}, expect=201)
    assert out["added"] == 5 and {p["package"] for p in out["packages"]} == {f"digest-{i}" for i in range(5)}
    # A blob that is not a package is named; nothing of the batch is added.
    junk = b"not a package at all"
    admin.blob(junk)
    rel2 = admin.draft("batch-digests")
    other = build_deb(tmp_path, "digest-late", "1.0", "all", "gzip")
    admin.blob(other)
    err = admin.call("POST", f"/sites/batch-digests/releases/{rel2}/deb/stable/main/packages/batch", {"sha256": [sha(other), sha(junk)]}, expect=422)["error"]
    assert [e["file"] for e in err["errors"]] == [f"sha256:{sha(junk)}"]
    listed = admin.call("GET", f"/sites/batch-digests/releases/{rel2}/deb/stable/packages")["packages"]
    assert "digest-late" not in {p["package"] for p in listed}, "nothing of the refused batch was added"


def test_a_batch_published_in_one_request_lands_even_when_others_publish_at_once(env, hosts, tmp_path):
    """`POST /sites/{s}/deb/{d}/{c}/packages/batch` (no release): a new release
    from the active one, the batch, activation; on a concurrent activation,
    again from the new active release. Six at once all land; a bad batch
    leaves neither a release nor a change."""
    from concurrent.futures import ThreadPoolExecutor
    from debian import quick_deb
    w, admin = env.wharf, env.wharf.admin
    host = hosts.add("batch-one.wharf.test")
    admin.site("batch-one", host)
    path = "/sites/batch-one/deb/stable/main/packages/batch"

    def publish(k: int):
        files = {f"p{k}-{i}.deb": quick_deb(f"wharf-one-{k}-{i}", "1.0", "amd64") for i in range(3)}
        return admin.call("POST", path, data=tar_of(files), expect=201, headers={"Content-Type": "application/x-tar"})

    first = publish(0)
    assert first["state"] == "active" and first["added"] == 3 and first["attempts"] == 1
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(publish, range(1, 7)))
    assert all(r["state"] == "active" and r["added"] == 3 for r in results)
    assert any(r["attempts"] > 1 for r in results), "six at once: some found another activation first and went again"
    text = packages_text(w, host)
    assert all(f"Package: wharf-one-{k}-{i}\n" in text for k in range(7) for i in range(3))
    active = admin.call("GET", "/sites/batch-one")["active_release"]
    assert active == max(r["id"] for r in results)

    # A bad batch: refused whole, no release left behind, the active one unchanged.
    releases = admin.call("GET", "/sites/batch-one/releases")["releases"]
    bad = {"good.deb": quick_deb("wharf-one-late", "1.0", "amd64"), "bad.deb": b"not a package"}
    err = admin.call("POST", path, data=tar_of(bad), expect=422, headers={"Content-Type": "application/x-tar"})
    assert [e["file"] for e in err["error"]["errors"]] == ["bad.deb"]
    assert admin.call("GET", "/sites/batch-one/releases")["releases"] == releases
    assert admin.call("GET", "/sites/batch-one")["active_release"] == active
    assert "wharf-one-late" not in packages_text(w, host)

"""Tenant isolation and bad input, probed as a hostile tenant and a careless
publisher would: a deleted site's data must not reach the next site, a digest
is not a capability (admin API, registry, mirror), broken packages are refused
whole, concurrent pushes to one repository all land."""

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from apk import build_apk
from debian import build_deb
from test_oci import OCI_MANIFEST, oci_layout, push_blob, push_image, skopeo
from upstream import LoopbackServer, QuietHandler
from wharf import ApiError, Wharf


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    w = Wharf(tmp_path_factory.mktemp("isolation-state"), https=True)
    yield w
    w.stop()



class FakeRegistry(LoopbackServer):
    """An upstream registry a tenant controls. It serves the images it holds;
    with `lie`, it also answers HEAD 200 (size 1234) for any blob it lacks."""

    def __init__(self, lie=False):
        self.blobs, self.manifests, self.seen = {}, {}, []
        outer = self

        class H(QuietHandler):
            def reply(self, status, headers=None, body=b""):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            def answer(self):
                outer.seen.append((self.command, self.path, self.headers.get("Authorization")))
                if self.path in ("/v2/", "/v2"):
                    return self.reply(200, {"Content-Type": "application/json"}, b"{}")
                if "/blobs/sha256:" in self.path:
                    hexd = self.path.rsplit(":", 1)[1]
                    if hexd in outer.blobs:
                        return self.reply(200, {"Docker-Content-Digest": f"sha256:{hexd}"}, outer.blobs[hexd])
                    if outer.lie and self.command == "HEAD":
                        return self.reply(200, {"Docker-Content-Digest": f"sha256:{hexd}", "Content-Length": "1234"})
                if "/manifests/" in self.path:
                    ref = self.path.rsplit("/", 1)[1]
                    body = outer.manifests.get(ref) or outer.manifests.get(ref.removeprefix("sha256:"))
                    if body is not None:
                        return self.reply(200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": f"sha256:{sha(body)}"}, body)
                self.reply(404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')

            do_GET = do_HEAD = answer

        self.lie = lie
        self.serve(H)

    def add_image(self, tag: str, layer: bytes) -> tuple[bytes, bytes]:
        config = b'{"architecture":"amd64","os":"linux"}'
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{sha(config)}", "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{sha(layer)}", "size": len(layer)}]}).encode()
        for b in (config, layer):
            self.blobs[sha(b)] = b
        self.manifests[tag] = manifest
        self.manifests[sha(manifest)] = manifest
        return manifest, layer


def registry_token(w, host, token, scope):
    creds = base64.b64encode(f"ci:{token}".encode()).decode()
    r = w.get(host, f"/v2/token?scope={scope}", headers={"Authorization": f"Basic {creds}"})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def test_a_deleted_sites_data_never_reaches_the_next_site(w):
    admin, host = w.admin, "reused.iso.test"
    upstream = FakeRegistry()
    try:
        admin.site("iso-a", host)
        admin.call("PUT", "/sites/iso-a/oci/settings", {"upstreams": [{"url": upstream.url}]})
        a_token = admin.make_token("publish", "iso-a").token
        auth = {"Authorization": f"Bearer {a_token}"}
        staged = b"a blob of site A that no manifest references yet"
        push_blob(w, host, "team/app", staged, auth)
        manifest, layer = upstream.add_image("v1", b"site A's private mirrored layer")
        assert w.get(host, "/v2/lib/mirrored/manifests/v1").content == manifest
        assert w.get(host, f"/v2/lib/mirrored/blobs/sha256:{sha(layer)}").content == layer
        assert len(admin.call("GET", "/sites/iso-a/oci/cache")["entries"]) >= 3
        old_registry_token = registry_token(w, host, a_token, "repository:team/app:pull,push")
        a_id = admin.call("GET", "/sites/iso-a").get("id")
        admin.call("DELETE", "/sites/iso-a", expect=204)
    finally:
        upstream.stop()

    # The next site, on the same hostname, with an upstream nobody answers at.
    admin.site("iso-b", host)
    admin.call("PUT", "/sites/iso-b/oci/settings", {"upstreams": [{"url": "http://127.0.0.1:9"}]})
    assert admin.call("GET", "/sites/iso-b/oci/cache")["entries"] == []
    for method in ("GET", "HEAD"):
        r = w.get(host, f"/v2/team/app/blobs/sha256:{sha(staged)}", method=method)
        assert r.status_code != 200 and staged not in r.content, (method, r.status_code)
        r = w.get(host, "/v2/lib/mirrored/manifests/v1", method=method)
        assert r.status_code != 200 and manifest not in r.content, (method, r.status_code)
        r = w.get(host, f"/v2/lib/mirrored/blobs/sha256:{sha(layer)}", method=method)
        assert r.status_code != 200 and layer not in r.content, (method, r.status_code)
    # A registry token minted for A before its deletion is no token for B.
    bearer = {"Authorization": f"Bearer {old_registry_token}"}
    assert w.get(host, "/v2/team/app/blobs/uploads/", method="POST", headers=bearer).status_code == 401
    assert w.get(host, "/v2/", headers=bearer).status_code == 401
    assert a_id is not None and admin.call("GET", "/sites/iso-b")["id"] != a_id, "site ids are never reused"


def test_a_registry_token_works_on_its_own_site_only(w):
    """Site A's registry token, and site A's API token as the Basic password,
    get nothing on site B: not /v2/, not a push, not a pull of B's private image."""
    admin = w.admin
    admin.site("iso-t1", "t1.iso.test")
    admin.site("iso-t2", "t2.iso.test")
    admin.call("PUT", "/sites/iso-t2/oci/settings", {"anonymous_pull": False})
    b_auth = {"Authorization": f"Bearer {admin.make_token('publish', 'iso-t2').token}"}
    push_image(w, "t2.iso.test", "app", "v1", b_auth, payload=b"site B's private layer")
    a_api = admin.make_token("publish", "iso-t1").token
    t1 = registry_token(w, "t1.iso.test", a_api, "repository:app:pull,push")
    bearer = {"Authorization": f"Bearer {t1}"}
    assert w.get("t1.iso.test", "/v2/", headers=bearer).status_code == 200
    assert w.get("t1.iso.test", "/v2/app/blobs/uploads/", method="POST", headers=bearer).status_code == 202
    basic = {"Authorization": "Basic " + base64.b64encode(f"ci:{a_api}".encode()).decode()}
    for auth in (bearer, basic):
        assert w.get("t2.iso.test", "/v2/", headers=auth).status_code == 401
        assert w.get("t2.iso.test", "/v2/app/blobs/uploads/", method="POST", headers=auth).status_code in (401, 403)
        r = w.get("t2.iso.test", "/v2/app/manifests/v1", headers=auth)
        assert r.status_code in (401, 403) and b"layers" not in r.content, r.status_code
    # Site A's API token cannot even get a token for B's repository with pull or push in it.
    r = w.get("t2.iso.test", "/v2/token?scope=repository:app:pull,push", headers=basic)
    granted = json.loads(base64.urlsafe_b64decode(r.json()["token"].split(".")[0] + "==")) if r.status_code == 200 else {"access": []}
    assert all(not actions for _, actions in granted["access"]), granted


@pytest.fixture(scope="module")
def victim(w):
    """A private registry site holding an image nobody else may read."""
    admin, host = w.admin, "victim.iso.test"
    admin.site("iso-victim", host)
    admin.call("PUT", "/sites/iso-victim/oci/settings", {"anonymous_pull": False})
    auth = {"Authorization": f"Bearer {admin.make_token('publish', 'iso-victim').token}"}
    manifest, layer = push_image(w, host, "secret/app", "v1", auth, payload=b"the victim's private layer " * 10)
    assert w.get(host, f"/v2/secret/app/blobs/sha256:{sha(layer)}").status_code == 401
    config = json.loads(manifest)["config"]["digest"].split(":")[1]
    return {"host": host, "auth": auth, "manifest": manifest, "layer": layer, "config": config}


def test_a_digest_is_not_a_capability_in_the_admin_api(w, victim):
    admin, layer = w.admin, victim["layer"]
    admin.site("iso-thief", "thief.iso.test")
    thief = admin.make_token("publish", "iso-thief")
    rel = thief.draft("iso-thief")
    r = thief.call("PUT", f"/sites/iso-thief/releases/{rel}/paths/stolen", {"sha256": sha(layer)}, expect=422)
    missing = thief.call("PUT", f"/sites/iso-thief/releases/{rel}/paths/nothing", {"sha256": "ab" * 32}, expect=422)
    assert r["error"]["message"].replace(sha(layer), "X") == missing["error"]["message"].replace("ab" * 32, "X"), \
        "a blob another site stored reads exactly like one nobody stored"
    thief.call("POST", f"/sites/iso-thief/releases/{rel}/changes", {"put": [{"path": "stolen", "sha256": sha(layer)}]}, expect=422)
    thief.call("POST", f"/sites/iso-thief/releases/{rel}/deb/stable/main/packages", {"sha256": sha(layer)}, expect=422)
    thief.call("POST", f"/sites/iso-thief/releases/{rel}/apk/v3.20/main/packages", {"sha256": sha(layer)}, expect=422)
    # No existence oracle: the thief's tokens see only their own site's blobs; the operator sees all.
    thief.call("GET", f"/blobs/sha256/{sha(layer)}", expect=404)
    admin.make_token("read", "iso-thief").call("GET", f"/blobs/sha256/{sha(layer)}", expect=404)
    assert admin.call("GET", f"/blobs/sha256/{sha(layer)}")["stored"] is True
    # Claiming the digest with other bytes is refused and spoils nothing.
    thief.call("PUT", f"/blobs/sha256/{sha(layer)}", data=b"x" * len(layer), expect=400)
    thief.call("PUT", f"/sites/iso-thief/releases/{rel}/paths/stolen", {"sha256": sha(layer)}, expect=422)
    owner = base64.b64encode(f"o:{victim['auth']['Authorization'].split()[1]}".encode()).decode()
    tok = w.get(victim["host"], "/v2/token?scope=repository:secret/app:pull", headers={"Authorization": f"Basic {owner}"}).json()["token"]
    r = w.get(victim["host"], f"/v2/secret/app/blobs/sha256:{sha(layer)}", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200 and r.content == layer
    # Whoever sends the bytes holds them: then the path is theirs to publish.
    thief.call("PUT", f"/blobs/sha256/{sha(layer)}", data=layer, expect=201)
    thief.call("PUT", f"/sites/iso-thief/releases/{rel}/paths/mine", {"sha256": sha(layer)}, expect=200)
    thief.call("GET", f"/blobs/sha256/{sha(layer)}", expect=200)


def test_the_mirror_never_hands_out_stored_content_on_an_upstreams_word(w, victim):
    admin, host = w.admin, "liar.iso.test"
    liar = FakeRegistry(lie=True)
    try:
        admin.site("iso-liar", host)
        admin.call("PUT", "/sites/iso-liar/oci/settings", {"upstreams": [{"url": liar.url}]})
        for hexd, body in ((sha(victim["layer"]), victim["layer"]), (victim["config"], None), (sha(victim["manifest"]), victim["manifest"])):
            r = w.get(host, f"/v2/any/thing/blobs/sha256:{hexd}")
            assert r.status_code in (404, 502), (r.status_code, r.content[:200])
            assert body is None or body not in r.content
            # A HEAD says what the upstream said (its made-up size), nothing of the store.
            r = w.get(host, f"/v2/other/repo/blobs/sha256:{hexd}", method="HEAD")
            assert r.status_code == 200 and r.headers["Content-Length"] == "1234", dict(r.headers)
        assert admin.call("GET", "/sites/iso-liar/oci/cache")["entries"] == [] or all(
            e["sha256"] is None for e in admin.call("GET", "/sites/iso-liar/oci/cache")["entries"])
        assert any(m == "GET" for m, _, _ in liar.seen), "the bytes were asked of the upstream"
    finally:
        liar.stop()


def ar_member(name: str, body: bytes) -> bytes:
    head = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
    return head + body + (b"\n" if len(body) % 2 else b"")


def ar_members(deb: bytes) -> list[tuple[str, bytes]]:
    out, at = [], 8
    while at + 60 <= len(deb):
        name, size = deb[at:at + 16].decode().strip().rstrip("/"), int(deb[at + 48:at + 58])
        out.append((name, deb[at + 60:at + 60 + size]))
        at += 60 + size + size % 2
    return out


def upload_deb(admin, site, rel, deb: bytes, expect: int):
    return admin.call("POST", f"/sites/{site}/releases/{rel}/deb/stable/main/packages?sha256={sha(deb)}", data=deb, expect=expect,
                      headers={"Content-Type": "application/vnd.debian.binary-package"})


def indexed(admin, digest: str) -> bool:
    """Whether D1 has a row for the blob (the operator's view: R2 may keep refused bytes unindexed)."""
    try:
        return admin.call("GET", f"/blobs/sha256/{digest}")["indexed"]
    except ApiError as e:
        assert e.status == 404
        return False


def test_broken_packages_are_refused_and_leave_no_blob(w, tmp_path):
    admin = w.admin
    admin.site("iso-pkgs", "pkgs.iso.test")
    rel = admin.draft("iso-pkgs")
    good = build_deb(tmp_path, "hello", "1.0-1", "amd64", "xz")
    upload_deb(admin, "iso-pkgs", rel, good, 201)
    evil_tar = io.BytesIO()
    with tarfile.open(fileobj=evil_tar, mode="w", format=tarfile.GNU_FORMAT) as t:
        info = tarfile.TarInfo("../../etc/passwd")
        info.size = 5
        t.addfile(info, io.BytesIO(b"root\n"))
    members = ar_members(good)
    evil = b"!<arch>\n" + ar_member("debian-binary", members[0][1]) + ar_member(members[1][0], members[1][1]) + ar_member("data.tar", evil_tar.getvalue())
    subprocess.run(["dpkg-deb", "-I", "/dev/stdin"], input=evil, check=True, capture_output=True)
    big_control = build_deb(tmp_path, "bigdesc", "1.0-1", "amd64", "xz", extra=f"X-Big: {'x' * ((1 << 20) + 100)}\n")
    cases = {
        "empty": (b"", "empty"),
        "truncated by 60 bytes": (good[:-60], "truncated"),
        "data.tar leaves the root": (evil, "leaves the package root"),
        "control file over 1 MiB": (big_control, "larger than"),
    }
    for what, (deb, says) in cases.items():
        r = upload_deb(admin, "iso-pkgs", rel, deb, 422)
        assert says in r["error"]["message"], (what, r)
        assert not indexed(admin, sha(deb)), what  # no blob row: never served, never referenceable
    # What `dpkg-deb -c` refuses, Wharf refused.
    assert subprocess.run(["dpkg-deb", "-c", "/dev/stdin"], input=good[:-60], capture_output=True).returncode != 0
    for version in ("1.0-rX", "1..0-r0", "1.0_foo"):
        apk = build_apk("hello", version, "x86_64")
        r = admin.call("POST", f"/sites/iso-pkgs/releases/{rel}/apk/v3.20/main/packages?sha256={sha(apk)}", data=apk, expect=422,
                       headers={"Content-Type": "application/octet-stream"})
        assert "pkgver" in r["error"]["message"], r
        assert not indexed(admin, sha(apk)), version
    r = admin.call("POST", f"/sites/iso-pkgs/releases/{rel}/apk/v3.20/main/packages?sha256={sha(b'')}", data=b"", expect=422,
                   headers={"Content-Type": "application/octet-stream"})
    assert "empty" in r["error"]["message"]


def test_fifty_concurrent_pushes_of_different_tags_all_land(w):
    admin, host = w.admin, "race.iso.test"
    admin.site("iso-race", host)
    auth = {"Authorization": f"Bearer {admin.make_token('publish', 'iso-race').token}"}
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(lambda i: push_image(w, host, "team/app", f"t{i}", auth, payload=f"layer {i}".encode()), range(50)))
    tags = w.get(host, "/v2/team/app/tags/list").json()["tags"]
    assert sorted(tags) == sorted(f"t{i}" for i in range(50))


def test_twenty_concurrent_skopeo_pushes_without_retries_all_land(w, hosts, tmp_path):
    admin, host = w.admin, hosts.add("skoprace.iso.test")
    admin.site("iso-skop", host)
    token = admin.make_token("publish", "iso-skop").token
    for i in range(20):
        oci_layout(tmp_path / f"img{i}", "v1", {f"file{i}.txt": f"image {i}\n".encode()})

    def push(i):
        return skopeo("copy", "--retry-times", "0", "--dest-tls-verify=false", "--dest-creds", f"ci:{token}",
                      f"oci:{tmp_path / f'img{i}'}:v1", f"docker://{host}:{w.port}/team/app:t{i}", check=False)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(push, range(20)))
    failed = [r.stderr for r in results if r.returncode != 0]
    assert not failed, failed[:3]
    tags = w.get(host, "/v2/team/app/tags/list").json()["tags"]
    assert sorted(tags) == sorted(f"t{i}" for i in range(20))


def test_large_packages_are_streamed_through_the_whole_check(w, tmp_path):
    """Packages larger than what the worker reads in one piece (the APK head is
    4 MiB) are checked whole as they stream from R2: data and names."""
    admin = w.admin
    admin.site("iso-big", "big.iso.test")
    rel = admin.draft("iso-big")
    noise = os.urandom(6 << 20)  # incompressible: the package is > 6 MiB
    ok = build_apk("bigpkg", "1.0-r0", "x86_64", payload=noise)
    assert len(ok) > 6 << 20
    add = lambda apk, expect: admin.call("POST", f"/sites/iso-big/releases/{rel}/apk/v3.20/main/packages?sha256={sha(apk)}", data=apk,
                                         expect=expect, headers={"Content-Type": "application/octet-stream"})
    add(ok, 201)
    evil = build_apk("evilpkg", "1.0-r0", "x86_64", payload=noise, data_path="../../etc/cron.d/evil")
    assert "leaves the package root" in add(evil, 422)["error"]["message"]
    # A large .deb whose data member is complete in length but corrupt inside.
    root = tmp_path / "bigdeb"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/big").mkdir(parents=True)
    (root / "usr/share/big/noise").write_bytes(noise)
    (root / "DEBIAN/control").write_text("Package: bigdeb\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: T <t@example.com>\nDescription: big\n")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(tmp_path / "big.deb")], check=True, capture_output=True)
    deb = (tmp_path / "big.deb").read_bytes()
    upload_deb(admin, "iso-big", rel, deb, 201)
    corrupt = bytearray(deb)
    mid = len(corrupt) - (3 << 20)
    corrupt[mid:mid + 64] = bytes(b ^ 0x5A for b in corrupt[mid:mid + 64])
    corrupt = bytes(corrupt)
    assert subprocess.run(["dpkg-deb", "-c", "/dev/stdin"], input=corrupt, capture_output=True).returncode != 0
    r = upload_deb(admin, "iso-big", rel, corrupt, 422)
    assert "data.tar is refused" in r["error"]["message"], r

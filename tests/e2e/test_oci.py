"""The OCI registry, proven with the real skopeo against the worker on workerd
(served over HTTPS: skopeo tries TLS first even with --tls-verify=false)."""

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from wharf import Wharf

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    w = Wharf(tmp_path_factory.mktemp("oci-state"), https=True, extra_vars={"MAX_BLOB_BYTES": str(1 << 30)})
    yield w
    w.stop()



def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def oci_layout(root: Path, tag: str, files: dict[str, bytes], gzipped: bool = True) -> dict:
    """A one-layer image in an OCI image layout, as `skopeo copy oci:` reads it
    (`gzipped=False`: an uncompressed tar layer, which skopeo compresses on
    the fly when pushing)."""
    (root / "blobs/sha256").mkdir(parents=True, exist_ok=True)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            t.addfile(info, io.BytesIO(data))
    layer = gzip.compress(tar.getvalue(), mtime=0) if gzipped else tar.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(tar.getvalue())}"]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{sha(config)}", "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzipped else ""),
                                       "digest": f"sha256:{sha(layer)}", "size": len(layer)}]}).encode()
    for blob in (layer, config, manifest):
        (root / "blobs/sha256" / sha(blob)).write_bytes(blob)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": f"sha256:{sha(manifest)}", "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return {"manifest": manifest, "config": config, "layer": layer}


def oci_multi_arch_layout(root: Path, tag: str, arches=("amd64", "arm64"), salt: bytes = b"", files=None, gzipped: bool = True) -> dict:
    """An image index of single-layer images (by default amd64, arm64) in an
    OCI layout; `files(arch)` gives a platform's files (default: arch.txt)."""
    files = files or (lambda arch: {"arch.txt": arch.encode() + salt})
    images = {arch: oci_layout(root / f"_{arch}", tag, files(arch), gzipped) for arch in arches}
    (root / "blobs/sha256").mkdir(parents=True, exist_ok=True)
    for image in images.values():
        for blob in (image["layer"], image["config"], image["manifest"]):
            (root / "blobs/sha256" / sha(blob)).write_bytes(blob)
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": f"sha256:{sha(i['manifest'])}", "size": len(i["manifest"]),
         "platform": {"architecture": arch, "os": "linux"}} for arch, i in images.items()]}).encode()
    (root / "blobs/sha256" / sha(index)).write_bytes(index)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{sha(index)}", "size": len(index),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return {"index": index, "images": images}


def skopeo(*args, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run(["skopeo", "--command-timeout", "120s", *args], capture_output=True, text=True, timeout=180)
    if check and r.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)}: {r.stderr}")
    return r


def test_skopeo_pushes_and_pulls(reg, hosts, tmp_path):
    admin = reg.admin
    site, host = "registry1", hosts.add("registry1.wharf.test")
    admin.site(site, host)
    token = admin.make_token("publish", site).token
    ref = f"{host}:{reg.port}/team/app"
    big = os.urandom(12 << 20)  # a layer larger than one small request
    image = oci_layout(tmp_path / "src", "v1", {"hello.txt": b"hello from wharf\n", "big.bin": big})

    # Anonymous push is refused; a publish token of the site pushes.
    denied = skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'src'}:v1", f"docker://{ref}:v1", check=False)
    assert denied.returncode != 0 and ("401" in denied.stderr or "unauthorized" in denied.stderr.lower()), denied.stderr
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", f"ci:{token}", f"oci:{tmp_path / 'src'}:v1", f"docker://{ref}:v1")
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", f"ci:{token}", f"oci:{tmp_path / 'src'}:v1", f"docker://{ref}:latest")

    # Anonymous pull: inspect, copy back byte for byte, list tags.
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}:v1").stdout)
    assert info["Digest"] == f"sha256:{sha(image['manifest'])}"
    assert info["Layers"] == [f"sha256:{sha(image['layer'])}"]
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}:v1", f"oci:{tmp_path / 'back'}:v1")
    back = json.loads((tmp_path / "back/index.json").read_text())["manifests"][0]
    assert back["digest"] == f"sha256:{sha(image['manifest'])}"
    assert (tmp_path / "back/blobs/sha256" / sha(image["layer"])).read_bytes() == image["layer"]
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{ref}").stdout)
    assert sorted(tags["Tags"]) == ["latest", "v1"]

    # The API by hand: headers, Range, errors, pagination.
    base = reg.get(host, "/v2/")
    assert base.status_code == 401 and base.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert base.headers["WWW-Authenticate"].startswith("Bearer realm=")
    m = reg.get(host, "/v2/team/app/manifests/v1", method="HEAD")
    assert m.status_code == 200 and m.headers["Content-Type"] == OCI_MANIFEST
    assert m.headers["Docker-Content-Digest"] == f"sha256:{sha(image['manifest'])}"
    assert int(m.headers["Content-Length"]) == len(image["manifest"])
    blob = f"/v2/team/app/blobs/sha256:{sha(image['layer'])}"
    part = reg.get(host, blob, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == image["layer"][10:20]
    missing = reg.get(host, f"/v2/team/app/blobs/sha256:{'0' * 64}")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert reg.get(host, "/v2/team/app/manifests/nope").json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert reg.get(host, "/v2/Team/app/tags/list").json()["errors"][0]["code"] == "NAME_INVALID"
    # A blob is the repository's: another repository of the site does not serve it.
    assert reg.get(host, f"/v2/other/blobs/sha256:{sha(image['layer'])}").status_code == 404
    page = reg.get(host, "/v2/team/app/tags/list?n=1")
    assert page.json() == {"name": "team/app", "tags": ["latest"]}
    assert page.headers["Link"] == '</v2/team/app/tags/list?n=1&last=latest>; rel="next"'
    assert reg.get(host, "/v2/team/app/tags/list?n=1&last=latest").json()["tags"] == ["v1"]

    # Each image push was one release (its blobs staged until the manifest
    # took them in): the tag's history is the site's.
    releases = admin.call("GET", f"/sites/{site}/releases")["releases"]
    assert [r["note"] for r in releases] == ["push manifest to team/app"] * 2, releases
    assert all(r["state"] in ("active", "retired") for r in releases)
    # Owning a blob takes its bytes: pushing another body under a stored digest
    # (the layer another repository holds) fails and grants nothing.
    auth = {"Authorization": f"Bearer {token}"}
    r = reg.get(host, f"/v2/thief/blobs/uploads/?digest=sha256:{sha(image['layer'])}", method="POST", data=b"not the layer", headers=auth)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert reg.get(host, f"/v2/thief/blobs/sha256:{sha(image['layer'])}").status_code == 404


def test_monolithic_and_chunked_uploads_by_hand(reg, hosts, tmp_path):
    admin = reg.admin
    site, host = "registry2", "registry2.wharf.test"
    admin.site(site, host)
    auth = {"Authorization": f"Bearer {admin.make_token('publish', site).token}"}
    data = b"monolithic blob\n"
    # POST with the digest and the body.
    r = reg.get(host, f"/v2/x/blobs/uploads/?digest=sha256:{sha(data)}", method="POST", data=data, headers=auth)
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/x/blobs/sha256:{sha(data)}"
    # A wrong digest is refused and nothing is stored.
    bad = reg.get(host, f"/v2/x/blobs/uploads/?digest=sha256:{'1' * 64}", method="POST", data=b"other", headers=auth)
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert reg.get(host, f"/v2/x/blobs/sha256:{'1' * 64}").status_code == 404
    # POST, PATCH, status, PUT.
    data2 = os.urandom(100_000)
    start = reg.get(host, "/v2/x/blobs/uploads/", method="POST", headers=auth)
    assert start.status_code == 202
    loc = start.headers["Location"]
    p = reg.get(host, loc, method="PATCH", data=data2, headers={**auth, "Content-Type": "application/octet-stream"})
    assert p.status_code == 202 and p.headers["Range"] == f"0-{len(data2) - 1}"
    assert reg.get(host, loc, headers=auth).status_code == 204
    wrong = reg.get(host, f"{loc}?digest=sha256:{'2' * 64}", method="PUT", headers=auth)
    assert wrong.status_code == 400 and wrong.json()["errors"][0]["code"] == "DIGEST_INVALID"
    done = reg.get(host, f"{loc}?digest=sha256:{sha(data2)}", method="PUT", headers=auth)
    assert done.status_code == 201, done.text
    assert reg.get(host, f"/v2/x/blobs/sha256:{sha(data2)}").content == data2
    assert reg.get(host, loc, headers=auth).status_code == 404, "a finished upload is gone"
    # Cross-repository mount within the site.
    mount = reg.get(host, f"/v2/y/blobs/uploads/?mount=sha256:{sha(data2)}&from=x", method="POST", headers=auth)
    assert mount.status_code == 201
    assert reg.get(host, f"/v2/y/blobs/sha256:{sha(data2)}").content == data2
    # A manifest whose blobs are missing is refused.
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{'3' * 64}", "size": 1},
                           "layers": []}).encode()
    r = reg.get(host, "/v2/x/manifests/t", method="PUT", data=manifest, headers={**auth, "Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    # Without a token: 401 with a challenge to the token endpoint.
    r = reg.get(host, "/v2/x/blobs/uploads/", method="POST")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="https://{host}/v2/token",service="{host}",scope="repository:x:pull,push"'


def test_the_docker_token_flow(reg, tmp_path):
    import base64
    admin = reg.admin
    site, host = "registry3", "registry3.wharf.test"
    admin.site(site, host)
    ping = reg.get(host, "/v2/")
    assert ping.status_code == 401 and ping.headers["WWW-Authenticate"].startswith('Bearer realm="https://registry3.wharf.test/v2/token"')
    anon = reg.get(host, "/v2/token?service=x&scope=repository:a/b:pull,push").json()
    assert anon["expires_in"] >= 60 and anon["token"] == anon["access_token"]
    bearer = {"Authorization": f"Bearer {anon['token']}"}
    assert reg.get(host, "/v2/", headers=bearer).status_code == 200
    # Pull-only: a push is challenged again.
    assert reg.get(host, "/v2/a/b/blobs/uploads/", method="POST", headers=bearer).status_code == 401
    creds = base64.b64encode(f"ci:{admin.make_token('publish', site).token}".encode()).decode()
    pushy = reg.get(host, "/v2/token?service=x&scope=repository:a/b:pull,push", headers={"Authorization": f"Basic {creds}"}).json()
    assert reg.get(host, "/v2/a/b/blobs/uploads/", method="POST", headers={"Authorization": f"Bearer {pushy['token']}"}).status_code == 202
    # The token is for that repository only, and a token of another site's key is refused.
    assert reg.get(host, "/v2/other/blobs/uploads/", method="POST", headers={"Authorization": f"Bearer {pushy['token']}"}).status_code == 401
    bad = base64.b64encode(b"ci:wharf_nope_nope").decode()
    assert reg.get(host, "/v2/token?scope=repository:a/b:push", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    tampered = pushy["token"][:-2] + ("AA" if not pushy["token"].endswith("AA") else "BB")
    assert reg.get(host, "/v2/", headers={"Authorization": f"Bearer {tampered}"}).status_code == 401


def push_blob(reg, host, name, data, auth):
    r = reg.get(host, f"/v2/{name}/blobs/uploads/?digest=sha256:{sha(data)}", method="POST", data=data, headers=auth)
    assert r.status_code == 201, r.text


def push_image(reg, host, name, tag, auth, payload=b"layer"):
    config, layer = b'{"architecture":"amd64","os":"linux"}', payload
    for b in (config, layer):
        push_blob(reg, host, name, b, auth)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{sha(config)}", "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{sha(layer)}", "size": len(layer)}]}).encode()
    r = reg.get(host, f"/v2/{name}/manifests/{tag}", method="PUT", data=manifest, headers={**auth, "Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return manifest, layer


def test_deletion_and_private_pull_are_per_site_settings(reg):
    admin = reg.admin
    site, host = "registry4", "registry4.wharf.test"
    admin.site(site, host)
    auth = {"Authorization": f"Bearer {admin.make_token('publish', site).token}"}
    manifest, layer = push_image(reg, host, "app", "v1", auth)
    reg_digest = f"sha256:{sha(manifest)}"
    push_image(reg, host, "app", "v2", auth, payload=b"layer two")
    # Off by default: 405 UNSUPPORTED.
    r = reg.get(host, "/v2/app/manifests/v1", method="DELETE", headers=auth)
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert admin.call("GET", f"/sites/{site}/oci/settings")["settings"] == {
        "anonymous_pull": True, "allow_delete": False, "upstreams": [], "tag_ttl_seconds": 300, "not_found_ttl_seconds": 60}
    admin.call("PUT", f"/sites/{site}/oci/settings", {"allow_delete": True})
    # A tag goes alone; a manifest by digest takes its tags with it; a blob goes.
    assert reg.get(host, "/v2/app/manifests/v2", method="DELETE", headers=auth).status_code == 202
    assert reg.get(host, "/v2/app/manifests/v2").status_code == 404
    assert reg.get(host, "/v2/app/tags/list").json()["tags"] == ["v1"]
    assert reg.get(host, f"/v2/app/manifests/{reg_digest}", method="DELETE", headers=auth).status_code == 202
    assert reg.get(host, "/v2/app/manifests/v1").status_code == 404
    assert reg.get(host, f"/v2/app/manifests/{reg_digest}").status_code == 404
    # A repository whose tags are all gone lists none (it still holds blobs).
    r = reg.get(host, "/v2/app/tags/list")
    assert r.status_code == 200 and r.json() == {"name": "app", "tags": []}, r.text
    assert reg.get(host, "/v2/nothing-here/tags/list").json()["errors"][0]["code"] == "NAME_UNKNOWN"
    # A tag that cannot exist is unknown to readers and refused to writers.
    r = reg.get(host, "/v2/app/manifests/.INVALID_MANIFEST_NAME")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    r = reg.get(host, "/v2/app/manifests/.bad", method="PUT", data=manifest, headers={**auth, "Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "TAG_INVALID"
    assert reg.get(host, f"/v2/app/blobs/sha256:{sha(layer)}", method="DELETE", headers=auth).status_code == 202
    assert reg.get(host, f"/v2/app/blobs/sha256:{sha(layer)}").json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert reg.get(host, f"/v2/app/blobs/sha256:{sha(layer)}", method="DELETE", headers=auth).status_code == 404
    # Deletion is a release like any push: rolling back brings the tag back.
    releases = admin.call("GET", f"/sites/{site}/releases")["releases"]
    before_delete = [r for r in releases if r["note"] == "push manifest to app"][0]["id"]
    admin.call("POST", f"/sites/{site}/rollback", {"to": before_delete})
    assert reg.get(host, "/v2/app/manifests/v2").status_code == 200

    # Private pull: anonymous callers are challenged; a read token pulls.
    admin.call("PUT", f"/sites/{site}/oci/settings", {"anonymous_pull": False})
    r = reg.get(host, "/v2/app/manifests/v2")
    assert r.status_code == 401 and 'scope="repository:app:pull"' in r.headers["WWW-Authenticate"]
    anon = reg.get(host, "/v2/token?scope=repository:app:pull").json()["token"]
    assert reg.get(host, "/v2/app/manifests/v2", headers={"Authorization": f"Bearer {anon}"}).status_code == 401
    import base64
    creds = base64.b64encode(f"me:{admin.make_token('read', site).token}".encode()).decode()
    tok = reg.get(host, "/v2/token?scope=repository:app:pull", headers={"Authorization": f"Basic {creds}"}).json()["token"]
    assert reg.get(host, "/v2/app/manifests/v2", headers={"Authorization": f"Bearer {tok}"}).status_code == 200
    # Uploads can always be cancelled by their pusher.
    start = reg.get(host, "/v2/app/blobs/uploads/", method="POST", headers=auth)
    assert reg.get(host, start.headers["Location"], method="DELETE", headers=auth).status_code == 204
    assert reg.get(host, start.headers["Location"], headers=auth).status_code == 404


def test_skopeo_copies_a_multi_arch_index_and_deletes(reg, hosts, tmp_path):
    admin = reg.admin
    site, host = "registry8", hosts.add("registry8.wharf.test")
    admin.site(site, host)
    admin.call("PUT", f"/sites/{site}/oci/settings", {"allow_delete": True})
    token = admin.make_token("publish", site).token
    multi = oci_multi_arch_layout(tmp_path / "src", "v1")
    ref = f"docker://{host}:{reg.port}/team/multi"
    skopeo("copy", "--all", "--dest-tls-verify=false", "--dest-creds", f"ci:{token}", f"oci:{tmp_path / 'src'}:v1", f"{ref}:v1")
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"{ref}:v1").stdout.encode()
    assert raw == multi["index"]
    for arch, image in multi["images"].items():
        info = json.loads(skopeo("--override-arch", arch, "inspect", "--tls-verify=false", f"{ref}:v1").stdout)
        assert info["Layers"] == [f"sha256:{sha(image['layer'])}"]  # the platform's own image
    skopeo("copy", "--all", "--src-tls-verify=false", f"{ref}:v1", f"oci:{tmp_path / 'back'}:v1")
    back = json.loads((tmp_path / "back/index.json").read_text())["manifests"][0]
    assert back["digest"] == f"sha256:{sha(multi['index'])}"
    # skopeo delete removes the index by digest, and the tag with it.
    skopeo("delete", "--tls-verify=false", "--creds", f"ci:{token}", f"{ref}:v1")
    gone = skopeo("inspect", "--raw", "--tls-verify=false", f"{ref}:v1", check=False)
    assert gone.returncode != 0 and "manifest unknown" in gone.stderr.lower(), gone.stderr


def test_referrers_and_a_multi_arch_index(reg, tmp_path):
    admin = reg.admin
    site, host = "registry5", "registry5.wharf.test"
    admin.site(site, host)
    auth = {"Authorization": f"Bearer {admin.make_token('publish', site).token}"}
    amd, _ = push_image(reg, host, "multi", "amd64", auth, payload=b"amd64 layer")
    arm, _ = push_image(reg, host, "multi", "arm64", auth, payload=b"arm64 layer")
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": f"sha256:{sha(amd)}", "size": len(amd), "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": OCI_MANIFEST, "digest": f"sha256:{sha(arm)}", "size": len(arm), "platform": {"architecture": "arm64", "os": "linux"}}]}).encode()
    r = reg.get(host, "/v2/multi/manifests/latest", method="PUT", data=index,
                headers={**auth, "Content-Type": "application/vnd.oci.image.index.v1+json"})
    assert r.status_code == 201, r.text
    got = reg.get(host, "/v2/multi/manifests/latest")
    assert got.content == index and got.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    # Accept negotiation: a client that takes single manifests only cannot use an index.
    only_manifests = {"Accept": f"application/vnd.docker.distribution.manifest.v2+json, {OCI_MANIFEST}"}
    r = reg.get(host, "/v2/multi/manifests/latest", headers=only_manifests)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", r.text
    r = reg.get(host, "/v2/multi/manifests/latest", headers={"Accept": f"{OCI_MANIFEST}, application/vnd.oci.image.index.v1+json"})
    assert r.status_code == 200 and r.content == index
    assert reg.get(host, "/v2/multi/manifests/amd64", headers=only_manifests).content == amd
    # An index naming a manifest the repository lacks is refused.
    bad = index.replace(sha(arm).encode(), b"4" * 64)
    r = reg.get(host, "/v2/multi/manifests/broken", method="PUT", data=bad, headers={**auth, "Content-Type": "application/vnd.oci.image.index.v1+json"})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"

    # An SBOM attached to the amd64 image.
    empty = b"{}"
    push_blob(reg, host, "multi", empty, auth)
    push_blob(reg, host, "multi", b"sbom contents", auth)
    sbom = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom",
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": f"sha256:{sha(empty)}", "size": 2},
                       "layers": [{"mediaType": "text/plain", "digest": f"sha256:{sha(b'sbom contents')}", "size": 13}],
                       "subject": {"mediaType": OCI_MANIFEST, "digest": f"sha256:{sha(amd)}", "size": len(amd)},
                       "annotations": {"org.example.kind": "sbom"}}).encode()
    r = reg.get(host, f"/v2/multi/manifests/sha256:{sha(sbom)}", method="PUT", data=sbom, headers={**auth, "Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers["OCI-Subject"] == f"sha256:{sha(amd)}"
    refs = reg.get(host, f"/v2/multi/referrers/sha256:{sha(amd)}")
    assert refs.status_code == 200 and refs.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    assert refs.json()["manifests"] == [{"mediaType": OCI_MANIFEST, "digest": f"sha256:{sha(sbom)}", "size": len(sbom),
                                         "artifactType": "application/vnd.example.sbom", "annotations": {"org.example.kind": "sbom"}}]
    filtered = reg.get(host, f"/v2/multi/referrers/sha256:{sha(amd)}?artifactType=application/vnd.other")
    assert filtered.json()["manifests"] == [] and filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert reg.get(host, f"/v2/multi/referrers/sha256:{sha(arm)}").json()["manifests"] == []
    # Deleting the SBOM removes it from the referrers list.
    admin.call("PUT", f"/sites/{site}/oci/settings", {"allow_delete": True})
    assert reg.get(host, f"/v2/multi/manifests/sha256:{sha(sbom)}", method="DELETE", headers=auth).status_code == 202
    assert reg.get(host, f"/v2/multi/referrers/sha256:{sha(amd)}").json()["manifests"] == []


def test_a_chunked_upload_larger_than_64_mib(reg):
    admin = reg.admin
    site, host = "registry6", "registry6.wharf.test"
    admin.site(site, host)
    auth = {"Authorization": f"Bearer {admin.make_token('publish', site).token}"}
    chunk = 25 << 20
    data = os.urandom(3 * chunk + 12345)  # ~75 MiB in four pieces
    loc = reg.get(host, "/v2/big/blobs/uploads/", method="POST", headers=auth).headers["Location"]
    for i in range(3):
        piece = data[i * chunk:(i + 1) * chunk]
        r = reg.get(host, loc, method="PATCH", data=piece, headers={**auth, "Content-Type": "application/octet-stream",
                                                                    "Content-Range": f"{i * chunk}-{(i + 1) * chunk - 1}"})
        assert r.status_code == 202 and r.headers["Range"] == f"0-{(i + 1) * chunk - 1}", r.text
    # A chunk out of order is refused with the range the upload has.
    r = reg.get(host, loc, method="PATCH", data=b"x", headers={**auth, "Content-Range": "5-5"})
    assert r.status_code == 416 and r.headers["Range"] == f"0-{3 * chunk - 1}"
    status = reg.get(host, loc, headers=auth)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{3 * chunk - 1}"
    # The closing PUT carries the last piece.
    r = reg.get(host, f"{loc}?digest=sha256:{sha(data)}", method="PUT", data=data[3 * chunk:], headers=auth)
    assert r.status_code == 201, r.text
    got = reg.get(host, f"/v2/big/blobs/sha256:{sha(data)}")
    assert got.status_code == 200 and len(got.content) == len(data) and sha(got.content) == sha(data)
    # A PATCH without Content-Length (chunked transfer, as podman sends a layer it
    # compresses on the fly) spanning several 8 MiB parts, in pieces that do
    # not divide a part (the worker cuts them at part boundaries).
    unsized = os.urandom((20 << 20) + 12345)
    loc = reg.get(host, "/v2/big/blobs/uploads/", method="POST", headers=auth).headers["Location"]
    step = 1_000_003
    pieces = (unsized[i:i + step] for i in range(0, len(unsized), step))
    r = reg.get(host, loc, method="PATCH", data=pieces, headers=auth)
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(unsized) - 1}", r.text
    assert reg.get(host, f"{loc}?digest=sha256:{sha(unsized)}", method="PUT", headers=auth).status_code == 201
    assert sha(reg.get(host, f"/v2/big/blobs/sha256:{sha(unsized)}").content) == sha(unsized)
    # Chunks whose sum is not the digest: refused, nothing stored.
    loc = reg.get(host, "/v2/big/blobs/uploads/", method="POST", headers=auth).headers["Location"]
    reg.get(host, loc, method="PATCH", data=b"abc", headers=auth)
    reg.get(host, loc, method="PATCH", data=b"def", headers=auth)
    r = reg.get(host, f"{loc}?digest=sha256:{sha(b'abcdeX')}", method="PUT", headers=auth)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert reg.get(host, f"/v2/big/blobs/sha256:{sha(b'abcdeX')}").status_code == 404
    loc = reg.get(host, "/v2/big/blobs/uploads/", method="POST", headers=auth).headers["Location"]
    reg.get(host, loc, method="PATCH", data=b"abc", headers=auth)
    reg.get(host, loc, method="PATCH", data=b"def", headers=auth)
    assert reg.get(host, f"{loc}?digest=sha256:{sha(b'abcdef')}", method="PUT", headers=auth).status_code == 201
    assert reg.get(host, f"/v2/big/blobs/sha256:{sha(b'abcdef')}").content == b"abcdef"


def test_abandoned_uploads_and_unclaimed_blobs_are_swept(tmp_path):
    """After UPLOAD_TTL_SECONDS an unfinished upload loses its row and its
    chunks in R2, and a blob no manifest took up stops being the repository's."""
    w = Wharf(tmp_path / "state", https=True, extra_vars={"UPLOAD_TTL_SECONDS": "1"})
    try:
        admin, host = w.admin, "sweep.wharf.test"
        admin.site("sweep", host)
        auth = {"Authorization": f"Bearer {admin.make_token('publish', 'sweep').token}"}
        staged = os.urandom(1000)
        r = w.get(host, f"/v2/s/blobs/uploads/?digest=sha256:{sha(staged)}", method="POST", data=staged, headers=auth)
        assert r.status_code == 201, r.text
        loc = w.get(host, "/v2/s/blobs/uploads/", method="POST", headers=auth).headers["Location"]
        upload_id = loc.rstrip("/").rsplit("/", 1)[1]
        for chunk in (b"left ", b"behind"):
            assert w.get(host, loc, method="PATCH", data=chunk, headers=auth).status_code == 202
        assert len(w.r2_keys(f"uploads/{upload_id}/")) == 2
        assert w.get(host, f"/v2/s/blobs/sha256:{sha(staged)}", headers=auth).content == staged
        deadline = time.time() + 30
        while True:  # any new upload sweeps what is older than the TTL
            time.sleep(0.5)
            w.get(host, "/v2/s/blobs/uploads/", method="POST", headers=auth)
            if w.get(host, loc, headers=auth).status_code == 404:
                break
            assert time.time() < deadline, "the upload was never swept"
        assert w.r2_keys(f"uploads/{upload_id}/") == []
        r = w.get(host, f"/v2/s/blobs/sha256:{sha(staged)}", headers=auth)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    finally:
        w.stop()


def podman(root: Path, *args, check=True):
    r = subprocess.run(["podman", "--root", str(root / "storage"), "--runroot", str(root / "run"), "--storage-driver", "vfs", *args],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "REGISTRY_AUTH_FILE": str(root / "auth.json")})
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {r.stderr}")
    return r


@pytest.fixture
def podroot():
    """podman wants a short runroot (under 50 characters)."""
    import shutil
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="wharf-pod-", dir="/tmp"))
    (d / "auth.json").write_text("{}")
    yield d
    subprocess.run(["podman", "--root", str(d / "storage"), "--runroot", str(d / "run"), "--storage-driver", "vfs", "system", "reset", "--force"],
                   capture_output=True, timeout=120)
    shutil.rmtree(d, ignore_errors=True)


def test_podman_logs_in_pushes_and_pulls(reg, hosts, tmp_path, podroot):
    admin = reg.admin
    site, host = "registry7", hosts.add("registry7.wharf.test")
    admin.site(site, host)
    token = admin.make_token("publish", site).token
    image = oci_layout(tmp_path / "src", "v1", {"podman.txt": b"pushed by podman\n"})
    ref = f"{host}:{reg.port}/pod/app"
    podman(podroot, "pull", "--tls-verify=false", f"oci:{tmp_path / 'src'}:v1")
    pulled_id = podman(podroot, "images", "--format", "{{.ID}}").stdout.split()[0]
    denied = podman(podroot, "push", "--tls-verify=false", pulled_id, f"docker://{ref}:v1", check=False)
    # Refused by the registry for want of a login (not a DNS, TLS or storage failure).
    said = denied.stderr.strip().splitlines()[-1]
    assert denied.returncode != 0 and "initiating layer upload" in said and said.endswith(": unauthorized"), denied.stderr
    podman(podroot, "login", "--tls-verify=false", "--username", "ci", "--password", token, f"{host}:{reg.port}")
    podman(podroot, "push", "--tls-verify=false", pulled_id, f"docker://{ref}:v1")
    podman(podroot, "rmi", "--all", "--force")
    podman(podroot, "pull", "--tls-verify=false", f"{ref}:v1")
    assert podman(podroot, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split() == [f"{ref}:v1"]
    tags = reg.get(host, "/v2/pod/app/tags/list").json()
    assert tags == {"name": "pod/app", "tags": ["v1"]}
    manifest = reg.get(host, "/v2/pod/app/manifests/v1").json()
    assert len(manifest["layers"]) == len(json.loads(image["manifest"])["layers"]) == 1


def test_the_flows_of_the_distribution_spec_conformance_suite(reg):
    """The requests the OCI conformance suite (distribution-spec 1.1) makes that
    the tests above do not: a supplement written from the suite's workflows,
    since the suite itself (Go, ginkgo v2) cannot be built on this machine."""
    admin = reg.admin
    site, host = "conformance", "conformance.wharf.test"
    admin.site(site, host)
    admin.call("PUT", f"/sites/{site}/oci/settings", {"allow_delete": True})
    auth = {"Authorization": f"Bearer {admin.make_token('publish', site).token}"}

    def call(method, path, **kw):
        return reg.get(host, path, method=method, headers={**auth, **kw.pop("headers", {})}, **kw)

    name = "conformance/repo"
    # Streamed: one PATCH without Content-Range, then a PUT with no body.
    blob_a = os.urandom(42)
    loc = call("POST", f"/v2/{name}/blobs/uploads/").headers["Location"]
    r = call("PATCH", loc, data=blob_a, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.headers["Range"] == "0-41"
    r = call("PUT", f"{r.headers['Location']}?digest=sha256:{sha(blob_a)}", headers={"Content-Length": "0"})
    assert r.status_code == 201 and r.headers["Location"]
    # Chunked: a chunk sent again is out of order (416); the status keeps the range.
    blob_b = os.urandom(42)
    first, second = blob_b[:22], blob_b[22:]
    loc = call("POST", f"/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"}).headers["Location"]
    r = call("PATCH", loc, data=first, headers={"Content-Range": "0-21"})
    assert r.status_code == 202 and r.headers["Range"] == "0-21"
    assert call("PATCH", loc, data=first, headers={"Content-Range": "0-21"}).status_code == 416
    r = call("GET", loc)
    assert r.status_code == 204 and r.headers["Range"] == "0-21" and r.headers["Location"]
    r = call("PATCH", r.headers["Location"], data=second, headers={"Content-Range": "22-41"})
    assert r.status_code == 202 and r.headers["Range"] == "0-41"
    assert call("PUT", f"{r.headers['Location']}?digest=sha256:{sha(blob_b)}", headers={"Content-Length": "0"}).status_code == 201
    assert call("GET", f"/v2/{name}/blobs/sha256:{sha(blob_b)}").content == blob_b
    # Mount: without from, or of a blob the source lacks, a session starts (202).
    other = "conformance-other/x"
    r = call("POST", f"/v2/{other}/blobs/uploads/?mount=sha256:{sha(b'hello world')}")
    assert r.status_code == 202 and r.headers["Location"].startswith(f"/v2/{other}/blobs/uploads/")
    r = call("POST", f"/v2/{other}/blobs/uploads/?mount=sha256:{sha(blob_a)}&from={name}")
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/{other}/blobs/sha256:{sha(blob_a)}"
    # A 4 MiB blob in one request.
    big = os.urandom(4 << 20)
    push_blob(reg, host, name, big, auth)

    # Manifests: no layers, a custom config type, an artifactType, an index, a nested index.
    empty = b"{}"
    push_blob(reg, host, name, empty, auth)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}, indent="\t").encode()
    push_blob(reg, host, name, config, auth)
    d = lambda b, mt: {"mediaType": mt, "digest": f"sha256:{sha(b)}", "size": len(b)}  # noqa: E731
    image = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {**d(config, "application/vnd.oci.image.config.v1+json"),
                        "data": base64.b64encode(config).decode(), "newUnspecifiedField": "aGVsbG8="},
                        "layers": [d(big, "application/vnd.oci.image.layer.v1.tar+zstd")]}, indent="\t").encode()
    no_layers = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": d(config, "application/vnd.oci.image.config.v1+json"),
                            "layers": [d(empty, "application/vnd.oci.empty.v1+json")]}).encode()
    config_type = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": d(blob_a, "application/vnd.example.bagel"),
                              "layers": [d(big, "application/vnd.oci.image.layer.v1.tar+gzip")]}).encode()
    artifact = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.jam",
                           "config": d(empty, "application/vnd.oci.empty.v1+json"), "layers": [d(blob_b, "application/vnd.example.jam")],
                           "subject": d(image, OCI_MANIFEST), "annotations": {"org.example.k": "artifact"}}).encode()
    dangling = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.jam",
                           "config": d(empty, "application/vnd.oci.empty.v1+json"), "layers": [d(blob_b, "application/vnd.example.jam")],
                           "subject": {"mediaType": OCI_MANIFEST, "digest": f"sha256:{'7' * 64}", "size": 10}}).encode()
    for tag, body in (("tagtest0", image), ("emptylayer", no_layers)):
        r = call("PUT", f"/v2/{name}/manifests/{tag}", data=body, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201 and r.headers["Location"], r.text
    for body in (config_type, artifact, dangling):
        r = call("PUT", f"/v2/{name}/manifests/sha256:{sha(body)}", data=body, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == f"sha256:{'7' * 64}"
    oci_index = "application/vnd.oci.image.index.v1+json"
    index = json.dumps({"schemaVersion": 2, "mediaType": oci_index, "artifactType": "application/vnd.example.index",
                        "manifests": [d(no_layers, OCI_MANIFEST)], "subject": d(image, OCI_MANIFEST),
                        "annotations": {"org.example.k": "index"}}, indent="\t").encode()
    nested = json.dumps({"schemaVersion": 2, "mediaType": oci_index, "manifests": [d(index, oci_index)]}).encode()
    for body in (index, nested):
        r = call("PUT", f"/v2/{name}/manifests/sha256:{sha(body)}", data=body, headers={"Content-Type": oci_index})
        assert r.status_code == 201, r.text
    r = call("HEAD", f"/v2/{name}/manifests/sha256:{sha(image)}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == f"sha256:{sha(image)}"
    # Referrers: of the image (an artifact and an index), of a missing subject, of nothing.
    refs = call("GET", f"/v2/{name}/referrers/sha256:{sha(image)}")
    assert refs.status_code == 200 and refs.headers["Content-Type"] == oci_index
    assert sorted(m["digest"] for m in refs.json()["manifests"]) == sorted([f"sha256:{sha(artifact)}", f"sha256:{sha(index)}"])
    assert all(len(m["annotations"]) == 1 for m in refs.json()["manifests"])
    assert [m["digest"] for m in call("GET", f"/v2/{name}/referrers/sha256:{'7' * 64}").json()["manifests"]] == [f"sha256:{sha(dangling)}"]
    r = call("GET", f"/v2/{name}/referrers/sha256:{sha(b'hello world')}")
    assert r.status_code == 200 and r.headers["Content-Type"] == oci_index and r.json()["manifests"] == []
    # Errors: a manifest PUT by a malformed digest; tags after a delete.
    r = call("PUT", f"/v2/{name}/manifests/sha256:totallywrong", data=b"blablabla", headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code in (400, 404) and r.json()["errors"][0]["code"] in ("DIGEST_INVALID", "MANIFEST_INVALID")
    before = len(call("GET", f"/v2/{name}/tags/list").json()["tags"])
    assert call("DELETE", f"/v2/{name}/manifests/tagtest0").status_code == 202
    assert call("DELETE", f"/v2/{name}/manifests/sha256:{sha(image)}").status_code == 202
    assert call("GET", f"/v2/{name}/manifests/sha256:{sha(image)}").status_code == 404
    assert len(call("GET", f"/v2/{name}/tags/list").json()["tags"]) < before
    assert call("DELETE", f"/v2/{name}/blobs/sha256:{sha(config)}").status_code == 202
    assert call("GET", f"/v2/{name}/blobs/sha256:{sha(config)}").status_code == 404


def test_an_upload_sent_in_one_chunk_is_kept_where_it_was_written(reg):
    """A blob pushed as POST + one PATCH + PUT (what docker, podman and skopeo
    do) is hashed as it arrives and stays where the PATCH wrote it: no copy
    under blobs/sha256/ is made (R2's own metadata says so), and it is served
    from there, whole and by range, with or without a Content-Length on the
    PATCH. Several chunks are still concatenated (and checked by R2); a wrong
    digest is refused; a second upload of the same bytes leaves no second copy."""
    admin, host = reg.admin, "onechunk.wharf.test"
    admin.site("onechunk", host)
    auth = {"Authorization": f"Bearer {admin.make_token('publish', 'onechunk').token}"}

    def upload(chunks, digest, sized=True):
        loc = reg.get(host, "/v2/one/blobs/uploads/", method="POST", headers=auth).headers["Location"]
        upload_id = loc.rstrip("/").rsplit("/", 1)[1]
        for c in chunks:
            data = c if sized else iter([c[: len(c) // 2], c[len(c) // 2:]])  # a generator: chunked, no length
            assert reg.get(host, loc, method="PATCH", data=data, headers=auth).status_code == 202
        return upload_id, reg.get(host, f"{loc}?digest=sha256:{digest}", method="PUT", headers=auth)

    for sized in (True, False):
        blob = os.urandom(300_000)
        upload_id, r = upload([blob], sha(blob), sized)
        assert r.status_code == 201, r.text
        assert reg.r2_keys(f"blobs/sha256/{sha(blob)}") == [], "no copy was written under the digest"
        assert len(reg.r2_keys(f"uploads/{upload_id}/")) == 1, "the chunk is the blob"
        got = reg.get(host, f"/v2/one/blobs/sha256:{sha(blob)}", headers=auth)
        assert got.status_code == 200 and got.content == blob
        part = reg.get(host, f"/v2/one/blobs/sha256:{sha(blob)}", headers={**auth, "Range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == blob[1000:2000]
        # The same bytes again: the first location stands, the new chunk goes.
        again_id, r = upload([blob], sha(blob), sized)
        assert r.status_code == 201 and reg.r2_keys(f"uploads/{again_id}/") == []
    # A wrong digest: refused, nothing recorded.
    blob = os.urandom(50_000)
    _, r = upload([blob], sha(b"something else"))
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert reg.get(host, f"/v2/one/blobs/sha256:{sha(b'something else')}", headers=auth).status_code == 404
    # Two chunks: concatenated under the digest, the chunks deleted.
    a, b = os.urandom(70_000), os.urandom(70_000)
    upload_id, r = upload([a, b], sha(a + b))
    assert r.status_code == 201
    assert reg.r2_keys(f"blobs/sha256/{sha(a + b)}") == [f"blobs/sha256/{sha(a + b)}"] and reg.r2_keys(f"uploads/{upload_id}/") == []
    assert reg.get(host, f"/v2/one/blobs/sha256:{sha(a + b)}", headers=auth).content == a + b

"""The pull-through mirror, proven with the real skopeo (and podman) against the
worker on workerd, with Debian's docker-registry started here on loopback as the
upstream: open, and behind the Docker token flow with credentials."""

import os
import threading
import time
from pathlib import Path

import pytest
from debian import Hosts
from test_oci import oci_layout, oci_multi_arch_layout, sha, skopeo
from upstream import Front, RedirectingFront, TokenServer, Upstream
from wharf import Wharf

USER, PASSWORD = "mirror-user", "s3cret-" + os.urandom(4).hex()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    hosts = Hosts()
    token = TokenServer(root, USER, PASSWORD)
    open_up = Upstream(root / "open")
    private_up = Upstream(root / "private", token)
    w = Wharf(root / "state", https=True, extra_vars={"UPSTREAM_PASSWORD": PASSWORD})

    class Env:
        pass

    e = Env()
    e.root, e.hosts, e.token, e.open, e.private, e.wharf = root, hosts, token, open_up, private_up, w
    yield e
    w.stop()
    open_up.stop()
    private_up.stop()
    token.stop()
    hosts.cleanup()


def site(e, name: str, **settings) -> str:
    host = e.hosts.add(f"{name}.mirror.wharf.test")
    e.wharf.admin.site(name, host)
    e.wharf.admin.call("PUT", f"/sites/{name}/oci/settings", settings)
    return f"{host}:{e.wharf.port}"


def seed(e, upstream: Upstream, ref: str, payload: bytes, creds: str | None = None) -> dict:
    """Pushes a one-layer image to the upstream with skopeo."""
    layout = e.root / ("layout-" + os.urandom(4).hex())
    image = oci_layout(layout, "v", {"payload.bin": payload})
    args = ["copy", "--dest-tls-verify=false"]
    if creds:
        args += ["--dest-creds", creds]
    skopeo(*args, f"oci:{layout}:v", f"docker://{upstream.address}/{ref}")
    return image


def cache(e, name: str, **query) -> list[dict]:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return e.wharf.admin.call("GET", f"/sites/{name}/oci/cache?{q}")["entries"]


def wait_cached(e, name: str, kind: str, reference: str) -> dict:
    """The cache entry, once the worker has stored it (blobs are stored after the response)."""
    for _ in range(100):
        for entry in cache(e, name):
            if entry["kind"] == kind and entry["reference"] == reference and entry["sha256"]:
                return entry
        time.sleep(0.1)
    raise AssertionError(f"{kind} {reference} was never cached: {cache(e, name)}")


def digest_of(ref: str, *extra) -> str:
    import json
    return json.loads(skopeo("inspect", "--tls-verify=false", *extra, f"docker://{ref}").stdout)["Digest"]


def test_cold_pull_then_warm_pull_with_the_upstream_stopped(env, tmp_path):
    e = env
    image = seed(e, e.open, "team/app:v1", os.urandom(3 << 20))
    reg = site(e, "mirror-cold", upstreams=[{"url": e.open.url}], tag_ttl_seconds=0)
    skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/team/app:v1", f"dir:{tmp_path / 'cold'}")
    assert (tmp_path / "cold" / sha(image["layer"])).read_bytes() == image["layer"]
    assert digest_of(f"{reg}/team/app:v1") == f"sha256:{sha(image['manifest'])}"
    layer = wait_cached(e, "mirror-cold", "blob", sha(image["layer"]))
    assert layer["size"] == len(image["layer"]) and layer["upstream"] == "" and layer["repository"] == "team/app"
    wait_cached(e, "mirror-cold", "blob", sha(image["config"]))
    assert wait_cached(e, "mirror-cold", "tag", "v1")["sha256"] == sha(image["manifest"])
    assert e.wharf.admin.call("GET", f"/blobs/sha256/{sha(image['layer'])}")["stored"]

    # Warm, with the upstream down: the tag's revalidation (TTL 0) fails, so
    # the cached manifest and blobs are served (stale-if-error).
    e.open.stop()
    try:
        skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/team/app:v1", f"dir:{tmp_path / 'warm'}")
        assert (tmp_path / "warm" / sha(image["layer"])).read_bytes() == image["layer"]
        # What was never cached is an error, not a hang.
        r = e.wharf.get(reg.split(":")[0], "/v2/team/other/manifests/v1")
        assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
    finally:
        e.open.start()

    # A second mirror site does not get the blobs the store holds for the first
    # on the upstream's word (a HEAD): it pulls and checks them itself, since an
    # upstream a tenant controls could claim any digest.
    blob_path = f"/v2/team/app/blobs/sha256:{sha(image['layer'])}"
    gets = e.open.requests_seen("GET", blob_path)
    reg2 = site(e, "mirror-cold2", upstreams=[{"url": e.open.url}])
    skopeo("copy", "--src-tls-verify=false", f"docker://{reg2}/team/app:v1", f"dir:{tmp_path / 'second'}")
    assert (tmp_path / "second" / sha(image["layer"])).read_bytes() == image["layer"]
    assert e.open.requests_seen("GET", blob_path) == gets + 1, "the second site fetched the layer itself"

    # Another site (no mirror) cannot read the cached content by digest.
    other = e.hosts.add("no-mirror.mirror.wharf.test")
    e.wharf.admin.site("no-mirror", other)
    r = e.wharf.get(other, f"/v2/team/app/blobs/sha256:{sha(image['layer'])}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    r = e.wharf.get(other, f"/v2/team/app/manifests/sha256:{sha(image['manifest'])}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_tags_are_revalidated_with_head_and_a_moved_tag_is_fetched(env):
    e = env
    first = seed(e, e.open, "team/rev:v1", b"first")
    reg = site(e, "mirror-rev", upstreams=[{"url": e.open.url}], tag_ttl_seconds=3600)
    assert digest_of(f"{reg}/team/rev:v1") == f"sha256:{sha(first['manifest'])}"
    second = seed(e, e.open, "team/rev:v1", b"second")
    # Within the TTL the cached tag is served without asking the upstream.
    gets = e.open.requests_seen("GET", "/v2/team/rev/manifests/v1")
    heads = e.open.requests_seen("HEAD", "/v2/team/rev/manifests/v1")
    assert digest_of(f"{reg}/team/rev:v1") == f"sha256:{sha(first['manifest'])}"
    assert e.open.requests_seen("HEAD", "/v2/team/rev/manifests/v1") == heads
    # Past the TTL: HEAD sees the tag moved, GET fetches the new manifest.
    e.wharf.admin.call("PUT", "/sites/mirror-rev/oci/settings", {"upstreams": [{"url": e.open.url}], "tag_ttl_seconds": 0})
    assert digest_of(f"{reg}/team/rev:v1") == f"sha256:{sha(second['manifest'])}"
    assert e.open.requests_seen("HEAD", "/v2/team/rev/manifests/v1") == heads + 1
    assert e.open.requests_seen("GET", "/v2/team/rev/manifests/v1") == gets + 1
    # Unchanged: HEAD only, no pull of the manifest.
    assert digest_of(f"{reg}/team/rev:v1") == f"sha256:{sha(second['manifest'])}"
    assert e.open.requests_seen("HEAD", "/v2/team/rev/manifests/v1") == heads + 2
    assert e.open.requests_seen("GET", "/v2/team/rev/manifests/v1") == gets + 1
    # A new tag pointing at a manifest the cache holds costs no pull either.
    seed(e, e.open, "team/rev:v2", b"second")
    assert digest_of(f"{reg}/team/rev:v2") == f"sha256:{sha(second['manifest'])}"
    assert e.open.requests_seen("HEAD", "/v2/team/rev/manifests/v2") == 1
    assert e.open.requests_seen("GET", "/v2/team/rev/manifests/v2") == 0


def test_a_corrupted_upstream_blob_is_rejected_and_not_cached(env, tmp_path):
    e = env
    image = seed(e, e.open, "team/bad:v1", os.urandom(1 << 20))
    reg = site(e, "mirror-bad", upstreams=[{"url": e.open.url}])
    stored = e.open.blob_file(sha(image["layer"]))
    good = stored.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    stored.write_bytes(bytes(bad))
    try:
        r = skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/team/bad:v1", f"dir:{tmp_path / 'bad'}", check=False)
        assert r.returncode != 0 and "digest" in r.stderr.lower(), r.stderr
        # The copy R2 was given failed its sha256 check (the worker says so once
        # the background copy is over): nothing is stored or cached.
        line = e.wharf.wait_log(f"mirror: sha256:{sha(image['layer'])} from")
        assert "was not cached" in line, line
        assert not any(x["kind"] == "blob" and x["reference"] == sha(image["layer"]) for x in cache(e, "mirror-bad"))
        status = e.wharf.admin.call("GET", f"/blobs/sha256/{sha(image['layer'])}", expect=404)
        assert status["error"]["code"] == "not_found"
    finally:
        stored.write_bytes(good)
    skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/team/bad:v1", f"dir:{tmp_path / 'good'}")
    assert (tmp_path / "good" / sha(image["layer"])).read_bytes() == image["layer"]
    wait_cached(e, "mirror-bad", "blob", sha(image["layer"]))


def test_a_private_upstream_behind_the_docker_token_flow(env, tmp_path):
    e = env
    image = seed(e, e.private, "team/secret:v1", os.urandom(1 << 20), creds=f"{USER}:{PASSWORD}")
    private = {"prefix": "private", "url": e.private.url, "username": USER, "password_secret": "UPSTREAM_PASSWORD"}
    reg = site(e, "mirror-private", upstreams=[private])
    skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/private/team/secret:v1", f"dir:{tmp_path / 'p'}")
    assert (tmp_path / "p" / sha(image["layer"])).read_bytes() == image["layer"]
    assert skopeo("list-tags", "--tls-verify=false", f"docker://{reg}/private/team/secret").stdout.count('"v1"') == 1
    # Names outside the prefix have no upstream here.
    r = e.wharf.get(reg.split(":")[0], "/v2/team/secret/manifests/v1")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"

    # Without the credentials the upstream's token endpoint refuses: an error, nothing cached.
    anon = site(e, "mirror-anon", upstreams=[{"prefix": "private", "url": e.private.url}])
    r = e.wharf.get(anon.split(":")[0], "/v2/private/team/secret/manifests/v1")
    assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
    assert cache(e, "mirror-anon") == []


def test_podman_pulls_through_a_registries_conf_mirror(env, tmp_path):
    """The mirror entry README documents for podman: the origin is down, the pull still works."""
    e = env
    image = seed(e, e.open, "team/pod:v1", os.urandom(1 << 20))
    reg = site(e, "mirror-podman", upstreams=[{"url": e.open.url}])
    skopeo("inspect", "--tls-verify=false", f"docker://{reg}/team/pod:v1")  # warms the tag and manifest
    skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/team/pod:v1", f"dir:{tmp_path / 'warm'}")
    wait_cached(e, "mirror-podman", "blob", sha(image["layer"]))
    conf = tmp_path / "registries.conf"
    conf.write_text(f"""[[registry]]
prefix = "{e.open.address}"
location = "{e.open.address}"
insecure = true

[[registry.mirror]]
location = "{reg}"
insecure = true
""")
    import shutil
    import subprocess
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="wharf-pod-", dir="/tmp"))
    e.open.stop()
    try:
        env_ = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf), "REGISTRY_AUTH_FILE": str(root / "auth.json")}
        (root / "auth.json").write_text("{}")
        base = ["podman", "--root", str(root / "storage"), "--runroot", str(root / "run"), "--storage-driver", "vfs"]
        r = subprocess.run([*base, "pull", f"{e.open.address}/team/pod:v1"], capture_output=True, text=True, timeout=300, env=env_)
        assert r.returncode == 0, r.stderr
        out = subprocess.run([*base, "image", "inspect", "--format", "{{.Digest}}", f"{e.open.address}/team/pod:v1"],
                             capture_output=True, text=True, timeout=60, env=env_).stdout.strip()
        assert out == f"sha256:{sha(image['manifest'])}"
    finally:
        e.open.start()
        subprocess.run([*base, "system", "reset", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_a_client_that_leaves_mid_blob_does_not_stop_the_cache_fill(env):
    e = env
    image = seed(e, e.open, "team/leaver:v1", os.urandom(8 << 20))
    front = Front(e.open)
    # The upstream sends the first 64 KiB, then nothing until the client has
    # gone: the rest of the copy to R2 can only happen without the client.
    go_on = threading.Event()
    front.hold = (sha(image["layer"]), 64 << 10, go_on)
    try:
        reg = site(e, "mirror-leaver", upstreams=[{"url": front.url}])
        r = e.wharf.get(reg.split(":")[0], f"/v2/team/leaver/blobs/sha256:{sha(image['layer'])}", stream=True)
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(image["layer"])
        assert len(next(r.iter_content(4096))) > 0
        r.close()  # gone after the first chunk, while the upstream holds the rest
        go_on.set()
        assert wait_cached(e, "mirror-leaver", "blob", sha(image["layer"]))["size"] == len(image["layer"])
        front.stop()
        # Served from R2 now, whole, with the upstream gone.
        again = e.wharf.get(reg.split(":")[0], f"/v2/team/leaver/blobs/sha256:{sha(image['layer'])}")
        assert again.status_code == 200 and again.content == image["layer"]
        assert front.seen[("GET", f"/v2/team/leaver/blobs/sha256:{sha(image['layer'])}")] == 1
    finally:
        go_on.set()
        front.stop()


def test_a_multi_arch_index_through_the_mirror(env, tmp_path):
    e = env
    multi = oci_multi_arch_layout(tmp_path / "src", "v1")
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{tmp_path / 'src'}:v1", f"docker://{e.open.address}/team/multi:v1")
    reg = site(e, "mirror-multi", upstreams=[{"url": e.open.url}])
    assert skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reg}/team/multi:v1").stdout.encode() == multi["index"]
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{reg}/team/multi:v1", f"oci:{tmp_path / 'back'}:v1")
    for image in multi["images"].values():
        assert (tmp_path / "back/blobs/sha256" / sha(image["layer"])).read_bytes() == image["layer"]


def test_blob_redirects_are_followed_without_the_credentials(env, tmp_path):
    e = env
    image = seed(e, e.open, "team/redirected:v1", os.urandom(1 << 20))
    front = RedirectingFront(e.open, USER, PASSWORD)
    try:
        reg = site(e, "mirror-redirect", upstreams=[{"prefix": "hub", "url": front.url, "username": USER,
                                                      "password_secret": "UPSTREAM_PASSWORD"}])
        skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/hub/team/redirected:v1", f"dir:{tmp_path / 'r'}")
        assert (tmp_path / "r" / sha(image["layer"])).read_bytes() == image["layer"]
        assert front.storage_requests >= 2  # the config and the layer
        assert front.storage_with_authorization == 0
        wait_cached(e, "mirror-redirect", "blob", sha(image["layer"]))
    finally:
        front.stop()


def test_upstream_404s_are_cached_briefly_and_the_cache_can_be_purged(env):
    e = env
    reg = site(e, "mirror-404", upstreams=[{"url": e.open.url}], not_found_ttl_seconds=3600)
    host = reg.split(":")[0]
    for _ in range(2):
        r = e.wharf.get(host, "/v2/team/none/manifests/v9")
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    # Asked once (HEAD first for a tag: a 404 costs no pull either).
    assert e.open.requests_seen("HEAD", "/v2/team/none/manifests/v9") == 1
    assert e.open.requests_seen("GET", "/v2/team/none/manifests/v9") == 0
    [entry] = cache(e, "mirror-404")
    assert (entry["kind"], entry["reference"], entry["sha256"]) == ("tag", "v9", None)

    image = seed(e, e.open, "team/none:v9", b"now it exists")
    assert e.wharf.get(host, "/v2/team/none/manifests/v9").status_code == 404  # still remembered
    assert e.wharf.admin.call("DELETE", "/sites/mirror-404/oci/cache?repository=team/none")["removed"] == 1
    r = e.wharf.get(host, "/v2/team/none/manifests/v9", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == f"sha256:{sha(image['manifest'])}"
    assert len(cache(e, "mirror-404")) == 2  # the tag and the manifest
    assert e.wharf.admin.call("DELETE", "/sites/mirror-404/oci/cache")["removed"] == 2
    assert cache(e, "mirror-404") == []

    # Settings are checked.
    for bad in ([{"url": e.open.url}, {"url": e.open.url}], [{"prefix": "a/b", "url": e.open.url}], [{"url": "ftp://x"}]):
        e.wharf.admin.call("PUT", "/sites/mirror-404/oci/settings", {"upstreams": bad}, expect=422)


def test_a_manifest_is_checked_against_its_digest_before_it_is_cached(env):
    e = env
    image = seed(e, e.open, "team/lying:v1", b"manifest check")
    digest = f"sha256:{sha(image['manifest'])}"
    front = Front(e.open)
    try:
        reg = site(e, "mirror-lying", upstreams=[{"url": front.url}], tag_ttl_seconds=0)
        host = reg.split(":")[0]
        accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
        # Other bytes under the upstream's own Docker-Content-Digest: by tag and by digest.
        front.tamper = True
        for ref in ("v1", digest):
            r = e.wharf.get(host, f"/v2/team/lying/manifests/{ref}", headers=accept)
            assert r.status_code == 502 and "not cached" in r.json()["errors"][0]["message"], r.text
        # Without Docker-Content-Digest a manifest asked by digest is still checked against it.
        front.strip_digest = True
        r = e.wharf.get(host, f"/v2/team/lying/manifests/{digest}", headers=accept)
        assert r.status_code == 502, r.text
        assert cache(e, "mirror-lying") == []
        # Honest again, still without the header: by tag the digest is the bytes'.
        front.tamper = False
        r = e.wharf.get(host, "/v2/team/lying/manifests/v1", headers=accept)
        assert r.status_code == 200 and r.content == image["manifest"] and r.headers["Docker-Content-Digest"] == digest
        assert wait_cached(e, "mirror-lying", "tag", "v1")["sha256"] == sha(image["manifest"])
        assert front.seen[("GET", f"/v2/team/lying/manifests/{digest}")] == 2  # asked each time, never from a cache
    finally:
        front.stop()


@pytest.mark.parametrize("status,code", [(503, "UNAVAILABLE"), (429, "TOOMANYREQUESTS")])
def test_stale_if_error_on_5xx_and_429_serves_the_cache_and_caches_no_error(env, tmp_path, status, code):
    e = env
    repo = f"team/flaky{status}"
    image = seed(e, e.open, f"{repo}:v1", os.urandom(256 << 10))
    front = Front(e.open)
    name = f"mirror-flaky{status}"
    try:
        reg = site(e, name, upstreams=[{"url": front.url}], tag_ttl_seconds=0, not_found_ttl_seconds=3600)
        host = reg.split(":")[0]
        skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/{repo}:v1", f"dir:{tmp_path / 'warm'}")
        wait_cached(e, name, "blob", sha(image["layer"]))
        before = {(x["kind"], x["reference"]): x["sha256"] for x in cache(e, name)}

        front.status = status
        heads = front.seen[("HEAD", f"/v2/{repo}/manifests/v1")]
        skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/{repo}:v1", f"dir:{tmp_path / 'stale'}")
        assert (tmp_path / "stale" / sha(image["layer"])).read_bytes() == image["layer"]
        # The tag was revalidated (TTL 0), the upstream refused, the cache answered.
        assert front.seen[("HEAD", f"/v2/{repo}/manifests/v1")] == heads + 1
        assert {(x["kind"], x["reference"]): x["sha256"] for x in cache(e, name)} == before

        # What was never cached: the upstream's refusal is passed on, and not remembered.
        seed(e, e.open, f"{repo}:v2", b"second")
        r = e.wharf.get(host, f"/v2/{repo}/manifests/v2")
        assert r.status_code == status and r.json()["errors"][0]["code"] == code, r.text
        r = e.wharf.get(host, f"/v2/{repo}/blobs/sha256:{'ab' * 32}")
        assert r.status_code == status and r.json()["errors"][0]["code"] == code, r.text
        assert {(x["kind"], x["reference"]): x["sha256"] for x in cache(e, name)} == before
        front.status = None
        assert digest_of(f"{reg}/{repo}:v2").startswith("sha256:")  # at once, despite not_found_ttl_seconds
    finally:
        front.stop()


def test_upstream_tokens_are_reused_per_site_and_repository_until_they_expire(env, tmp_path):
    e = env
    for repo in ("team/tok-a", "team/tok-b", "team/tok-short"):
        seed(e, e.private, f"{repo}:v1", os.urandom(64 << 10), creds=f"{USER}:{PASSWORD}")
    private = {"prefix": "p", "url": e.private.url, "username": USER, "password_secret": "UPSTREAM_PASSWORD"}
    reg = site(e, "mirror-tokens", upstreams=[private], tag_ttl_seconds=0)
    scope = "repository:{}:pull".format
    e.token.scopes.clear()
    # A full pull (tag HEAD, manifest, config, layer): one token.
    skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/p/team/tok-a:v1", f"dir:{tmp_path / 'a1'}")
    assert e.token.scopes == {scope("team/tok-a"): 1}
    # Pulled again (the tag revalidated upstream): the same token.
    skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/p/team/tok-a:v1", f"dir:{tmp_path / 'a2'}")
    assert e.token.scopes == {scope("team/tok-a"): 1}
    # Another repository: its own token, once.
    for n in (1, 2):
        skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/p/team/tok-b:v1", f"dir:{tmp_path / f'b{n}'}")
    assert e.token.scopes == {scope("team/tok-a"): 1, scope("team/tok-b"): 1}
    # Another site never uses this site's token.
    reg2 = site(e, "mirror-tokens2", upstreams=[private], tag_ttl_seconds=0)
    skopeo("copy", "--src-tls-verify=false", f"docker://{reg2}/p/team/tok-a:v1", f"dir:{tmp_path / 'other'}")
    assert e.token.scopes == {scope("team/tok-a"): 2, scope("team/tok-b"): 1}
    # A token that expires at once (Wharf stops using a token 5 s early) is
    # never reused: each of the pull's four upstream requests gets its own.
    e.token.expires_in = 5
    try:
        skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/p/team/tok-short:v1", f"dir:{tmp_path / 'short'}")
    finally:
        e.token.expires_in = 300
    assert e.token.scopes[scope("team/tok-short")] == 4

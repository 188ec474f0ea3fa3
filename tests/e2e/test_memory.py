"""The isolate's memory of tenant lookups (hostname → site and active
release → path → blob, and small bodies): what it serves, how long a route
stays, and that it never mixes sites."""

import hashlib
import time

import pytest

from wharf import Wharf

WINDOW_MS = 4000
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """A worker that reuses a route for 4 s (the default is 1 s), and keeps few
    paths and bodies, so eviction happens."""
    w = Wharf(tmp_path_factory.mktemp("memory"), extra_vars={"ROUTE_CACHE_MS": str(WINDOW_MS), "PATH_CACHE_ENTRIES": "40",
                                                              "BODY_CACHE_BYTES": "3000"})
    yield w
    w.stop()


def text(w, host, path):
    r = w.get(host, "/" + path)
    return r.status_code, r.text


def test_a_change_made_elsewhere_is_seen_within_the_window_and_not_before(slow):
    a = slow.admin
    a.site("ma", "ma.test")
    a.site("mb", "mb.test")
    a.publish("ma", {"x": b"site A", "only-a": b"A alone"})
    a.publish("mb", {"x": b"site B", "only-b": b"B alone"})
    t0 = time.monotonic()
    assert text(slow, "ma.test", "x") == (200, "site A")  # the route and the path are remembered now
    # The hostname moves to site B in D1, as a change made by another isolate would.
    assert slow.d1_write("UPDATE hostnames SET site_id = (SELECT id FROM sites WHERE name = 'mb') WHERE hostname = 'ma.test'") == 1
    # Within the window the remembered route and path answer: D1 was not asked
    # (it would have said site B).
    assert text(slow, "ma.test", "x") == (200, "site A")
    assert time.monotonic() - t0 < WINDOW_MS / 1000, "the machine was too slow to check inside the window"
    # A path the remembered release does not have is asked of D1, which knows
    # the hostname is B's now: served at once, and the route is B's from then on.
    assert text(slow, "ma.test", "only-b") == (200, "B alone")
    assert text(slow, "ma.test", "x") == (200, "site B")
    assert slow.get("ma.test", "/only-a").status_code == 404
    # A hostname removed elsewhere stops serving within the window.
    t0 = time.monotonic()
    assert text(slow, "ma.test", "only-b") == (200, "B alone")
    assert slow.d1_write("DELETE FROM hostnames WHERE hostname = 'ma.test'") == 1
    assert text(slow, "ma.test", "only-b") == (200, "B alone")
    time.sleep(WINDOW_MS / 1000 - (time.monotonic() - t0) + 0.3)
    assert slow.get("ma.test", "/only-b").status_code == 404


def test_a_route_gone_stale_is_read_again(slow):
    """After the window a remembered route is read from D1 again, even for a
    path remembered with it."""
    a = slow.admin
    a.site("mc", "mc.test")
    a.site("mc2", "mc2.test")
    a.publish("mc", {"f": b"C"})
    a.publish("mc2", {"f": b"C2"})
    t0 = time.monotonic()
    assert text(slow, "mc.test", "f") == (200, "C")
    assert slow.d1_write("UPDATE hostnames SET site_id = (SELECT id FROM sites WHERE name = 'mc2') WHERE hostname = 'mc.test'") == 1
    assert text(slow, "mc.test", "f") == (200, "C")
    assert time.monotonic() - t0 < WINDOW_MS / 1000, "the machine was too slow to check inside the window"
    time.sleep(WINDOW_MS / 1000 - (time.monotonic() - t0) + 0.3)
    assert text(slow, "mc.test", "f") == (200, "C2")


def test_changes_made_through_this_worker_are_seen_at_once(slow):
    """The isolate that activates, rolls back or removes a hostname forgets
    its routes: its next request sees the change, whatever the window."""
    a = slow.admin
    a.site("md", "md.test")
    first = a.publish("md", {"f": b"one"})
    assert text(slow, "md.test", "f") == (200, "one")
    second = a.publish("md", {"f": b"two"})
    assert text(slow, "md.test", "f") == (200, "two")
    a.call("POST", "/sites/md/rollback", {"to": first})
    assert text(slow, "md.test", "f") == (200, "one")
    a.call("POST", "/sites/md/rollback", {"to": second})
    assert text(slow, "md.test", "f") == (200, "two")
    a.call("DELETE", "/sites/md/hostnames/md.test")
    assert slow.get("md.test", "/f").status_code == 404
    a.call("PUT", "/sites/md/hostnames/md.test")
    assert text(slow, "md.test", "f") == (200, "two")
    a.call("DELETE", "/sites/md")
    assert slow.get("md.test", "/f").status_code == 404


def test_many_paths_and_bodies_evict_and_stay_right(slow):
    """40 paths and 3000 bytes of bodies are kept here; 120 files of 100 bytes
    read in three orders all come back right (ranges too)."""
    a = slow.admin
    a.site("me", "me.test")
    files = {f"p/{i}": (f"{i:03d}" * 34)[:100].encode() for i in range(120)}
    a.publish("me", files)
    for order in (range(120), reversed(range(120)), [i * 7 % 120 for i in range(120)]):
        for i in order:
            r = slow.get("me.test", f"/p/{i}")
            assert r.status_code == 200 and r.content == files[f"p/{i}"], i
    r = slow.get("me.test", "/p/5", headers={"Range": "bytes=3-5"})
    assert r.status_code == 206 and r.content == files["p/5"][3:6]


def test_sites_never_share_what_is_remembered(slow):
    """The same path in two sites, and the same bytes in two sites: each
    hostname gets its own site's answer, and bytes one site serves from memory
    are not reachable through a site that does not hold them at that path."""
    a = slow.admin
    a.site("mf", "mf.test")
    a.site("mg", "mg.test")
    a.publish("mf", {"same": b"from F", "shared": b"the same bytes"})
    a.publish("mg", {"same": b"from G", "elsewhere": b"the same bytes"})
    for _ in range(3):
        assert text(slow, "mf.test", "same") == (200, "from F")
        assert text(slow, "mg.test", "same") == (200, "from G")
    assert text(slow, "mf.test", "shared") == (200, "the same bytes")
    assert slow.get("mg.test", "/shared").status_code == 404
    assert text(slow, "mg.test", "elsewhere") == (200, "the same bytes")
    # A private registry: a manifest kept from an allowed pull is not served to
    # anyone else.
    a.call("PUT", "/sites/mg/oci/settings", {"anonymous_pull": False})
    config, layer = b'{"os":"linux"}', b"layer bytes"
    auth = {"Authorization": f"Bearer {a.token}"}
    for b in (config, layer):
        d = hashlib.sha256(b).hexdigest()
        assert slow.get("mg.test", f"/v2/app/blobs/uploads/?digest=sha256:{d}", method="POST", data=b, headers=auth).status_code == 201
    manifest = ('{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},'
                '"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}'
                % (OCI_MANIFEST, hashlib.sha256(config).hexdigest(), len(config), hashlib.sha256(layer).hexdigest(), len(layer))).encode()
    assert slow.get("mg.test", "/v2/app/manifests/v1", method="PUT", data=manifest, headers={**auth, "Content-Type": OCI_MANIFEST}).status_code == 201
    for _ in range(2):
        r = slow.get("mg.test", "/v2/app/manifests/v1", headers={**auth, "Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == manifest
    assert slow.get("mg.test", "/v2/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 401
    assert slow.get("mf.test", "/v2/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 404


def test_a_bookmark_from_the_admin_api_reads_at_least_what_was_written(slow):
    """Reads go through a D1 session (a nearby replica where read replication
    is on; here the one local database). The admin API's answers carry the
    session's bookmark; a tenant request bringing it back is read from D1 no
    earlier than that, whatever the isolate remembers."""
    import re
    import requests
    from wharf import ADMIN_HOST
    a = slow.admin
    a.site("mh", "mh.test")
    a.site("mh2", "mh2.test")
    a.publish("mh", {"f": b"H"})
    a.publish("mh2", {"f": b"H2"})

    def admin(method, path, body=None):
        r = requests.request(method, slow.url("/api/v1" + path), headers={"Host": ADMIN_HOST, "Authorization": f"Bearer {a.token}"},
                             json=body, timeout=60)
        assert r.status_code < 300, r.text
        return r

    first = admin("GET", "/sites/mh").headers["x-wharf-bookmark"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{32}", first), first
    rel = admin("POST", "/sites/mh/releases", {}).json()["id"]
    after_write = admin("PUT", f"/sites/mh/releases/{rel}/paths/g", {"sha256": a.blob(b"G")}).headers["x-wharf-bookmark"]
    assert after_write > first, (first, after_write)
    bookmark = admin("POST", f"/sites/mh/releases/{rel}/activate", {}).headers["x-wharf-bookmark"]
    assert bookmark >= after_write
    assert slow.get("mh.test", "/g", headers={"X-Wharf-Bookmark": bookmark}).text == "G"
    # With a route remembered and the hostname moved behind the worker's back,
    # a request without a bookmark gets what the isolate remembers (within the
    # window), one with a bookmark is answered from D1 at once (and what it
    # read is remembered from then on).
    t0 = time.monotonic()
    assert text(slow, "mh.test", "f") == (200, "H")
    assert slow.d1_write("UPDATE hostnames SET site_id = (SELECT id FROM sites WHERE name = 'mh2') WHERE hostname = 'mh.test'") == 1
    assert text(slow, "mh.test", "f") == (200, "H")
    assert slow.get("mh.test", "/f", headers={"X-Wharf-Bookmark": bookmark}).text == "H2"
    assert text(slow, "mh.test", "f") == (200, "H2")
    assert time.monotonic() - t0 < WINDOW_MS / 1000, "the machine was too slow to check inside the window"
    # Something that is not a bookmark is not passed to D1.
    assert slow.get("mh.test", "/f", headers={"X-Wharf-Bookmark": "not a bookmark; drop table sites"}).status_code == 200


def test_whole_blobs_come_from_the_edge_cache_once_read(slow, tmp_path):
    """A body larger than what the isolate keeps goes through the edge cache
    (the Workers Cache API, keyed by digest): once read, it is served even
    after R2 has forgotten it — the second answer did not come from R2. Only a
    path of the requesting site reaches it."""
    import os
    a = slow.admin
    a.site("mi", "mi.test")
    a.site("mj", "mj.test")
    big = os.urandom(300 << 10)
    sha = hashlib.sha256(big).hexdigest()
    a.publish("mi", {"pool/big.deb": big, "ranged.bin": big})
    a.publish("mj", {"other": b"nothing to do with it"})
    r = slow.get("mi.test", "/pool/big.deb")
    assert r.status_code == 200 and r.content == big
    deadline = time.monotonic() + 10
    time.sleep(0.5)  # the cache is filled after the response (waitUntil)
    assert slow.r2_forget(f"blobs/sha256/{sha}") == 1
    while True:
        r = slow.get("mi.test", "/ranged.bin")
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert r.status_code == 200 and r.content == big, "served from the edge cache, R2 no longer has it"
    assert r.headers["etag"] == f'"{sha}"' and r.headers["content-length"] == str(len(big))
    assert slow.get("mj.test", "/pool/big.deb").status_code == 404


def test_a_site_without_a_release_yet_never_answers_from_memory(slow):
    """A remembered route whose site has no active release does not answer a
    path by itself: the path is asked of D1 (here the hostname has moved to a
    site with content, behind the worker's back)."""
    a = slow.admin
    a.site("mk", "mk.test")
    a.site("ml", "ml.test")
    a.publish("ml", {"f": b"L"})
    assert slow.get("mk.test", "/f").status_code == 404  # the route (no release) is remembered
    assert slow.d1_write("UPDATE hostnames SET site_id = (SELECT id FROM sites WHERE name = 'ml') WHERE hostname = 'mk.test'") == 1
    assert text(slow, "mk.test", "f") == (200, "L")


def test_mirror_records_are_remembered_within_the_window_per_site(slow, tmp_path):
    """A pull-through mirror's records (a tag's manifest, a manifest, a blob)
    are reused within the window like routes, per site: a record changed in
    D1 behind the worker's back is seen after the window, not before, and
    another site mirroring the same upstream keeps its own."""
    from test_oci import oci_layout, skopeo
    from upstream import Upstream
    up = Upstream(tmp_path / "upstream")
    try:
        image = oci_layout(tmp_path / "layout", "v", {"payload.bin": b"mirrored bytes"})
        skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'layout'}:v", f"docker://{up.address}/team/app:v1")
        a = slow.admin
        for name in ("mm", "mn"):
            a.site(name, f"{name}.test")
            a.call("PUT", f"/sites/{name}/oci/settings", {"upstreams": [{"url": up.url}], "tag_ttl_seconds": 3600,
                                                           "not_found_ttl_seconds": 3600})
        accept = {"Accept": OCI_MANIFEST}

        def pull(host):
            r = slow.get(host, "/v2/team/app/manifests/v1", headers=accept)
            return r.status_code, r.content

        assert pull("mm.test") == (200, image["manifest"])  # fetched from the upstream and recorded
        assert pull("mm.test") == (200, image["manifest"])  # the record read from D1, remembered now
        t0 = time.monotonic()
        # In D1 the tag becomes one the upstream said it lacks (and recently).
        assert slow.d1_write("UPDATE oci_cache SET sha256 = NULL, size = NULL, content_type = NULL WHERE kind = 'tag' "
                             "AND reference = 'v1' AND site_id = (SELECT id FROM sites WHERE name = 'mm')") == 1
        assert pull("mm.test") == (200, image["manifest"]), "within the window the remembered record answers"
        assert pull("mn.test") == (200, image["manifest"]), "the other site's records are its own"
        assert time.monotonic() - t0 < WINDOW_MS / 1000, "the machine was too slow to check inside the window"
        time.sleep(WINDOW_MS / 1000 - (time.monotonic() - t0) + 0.3)
        assert pull("mm.test")[0] == 404, "after the window D1's record is read again"
        assert pull("mn.test") == (200, image["manifest"])
    finally:
        up.stop()

"""The admin API: sites, hostnames, tokens, blobs, releases and every bad input."""

import hashlib
import os
import time

import pytest
import requests
from wharf import ADMIN_HOST


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_sites_crud_and_validation(admin, unique):
    admin.call("POST", "/sites", {"name": unique}, expect=201)
    admin.call("POST", "/sites", {"name": unique}, expect=409)
    admin.call("POST", "/sites", {"name": "Bad_Name"}, expect=400)
    admin.call("POST", "/sites", {"name": ""}, expect=400)
    admin.call("POST", "/sites", {"nme": "x"}, expect=400)
    admin.call("POST", "/sites", data=b"{not json", expect=400)
    admin.call("POST", "/sites", data=b"", expect=400)
    names = [s["name"] for s in admin.call("GET", "/sites")["sites"]]
    assert unique in names
    assert admin.call("GET", f"/sites/{unique}")["name"] == unique
    admin.call("DELETE", f"/sites/{unique}", expect=204)
    admin.call("GET", f"/sites/{unique}", expect=404)
    admin.call("DELETE", f"/sites/{unique}", expect=404)
    admin.call("PATCH", "/sites", expect=405)
    admin.call("GET", "/nothing-here", expect=404)


def test_delete_site_removes_hostnames_tokens_and_content(wharf, admin, unique):
    admin.site(unique, f"{unique}.pkgs.test")
    admin.publish(unique, {"a.txt": b"a"})
    tok = admin.make_token("publish", unique)
    assert wharf.get(f"{unique}.pkgs.test", "/a.txt").status_code == 200
    admin.call("DELETE", f"/sites/{unique}", expect=204)
    assert wharf.get(f"{unique}.pkgs.test", "/a.txt").status_code == 404
    tok.call("GET", f"/sites/{unique}", expect=401)
    # the hostname is free again
    admin.site(unique, f"{unique}.pkgs.test")


def test_hostnames(admin, unique):
    admin.site(unique)
    admin.site(unique + "b")
    h = f"Pkgs.{unique}.Example.COM"
    out = admin.call("PUT", f"/sites/{unique}/hostnames/{h}", expect=201)
    assert out["hostname"] == h.lower()
    admin.call("PUT", f"/sites/{unique}/hostnames/{h}", expect=200)  # idempotent
    admin.call("PUT", f"/sites/{unique}b/hostnames/{h}", expect=409)  # belongs to another site
    admin.call("PUT", f"/sites/{unique}/hostnames/{ADMIN_HOST}", expect=409)  # admin hostname
    admin.call("PUT", f"/sites/{unique}/hostnames/bad..name", expect=400)
    assert admin.call("GET", f"/sites/{unique}")["hostnames"] == [h.lower()]
    admin.call("DELETE", f"/sites/{unique}b/hostnames/{h}", expect=404)
    admin.call("DELETE", f"/sites/{unique}/hostnames/{h}", expect=204)
    admin.call("PUT", f"/sites/{unique}b/hostnames/{h}", expect=201)


def test_tokens_scopes_expiry_and_revocation(wharf, admin, unique):
    admin.site(unique, f"{unique}.pkgs.test")
    reader = admin.make_token("read", unique)
    publisher = admin.make_token("publish", unique)
    site_admin = admin.make_token("admin", unique)

    reader.call("GET", f"/sites/{unique}/releases", expect=200)
    reader.call("POST", f"/sites/{unique}/releases", {}, expect=403)
    reader.call("PUT", f"/blobs/sha256/{sha(b'r')}", data=b"r", expect=403)
    rel = publisher.draft(unique)
    publisher.put(unique, rel, "f.txt", b"published by token")
    publisher.activate(unique, rel)
    assert wharf.get(f"{unique}.pkgs.test", "/f.txt").content == b"published by token"
    publisher.call("PUT", f"/sites/{unique}/hostnames/x.{unique}.test", expect=403)
    publisher.call("POST", "/tokens", {"name": "n", "scope": "read", "site": unique}, expect=403)
    site_admin.call("PUT", f"/sites/{unique}/hostnames/x.{unique}.test", expect=201)
    # A site admin manages its own site's tokens but not global things.
    extra = site_admin.call("POST", "/tokens", {"name": "ci", "scope": "publish", "site": unique}, expect=201)
    assert extra["token"].startswith("wharf_") and "sha256" in extra["note"]
    site_admin.call("POST", "/tokens", {"name": "g", "scope": "admin"}, expect=403)
    site_admin.call("POST", "/sites", {"name": unique + "x"}, expect=403)
    listed = site_admin.call("GET", "/tokens")["tokens"]
    assert {t["id"] for t in listed} >= {extra["id"]}
    assert all("secret" not in k and "token" != k for t in listed for k in t)

    # Revocation.
    ci = admin.with_token(extra["token"])
    ci.call("GET", f"/sites/{unique}", expect=200)
    site_admin.call("DELETE", f"/tokens/{extra['id']}", expect=204)
    ci.call("GET", f"/sites/{unique}", expect=401)

    # Expiry: a token works until its expires_at and not after. (The live case
    # uses an hour, so a loaded machine never crosses it between the calls.)
    made = admin.call("POST", "/tokens", {"name": "short", "scope": "read", "site": unique, "expires_in": 1})
    long = admin.call("POST", "/tokens", {"name": "long", "scope": "read", "site": unique, "expires_in": 3600})
    assert long["expires_at"] - made["expires_at"] >= 3_598_000
    admin.with_token(long["token"]).call("GET", f"/sites/{unique}", expect=200)
    while time.time() * 1000 <= made["expires_at"] + 50:
        time.sleep(0.1)
    admin.with_token(made["token"]).call("GET", f"/sites/{unique}", expect=401)
    admin.with_token(long["token"]).call("GET", f"/sites/{unique}", expect=200)

    # Malformed and unknown tokens.
    for bad in ["", "wharf_", "wharf_000000000000_" + "0" * 64, extra["token"][:-1] + "x", wharf.root_token + "x"]:
        admin.with_token(bad).call("GET", "/sites", expect=401)
    r = wharf.get(ADMIN_HOST, "/api/v1/sites")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    admin.call("POST", "/tokens", {"name": "x", "scope": "superuser"}, expect=400)
    admin.call("POST", "/tokens", {"name": "x", "scope": "read", "expires_in": 0}, expect=400)
    admin.call("POST", "/tokens", {"name": "x", "scope": "read", "site": "no-such-site"}, expect=404)


def test_cross_site_isolation(wharf, admin, unique):
    a, b = unique + "a", unique + "b"
    admin.site(a, f"{a}.pkgs.test")
    admin.site(b, f"{b}.pkgs.test")
    admin.publish(a, {"only-a.txt": b"A"})
    rel_b = admin.publish(b, {"only-b.txt": b"B"})
    assert wharf.get(f"{a}.pkgs.test", "/only-b.txt").status_code == 404
    assert wharf.get(f"{b}.pkgs.test", "/only-a.txt").status_code == 404

    tok_a = admin.make_token("admin", a)
    # Site B is invisible to site A's token: 404, not 403.
    for method, path, body in [
        ("GET", f"/sites/{b}", None),
        ("GET", f"/sites/{b}/releases", None),
        ("POST", f"/sites/{b}/releases", {}),
        ("PUT", f"/sites/{b}/releases/{rel_b}/paths/x", {"sha256": sha(b"A")}),
        ("POST", f"/sites/{b}/releases/{rel_b}/activate", {}),
        ("POST", f"/sites/{b}/rollback", {}),
        ("PUT", f"/sites/{b}/hostnames/steal.test", None),
        ("DELETE", f"/sites/{b}/hostnames/{b}.pkgs.test", None),
        ("POST", "/tokens", {"name": "x", "scope": "read", "site": b}),
        ("GET", f"/tokens?site={b}", None),
    ]:
        tok_a.call(method, path, body, expect=404)
    tok_a.call("DELETE", f"/sites/{b}", expect=403)
    assert [s["name"] for s in tok_a.call("GET", "/sites")["sites"]] == [a]
    # A's token cannot revoke B's tokens either.
    tok_b = admin.call("POST", "/tokens", {"name": "b", "scope": "read", "site": b})
    tok_a.call("DELETE", f"/tokens/{tok_b['id']}", expect=404)
    # Releases of B are not reachable through A's site path.
    tok_a.call("GET", f"/sites/{a}/releases/{rel_b}", expect=404)
    assert wharf.get(f"{b}.pkgs.test", "/only-b.txt").content == b"B"


def test_blob_uploads(wharf, admin):
    data = os.urandom(200_000)
    digest = sha(data)
    out = admin.call("PUT", f"/blobs/sha256/{digest}", data=data, expect=201)
    assert out == {"sha256": digest, "size": len(data), "created": True}
    again = admin.call("PUT", f"/blobs/sha256/{digest}", data=data, expect=200)
    assert again["created"] is False
    assert admin.call("GET", f"/blobs/sha256/{digest}")["size"] == len(data)

    info = admin.call("GET", f"/blobs/sha256/{digest}")
    assert info["indexed"] and info["stored"] and info["stored_size"] == len(data)
    wrong = sha(b"something else")
    err = admin.call("PUT", f"/blobs/sha256/{wrong}", data=data, expect=400)
    assert err["error"]["code"] == "digest_mismatch"
    # 404 means neither D1 nor R2 (asked with head()) has it: the refused upload stored nothing.
    admin.call("GET", f"/blobs/sha256/{wrong}", expect=404)

    big = b"\0" * 10_000_001
    admin.call("PUT", f"/blobs/sha256/{sha(big)}", data=big, expect=413)
    admin.call("GET", f"/blobs/sha256/{sha(big)}", expect=404)
    admin.call("PUT", "/blobs/sha256/NOTHEX", data=b"x", expect=400)
    # The limit holds for every way bytes come in, e.g. a raw package upload.
    admin.site("limits")
    rel = admin.draft("limits")
    admin.call("POST", f"/sites/limits/releases/{rel}/deb/stable/main/packages?sha256={sha(big)}", data=big, expect=413,
               headers={"Content-Type": "application/vnd.debian.binary-package"})
    admin.call("PUT", f"/blobs/sha256/{sha(b'chunked')}", data=(c for c in [b"chunk", b"ed"]), expect=411)
    # A registry upload without a length (cut into R2 parts as it comes) that
    # outgrows the limit: 413, and neither a chunk nor a part of it is kept.
    admin.call("PUT", "/sites/limits/hostnames/limits.registry.test")
    bearer = {"Host": "limits.registry.test", "Authorization": f"Bearer {admin.token}"}
    loc = requests.post(wharf.url("/v2/app/blobs/uploads/"), headers=bearer).headers["Location"]
    r = requests.patch(wharf.url(loc), headers=bearer, data=(big[i:i + 1_000_003] for i in range(0, len(big), 1_000_003)))
    assert r.status_code == 413 and r.json()["errors"][0]["code"] == "SIZE_INVALID", r.text
    chunks = f"uploads/{loc.rstrip('/').split('/')[-1].split('?')[0]}/"
    assert wharf.r2_keys(chunks) == [] and wharf.r2_multipart_left(chunks) == []
    empty = admin.call("PUT", f"/blobs/sha256/{sha(b'')}", data=b"", expect=201)
    assert empty["size"] == 0


def test_release_lifecycle_and_bad_inputs(wharf, admin, unique):
    host = f"{unique}.pkgs.test"
    admin.site(unique, host)
    rel = admin.draft(unique, note="first")
    admin.put(unique, rel, "a.txt", b"a")
    admin.put(unique, rel, "dir/b.bin", b"b", content_type="application/x-custom")
    missing = sha(b"never uploaded")
    admin.call("PUT", f"/sites/{unique}/releases/{rel}/paths/c", {"sha256": missing}, expect=422)
    admin.call("PUT", f"/sites/{unique}/releases/{rel}/paths/c", {"sha256": "zz"}, expect=400)
    admin.call("PUT", f"/sites/{unique}/releases/{rel}/paths/c", {"sha256": sha(b"a"), "content_type": "bad"}, expect=400)
    admin.call("PUT", f"/sites/{unique}/releases/{rel}/paths/a%2f..%2fb", {"sha256": sha(b"a")}, expect=400)
    admin.call("PUT", f"/sites/{unique}/releases/{rel}/paths/a%00", {"sha256": sha(b"a")}, expect=400)
    admin.call("POST", f"/sites/{unique}/releases/{rel}/changes", {"delete": ["../x"]}, expect=422)
    admin.call("POST", f"/sites/{unique}/releases/{rel}/changes", {"put": [{"path": "a/./b", "sha256": sha(b"a")}]}, expect=422)
    admin.call("POST", f"/sites/{unique}/releases/{rel}/changes", {"put": [{"path": "a/../b", "sha256": sha(b"a")}]}, expect=422)
    admin.call("POST", f"/sites/{unique}/releases/{rel}/changes", {"put": [{"path": "x//y", "sha256": sha(b"a")}]}, expect=400)
    # A batch with one missing blob changes nothing.
    admin.call("POST", f"/sites/{unique}/releases/{rel}/changes",
               {"put": [{"path": "ok.txt", "sha256": sha(b"a")}, {"path": "nope.txt", "sha256": missing}]}, expect=422)
    paths = admin.call("GET", f"/sites/{unique}/releases/{rel}/paths")["paths"]
    assert [p["path"] for p in paths] == ["a.txt", "dir/b.bin"]
    assert paths[1]["content_type"] == "application/x-custom" and paths[1]["size"] == 1
    admin.call("DELETE", f"/sites/{unique}/releases/{rel}/paths/zzz", expect=404)
    admin.call("POST", f"/sites/{unique}/releases", {"from": "sideways"}, expect=400)
    admin.call("POST", f"/sites/{unique}/releases", {"from": rel}, expect=409)  # a draft is no base
    admin.call("GET", f"/sites/{unique}/releases/999999", expect=404)

    act = admin.activate(unique, rel)
    assert act["state"] == "active" and act["rows_opened"] == 2
    assert wharf.get(host, "/dir/b.bin").headers["Content-Type"] == "application/x-custom"
    # An active release never changes.
    admin.call("PUT", f"/sites/{unique}/releases/{rel}/paths/new", {"sha256": sha(b"a")}, expect=409)
    admin.call("POST", f"/sites/{unique}/releases/{rel}/changes", {"delete": ["a.txt"]}, expect=409)
    admin.call("DELETE", f"/sites/{unique}/releases/{rel}", expect=409)
    admin.call("POST", f"/sites/{unique}/releases/{rel}/activate", {}, expect=409)

    # Next release: bulk changes, diff, pagination.
    rel2 = admin.draft(unique)
    admin.blob(b"c")
    admin.call("POST", f"/sites/{unique}/releases/{rel2}/changes",
               {"put": [{"path": "c.txt", "sha256": sha(b"c")}, {"path": "a.txt", "sha256": sha(b"c")}],
                "delete": ["dir/b.bin"]})
    diff = admin.call("GET", f"/sites/{unique}/releases/{rel}/diff/{rel2}")["changes"]
    assert [(d["path"], d["change"]) for d in diff] == [("a.txt", "changed"), ("c.txt", "added"), ("dir/b.bin", "removed")]
    page1 = admin.call("GET", f"/sites/{unique}/releases/{rel2}/paths?limit=1")
    page2 = admin.call("GET", f"/sites/{unique}/releases/{rel2}/paths?limit=1&after={page1['next_after']}")
    assert [p["path"] for p in page1["paths"] + page2["paths"]] == ["a.txt", "c.txt"]
    admin.call("GET", f"/sites/{unique}/releases/{rel2}/paths?limit=0", expect=400)
    assert wharf.get(host, "/c.txt").status_code == 404, "drafts are never served"
    admin.activate(unique, rel2)
    assert wharf.get(host, "/a.txt").content == b"c"
    assert wharf.get(host, "/dir/b.bin").status_code == 404
    releases = admin.call("GET", f"/sites/{unique}/releases")["releases"]
    assert [(r["id"], r["state"]) for r in releases] == [(rel2, "active"), (rel, "retired")]

    # Drafts can be thrown away.
    rel3 = admin.draft(unique)
    admin.call("DELETE", f"/sites/{unique}/releases/{rel3}", expect=204)
    admin.call("GET", f"/sites/{unique}/releases/{rel3}", expect=404)


def test_stale_activation_is_refused_and_changes_nothing(wharf, admin, unique):
    host = f"{unique}.pkgs.test"
    admin.site(unique, host)
    base = admin.publish(unique, {"v": b"1"})
    d1, d2 = admin.draft(unique), admin.draft(unique)
    admin.put(unique, d1, "v", b"2")
    admin.put(unique, d2, "v", b"3")
    admin.activate(unique, d1)
    err = admin.call("POST", f"/sites/{unique}/releases/{d2}/activate", {}, expect=409)
    assert err["error"]["code"] == "stale_release"
    err = admin.call("POST", f"/sites/{unique}/releases/{d2}/activate", {"expected_active": base}, expect=409)
    assert admin.call("GET", f"/sites/{unique}")["active_release"] == d1
    assert admin.call("GET", f"/sites/{unique}/releases/{d2}")["state"] == "draft"
    assert wharf.get(host, "/v").content == b"2"
    # With the right expectation it goes through (the caller accepts the newer base).
    admin.activate(unique, d2, expected_active=d1)
    assert wharf.get(host, "/v").content == b"3"
    # A stale rollback is refused too.
    admin.call("POST", f"/sites/{unique}/rollback", {"to": base, "expected_active": d1}, expect=409)
    admin.call("POST", f"/sites/{unique}/rollback", {"to": d2}, expect=409)  # already active
    assert wharf.get(host, "/v").content == b"3"

"""The data plane, driven by curl (a real client) and raw HTTP."""

import hashlib
import os
import subprocess
import time

import pytest
from wharf import ADMIN_HOST, ROOT, Wharf, started


def curl(wharf, host, path, *args, check=True):
    """curl resolving `host` to the local worker, as a user's machine would with DNS."""
    cmd = ["curl", "-sS", "--fail-with-body", "--resolve", f"{host}:{wharf.port}:127.0.0.1", *args,
           f"http://{host}:{wharf.port}{path}"]
    return subprocess.run(cmd, capture_output=True, check=check)


@pytest.fixture
def site(admin, unique):
    host = f"{unique}.pkgs.test"
    admin.site(unique, host)
    return unique, host


def test_publish_and_download_with_curl(wharf, admin, site, tmp_path):
    name, host = site
    payload = os.urandom(3 * 1024 * 1024 + 17)
    admin.publish(name, {"pool/main/h/hello/hello_1.0_amd64.deb": payload, "dists/stable/Release": b"Origin: test\n"})
    out = tmp_path / "hello.deb"
    curl(wharf, host, "/pool/main/h/hello/hello_1.0_amd64.deb", "-o", str(out))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()

    # Resume a partial download: curl sends Range and appends the 206 body.
    part = tmp_path / "part.deb"
    part.write_bytes(payload[:1_000_000])
    curl(wharf, host, "/pool/main/h/hello/hello_1.0_amd64.deb", "-C", "-", "-o", str(part))
    assert part.read_bytes() == payload

    # curl's own conditional requests: ETag and time.
    etag = tmp_path / "etag"
    curl(wharf, host, "/dists/stable/Release", "--etag-save", str(etag), "-o", "/dev/null")
    assert etag.read_text().strip() == '"%s"' % hashlib.sha256(b"Origin: test\n").hexdigest()
    r = curl(wharf, host, "/dists/stable/Release", "--etag-compare", str(etag), "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout == b"304"
    r = curl(wharf, host, "/dists/stable/Release", "-z", "Sun, 01 Jan 2090 00:00:00 GMT", "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout == b"304"
    r = curl(wharf, host, "/dists/stable/Release", "-z", "Sun, 01 Jan 2000 00:00:00 GMT", "-w", "%{http_code}")
    assert r.stdout == b"Origin: test\n200"


def test_headers_head_range_and_conditionals(wharf, admin, site):
    name, host = site
    body = bytes(range(256)) * 40  # 10240 bytes
    admin.publish(name, {"pool/x.deb": body, "dists/stable/InRelease": b"signed\n" * 100})
    sha = hashlib.sha256(body).hexdigest()

    r = wharf.get(host, "/pool/x.deb")
    assert r.status_code == 200 and r.content == body
    assert r.headers["ETag"] == f'"{sha}"'
    assert r.headers["Content-Type"] == "application/vnd.debian.binary-package"
    assert "immutable" in r.headers["Cache-Control"]
    assert r.headers["Accept-Ranges"] == "bytes"
    last_modified = r.headers["Last-Modified"]

    idx = wharf.get(host, "/dists/stable/InRelease")
    assert "immutable" not in idx.headers["Cache-Control"] and "max-age=60" in idx.headers["Cache-Control"]
    assert idx.headers["Content-Type"].startswith("text/plain")

    h = wharf.get(host, "/pool/x.deb", method="HEAD")
    assert h.status_code == 200 and h.content == b"" and h.headers["Content-Length"] == str(len(body))
    assert h.headers["ETag"] == f'"{sha}"'

    r = wharf.get(host, "/pool/x.deb", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == body[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(body)}"
    r = wharf.get(host, "/pool/x.deb", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == body[-10:]
    r = wharf.get(host, "/pool/x.deb", headers={"Range": f"bytes={len(body)}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(body)}"
    r = wharf.get(host, "/pool/x.deb", headers={"Range": "bytes=0-1", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == body

    r = wharf.get(host, "/pool/x.deb", headers={"If-None-Match": f'"{sha}"'})
    assert r.status_code == 304 and r.content == b""
    r = wharf.get(host, "/pool/x.deb", headers={"If-Modified-Since": last_modified})
    assert r.status_code == 304
    r = wharf.get(host, "/pool/x.deb", headers={"If-None-Match": '"other"'})
    assert r.status_code == 200

    # The rest of RFC 9110's preconditions, header by header through the worker.
    earlier = "Mon, 01 Jan 2024 00:00:00 GMT"
    for headers, status in [({"If-Match": f'"{sha}"'}, 200), ({"If-Match": "*"}, 200), ({"If-Match": '"other"'}, 412),
                            ({"If-Unmodified-Since": last_modified}, 200), ({"If-Unmodified-Since": earlier}, 412),
                            ({"If-Match": f'"{sha}"', "If-Unmodified-Since": earlier}, 200)]:  # If-Match wins
        r = wharf.get(host, "/pool/x.deb", headers=headers)
        assert r.status_code == status, (headers, r.status_code)
        assert r.content == (body if status == 200 else b""), headers
    # If-Range with the validators the response gave: the range; with an older date: the whole file.
    for validator, status in [(f'"{sha}"', 206), (last_modified, 206), (earlier, 200)]:
        r = wharf.get(host, "/pool/x.deb", headers={"Range": "bytes=10-19", "If-Range": validator})
        assert r.status_code == status, (validator, r.status_code)
        assert r.content == (body[10:20] if status == 206 else body), validator


def test_bytes_go_out_as_stored_even_when_gzip_is_accepted(wharf, admin, site):
    name, host = site
    text = b"Package: hello\nVersion: 1.0\n\n" * 2000
    admin.publish(name, {"dists/stable/main/binary-amd64/Packages": text})
    r = wharf.raw("GET", host, "/dists/stable/main/binary-amd64/Packages", {"Accept-Encoding": "gzip, br"})
    status, headers, body = r
    assert status == 200
    assert headers.get("Content-Encoding", "identity") == "identity"
    assert body == text
    assert headers["Content-Length"] == str(len(text))


def test_unknown_host_and_path_look_the_same(wharf, admin, site, unique):
    name, host = site
    other = f"{unique}-other"
    admin.site(other, f"{other}.pkgs.test")
    admin.publish(other, {"secret.txt": b"site B only"})
    admin.publish(name, {"public.txt": b"A"})
    s1, _, b1 = wharf.raw("GET", host, "/secret.txt")
    s2, _, b2 = wharf.raw("GET", "nobody.pkgs.test", "/secret.txt")
    s3, _, b3 = wharf.raw("GET", host, "/missing")
    assert (s1, s2, s3) == (404, 404, 404)
    assert b1 == b2 == b3
    # The other site does serve it on its own hostname.
    assert wharf.get(f"{other}.pkgs.test", "/secret.txt").content == b"site B only"
    # Hostnames match case-insensitively and without the port.
    assert wharf.raw("GET", host.upper() + ":8443", "/public.txt")[2] == b"A"


def test_bad_paths_are_refused(wharf, admin, site):
    name, host = site
    admin.publish(name, {"pool/x.deb": b"x", "x.deb": b"root"})
    for bad in ["/pool//x.deb", "//x.deb", "/pool/x.deb%00", "/pool%2fx.deb", "/pool%5cx.deb", "/pool/%0ax",
                "/" + "a" * 300, "/" + "a/" * 600, "/pool/%zz"]:
        status, _, body = wharf.raw("GET", host, bad)
        assert status == 400, (bad, status, body)
    # Dot segments are resolved by the runtime's URL parser before the worker runs
    # (at Cloudflare's edge too); they can only name another path of the same site.
    for path in ["/../../etc/passwd", "/pool/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"]:
        status, _, _ = wharf.raw("GET", host, path)
        assert status == 404, path
    # A raw backslash is turned into '/' by the runtime before the worker sees
    # the URL (encoded, %5c, it survives and is refused above): `/..\..\x.deb`
    # arrives as `/x.deb` of the same site.
    assert wharf.raw("GET", host, "/..\\..\\x.deb")[:3:2] == (200, b"root")
    assert wharf.raw("GET", host, "/pool\\x.deb")[:3:2] == (200, b"x")
    assert wharf.raw("POST", host, "/pool/x.deb")[0] == 405


def test_admin_api_is_not_served_on_tenant_hostnames(wharf, admin, site):
    name, host = site
    r = wharf.get(host, "/api/v1/sites", headers={"Authorization": f"Bearer {wharf.root_token}"})
    assert r.status_code == 404
    r = wharf.get(ADMIN_HOST, "/pool/x.deb")
    assert r.status_code == 404


def test_rollback_is_seen_by_clients(wharf, admin, site):
    name, host = site
    r1 = admin.publish(name, {"dists/stable/Release": b"one"})
    first_lm = wharf.get(host, "/dists/stable/Release").headers["Last-Modified"]
    time.sleep(1.1)
    r2 = admin.publish(name, {"dists/stable/Release": b"two", "new.txt": b"new"})
    assert wharf.get(host, "/dists/stable/Release").content == b"two"
    out = admin.call("POST", f"/sites/{name}/rollback", {})
    assert out["id"] == r1 and out["state"] == "active"
    r = wharf.get(host, "/dists/stable/Release")
    assert r.content == b"one"
    assert r.headers["Last-Modified"] != first_lm, "Last-Modified is the time of this activation"
    assert wharf.get(host, "/new.txt").status_code == 404
    # roll forward again
    admin.call("POST", f"/sites/{name}/rollback", {"to": r2})
    assert wharf.get(host, "/new.txt").content == b"new"


def schema_version() -> int:
    """The version schema.sql declares (`-- wharf-schema-version: N`)."""
    first = (ROOT / "schema.sql").read_text().split("wharf-schema-version:", 1)[1]
    return int(first.split()[0])


def test_outdated_or_missing_schema_is_a_clear_error(tmp_path):
    old_schema = tmp_path / "old.sql"
    text = (ROOT / "schema.sql").read_text()
    version = schema_version()
    old = text.replace(f"VALUES ('version', '{version}')", f"VALUES ('version', '{version - 1}')")
    assert old != text
    old_schema.write_text(old)
    for schema in (old_schema, None):
        w = started(tmp_path / ("old" if schema else "none"), schema=schema)
        try:
            h = w.get(ADMIN_HOST, "/api/v1/health")
            assert h.status_code == 503 and h.json()["status"] == "schema_outdated"
            assert h.json()["schema"]["version"] == version
            r = w.get("any.pkgs.test", "/x")
            assert r.status_code == 503 and r.json()["error"]["code"] == "schema_outdated"
            r = w.get(ADMIN_HOST, "/api/v1/sites", headers={"Authorization": f"Bearer {w.root_token}"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "schema_outdated"
        finally:
            w.stop()


def test_health_reports_schema(wharf):
    h = wharf.get(ADMIN_HOST, "/api/v1/health").json()
    assert h["status"] == "ok"
    assert h["schema"]["version"] == h["schema"]["database_version"] == schema_version()
    assert h["schema"]["sha256"] == hashlib.sha256((ROOT / "schema.sql").read_bytes()).hexdigest()

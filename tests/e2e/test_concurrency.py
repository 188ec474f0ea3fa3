"""30 publishers race: each branches from the active release, adds its file and
activates with retry on 409. Compare-and-swap must lose nothing."""

from concurrent.futures import ThreadPoolExecutor

from wharf import ApiError


def test_thirty_concurrent_publishers(wharf, admin, unique):
    host = f"{unique}.pkgs.test"
    admin.site(unique, host)
    admin.publish(unique, {"base.txt": b"base"})
    retries = []

    def publisher(i: int) -> int:
        content = f"publisher {i}".encode()
        sha = admin.blob(content)
        for attempt in range(200):
            rel = admin.draft(unique)
            admin.call("PUT", f"/sites/{unique}/releases/{rel}/paths/files/{i}.txt", {"sha256": sha})
            try:
                admin.activate(unique, rel)
                retries.append(attempt)
                return rel
            except ApiError as e:
                assert e.status == 409, e
                admin.call("DELETE", f"/sites/{unique}/releases/{rel}", expect=204)
        raise AssertionError(f"publisher {i} never got through")

    with ThreadPoolExecutor(30) as pool:
        released = list(pool.map(publisher, range(30)))

    assert len(set(released)) == 30
    active = admin.call("GET", f"/sites/{unique}")["active_release"]
    paths = admin.call("GET", f"/sites/{unique}/releases/{active}/paths")["paths"]
    assert sorted(p["path"] for p in paths) == sorted(["base.txt"] + [f"files/{i}.txt" for i in range(30)])
    for i in range(30):
        assert wharf.get(host, f"/files/{i}.txt").content == f"publisher {i}".encode()
    assert sum(retries) > 0, "the publishers really did race"

"""The declarative mirror's configuration through the admin API: the files
people write are stored as sent once they check out; a file that does not is
answered 422 with every problem located (file, line, column, path) and leaves
the stored configuration as it was."""

import pytest

from wharf import Wharf

IMAGES = """images:
  - name: 'hashicorp/vault'          # may include a namespace
    versions: ['1.19.0', '1.19.5', 'latest']
    source_registry: 'docker.io'      # host of the source registry
    platforms: ["linux/amd64", "linux/arm64"]   # optional, default these two
  - name: nginx
    versions: ['~1.27', '>=1.28.0 <2']
    keep: 2
    source_registry: docker.io
"""

CHARTS = """charts:
  - name: 'vault'
    versions: ['0.29.0', '0.30.0']
    repo_name: 'hashicorp'            # becomes the chart repository name on the site
    repo_url: 'https://helm.releases.hashicorp.com'
"""

BROKEN = """images:
  - name: 'hashicorp/vault'
    versions: ['1.19.0']
    source_registry: 'docker.io'
  - name: nginx
    source_registry: https://docker.io
    versions: latest
    platforms: [linux/amd64, linux]
"""


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    w = Wharf(tmp_path_factory.mktemp("mirror-config"))
    yield w
    w.stop()


def test_files_are_checked_then_stored_each_in_its_part(w):
    a = w.admin
    a.site("decl", "decl.test")
    assert a.call("GET", "/sites/decl/mirror/config", expect=200) == {"files": {}, "declared": {"images": [], "charts": []}, "updated_at": None}
    r = a.call("PUT", "/sites/decl/mirror/config/images.yaml", data=IMAGES.encode(), expect=200)
    assert r["stored"] == "images.yaml"
    [vault, nginx] = r["declared"]["images"]
    assert (vault["source_repository"], vault["target"], vault["versions"]["exact"]) == ("hashicorp/vault", "hashicorp/vault", ["1.19.0", "1.19.5", "latest"])
    assert (nginx["source_repository"], nginx["target"], nginx["versions"]["constraints"], nginx["versions"]["keep"]) == ("library/nginx", "nginx", ["~1.27", ">=1.28.0 <2"], 2)
    assert nginx["platforms"] == ["linux/amd64", "linux/arm64"]
    a.call("PUT", "/sites/decl/mirror/config/charts.yaml", data=CHARTS.encode(), expect=200)
    got = a.call("GET", "/sites/decl/mirror/config", expect=200)
    assert got["files"] == {"images.yaml": IMAGES, "charts.yaml": CHARTS}, "stored as sent, comments and all"
    assert [i["name"] for i in got["declared"]["images"]] == ["hashicorp/vault", "nginx"]
    assert [(c["name"], c["repo_name"], c["repo_url"]) for c in got["declared"]["charts"]] == [("vault", "hashicorp", "https://helm.releases.hashicorp.com")]

    # A broken images.yaml: 422, every problem located, nothing changed.
    r = a.call("PUT", "/sites/decl/mirror/config/images.yaml", data=BROKEN.encode(), expect=422)
    assert r["error"]["code"] == "invalid_config"
    assert r["error"]["problems"] == [
        {"file": "images.yaml", "line": 6, "column": 22, "path": "images[1].source_registry",
         "message": "`https://docker.io` is not a registry host: write the host (and port) only, e.g. docker.io or ghcr.io"},
        {"file": "images.yaml", "line": 7, "column": 15, "path": "images[1].versions", "message": "expected a list of strings, found a string"},
        {"file": "images.yaml", "line": 8, "column": 30, "path": "images[1].platforms[1]",
         "message": "`linux` is not a platform: write os/arch or os/arch/variant (linux/amd64, linux/arm/v7)"},
    ]
    assert r["error"]["message"].startswith("3 problems; the first: images.yaml:6:22 images[1].source_registry: ")
    assert a.call("GET", "/sites/decl/mirror/config", expect=200)["files"] == {"images.yaml": IMAGES, "charts.yaml": CHARTS}
    # YAML that does not parse.
    r = a.call("PUT", "/sites/decl/mirror/config/charts.yaml", data=b"charts:\n  - name: [vault\n", expect=422)
    [p] = r["error"]["problems"]
    assert (p["file"], p["line"]) == ("charts.yaml", 3) and p["message"].startswith("YAML syntax: "), p
    assert a.call("GET", "/sites/decl/mirror/config", expect=200)["files"]["charts.yaml"] == CHARTS

    # Both in one document replaces both parts.
    both = IMAGES.split("  - name: nginx")[0] + CHARTS.replace("'0.29.0', ", "")
    r = a.call("PUT", "/sites/decl/mirror/config", data=both.encode(), expect=200)
    assert (len(r["declared"]["images"]), r["declared"]["charts"][0]["versions"]["exact"]) == (1, ["0.30.0"])
    assert a.call("GET", "/sites/decl/mirror/config", expect=200)["files"] == {"mirror.yaml": both}


def test_validate_checks_without_storing(w):
    a = w.admin
    a.site("decl2", "decl2.test")
    r = a.call("POST", "/sites/decl2/mirror/validate?file=images.yaml", data=IMAGES.encode(), expect=200)
    assert r["valid"] is True and len(r["declared"]["images"]) == 2
    r = a.call("POST", "/sites/decl2/mirror/validate?file=images.yaml", data=BROKEN.encode(), expect=422)
    assert [(p["line"], p["column"]) for p in r["error"]["problems"]] == [(6, 22), (7, 15), (8, 30)]
    # The same text as charts.yaml: `images` is not a field there.
    r = a.call("POST", "/sites/decl2/mirror/validate?file=charts.yaml", data=IMAGES.encode(), expect=422)
    assert [p["message"] for p in r["error"]["problems"]][-1] == "missing field `charts`"
    assert a.call("GET", "/sites/decl2/mirror/config", expect=200)["files"] == {}
    a.call("PUT", "/sites/decl2/mirror/config/other.yaml", data=IMAGES.encode(), expect=404)
    a.call("POST", "/sites/decl2/mirror/validate?file=other.yaml", data=IMAGES.encode(), expect=400)
    a.call("PUT", "/sites/decl2/mirror/config/images.yaml", data=b"\xff\xfe", expect=400)
    a.call("DELETE", "/sites/decl2/mirror/config", expect=405)
    a.call("PUT", "/sites/nosuch/mirror/config", data=IMAGES.encode(), expect=404)


def test_the_schedule_is_checked_and_says_when_it_fires_next(w):
    import time
    a = w.admin
    a.site("decl3", "decl3.test")
    assert a.call("GET", "/sites/decl3/mirror/settings", expect=200) == {"settings": {"schedule": None}, "next_run_at": None}
    before = int(time.time() * 1000)
    r = a.call("PUT", "/sites/decl3/mirror/settings", {"schedule": "0 */6 * * *"}, expect=200)
    assert r["settings"] == {"schedule": "0 */6 * * *"}
    nxt = r["next_run_at"]
    assert before < nxt <= before + 6 * 3600 * 1000 and nxt % (6 * 3600 * 1000) == 0, nxt  # the next 00/06/12/18:00 UTC
    r = a.call("PUT", "/sites/decl3/mirror/settings", {"schedule": "0 */6 * *"}, expect=422)
    assert r["error"]["message"].startswith("`0 */6 * *` has 4 fields"), r
    r = a.call("PUT", "/sites/decl3/mirror/settings", {"schedule": "61 * * * *"}, expect=422)
    assert "is not a cron expression" in r["error"]["message"], r
    assert a.call("GET", "/sites/decl3/mirror/settings", expect=200)["settings"] == {"schedule": "0 */6 * * *"}, "a refused schedule changes nothing"
    a.call("PUT", "/sites/decl3/mirror/settings", {"schedul": "@daily"}, expect=400)
    # Storing the files keeps the schedule; clearing it leaves runs by hand only.
    a.call("PUT", "/sites/decl3/mirror/config/images.yaml", data=IMAGES.encode(), expect=200)
    assert a.call("GET", "/sites/decl3/mirror/settings", expect=200)["settings"] == {"schedule": "0 */6 * * *"}
    assert a.call("PUT", "/sites/decl3/mirror/settings", {"schedule": None}, expect=200) == {"settings": {"schedule": None}, "next_run_at": None}
    assert a.call("GET", "/sites/decl3/mirror/config", expect=200)["files"] == {"images.yaml": IMAGES}

"""Runs of the declared mirror, proven with real clients: Debian's
docker-registry on loopback as the source (open, and behind the Docker token
flow with credentials), a multi-platform index built here, skopeo and podman
pulling what the run copied from the worker on workerd; a classic Helm chart
repository served here for charts; the Cron Trigger through wrangler's
/__scheduled endpoint."""

import json
import os
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
import threading
from pathlib import Path

import pytest
import requests
from debian import Hosts
from test_helm import chart, verify_repository
from test_oci import oci_layout, oci_multi_arch_layout, podman, sha, skopeo
from upstream import Front, TokenServer, Upstream
from wharf import Wharf, free_port

USER, PASSWORD = "sync-user", "s3cret-" + os.urandom(4).hex()


class ChartRepo:
    """A classic Helm chart repository (index.yaml + archives) served from a folder, counting GETs."""

    def __init__(self, root: Path):
        self.root, self.gets = root, []
        root.mkdir(parents=True, exist_ok=True)
        repo = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *a):
                pass

            def do_GET(self):
                repo.gets.append(self.path)
                super().do_GET()

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/charts"
        (root / "charts").mkdir(exist_ok=True)
        self.entries: dict = {}

    def add(self, name: str, version: str, data: bytes, digest: str | None = None):
        (self.root / "charts" / f"{name}-{version}.tgz").write_bytes(data)
        self.entries[name] = [e for e in self.entries.get(name, []) if e["version"] != version]  # a version added again replaces it
        self.entries.setdefault(name, []).append({"apiVersion": "v2", "name": name, "version": version, "urls": [f"{name}-{version}.tgz"],
                                                  "digest": digest or sha(data), "created": "2026-01-01T00:00:00Z"})
        (self.root / "charts" / "index.yaml").write_text(json.dumps({"apiVersion": "v1", "entries": self.entries}))

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("sync")
    hosts = Hosts()
    token = TokenServer(root, USER, PASSWORD)
    open_up = Upstream(root / "open")
    private_up = Upstream(root / "private", token)
    charts = ChartRepo(root / "chartrepo")
    w = Wharf(root / "state", https=True, test_scheduled=True, extra_vars={"UPSTREAM_PASSWORD": PASSWORD})

    class Env:
        pass

    e = Env()
    e.root, e.hosts, e.token, e.open, e.private, e.charts, e.wharf = root, hosts, token, open_up, private_up, charts, w
    yield e
    w.stop()
    charts.stop()
    open_up.stop()
    private_up.stop()
    token.stop()
    hosts.cleanup()


def site(e, name: str) -> str:
    host = e.hosts.add(f"{name}.sync.wharf.test")
    e.wharf.admin.site(name, host)
    return f"{host}:{e.wharf.port}"


def push(e, upstream: Upstream, ref: str, layout: Path, tag: str, creds: str | None = None, all_platforms=False):
    args = ["copy", "--dest-tls-verify=false"] + (["--all"] if all_platforms else [])
    if creds:
        args += ["--dest-creds", creds]
    skopeo(*args, f"oci:{layout}:{tag}", f"docker://{upstream.address}/{ref}")


def seed(e, upstream: Upstream, ref: str, payload: bytes, creds: str | None = None) -> dict:
    layout = e.root / ("layout-" + os.urandom(4).hex())
    image = oci_layout(layout, "v", {"payload.bin": payload})
    push(e, upstream, ref, layout, "v", creds)
    return image


def seed_multi(e, ref: str, arches, salt: bytes = b"") -> dict:
    layout = e.root / ("multi-" + os.urandom(4).hex())
    multi = oci_multi_arch_layout(layout, "v", arches, salt)
    push(e, e.open, ref, layout, "v", all_platforms=True)
    return multi


def wait_run(e, site_name: str, run: int, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while True:
        r = e.wharf.admin.call("GET", f"/sites/{site_name}/mirror/runs/{run}")
        if r["state"] in ("done", "failed"):
            return r
        if time.time() > deadline:
            raise AssertionError(f"run {run} did not finish: {json.dumps(r, indent=1)}")
        time.sleep(0.3)


def units(run: dict) -> dict:
    return {(u["target"], u["version"]): u for u in run["units"]}


def raw(ref: str, *extra) -> bytes:
    return skopeo("inspect", "--raw", "--tls-verify=false", *extra, f"docker://{ref}").stdout.encode()


def test_a_run_copies_what_is_declared_and_a_second_transfers_no_blob(env, tmp_path):
    e = env
    multi = seed_multi(e, "team/multi:1.0", ("amd64", "arm64", "s390x"))
    singles = {v: seed(e, e.open, f"team/single:{v}", os.urandom(64 << 10)) for v in ("1.0", "1.1", "2.0")}
    secret = seed(e, e.private, "team/secret:v1", b"private bytes", creds=f"{USER}:{PASSWORD}")
    reg = site(e, "sync-first")
    config = f"""images:
  - name: team/multi
    versions: ['1.0']
    source_registry: '{e.open.address}'
  - name: team/single
    versions: ['>=1.0 <2']
    source_registry: '{e.open.address}'
    platforms: [linux/amd64]
  - name: team/secret
    versions: [v1]
    source_registry: '{e.private.address}'
    target: private/secret
    credentials: {{username: {USER}, password_secret: UPSTREAM_PASSWORD}}
"""
    stored = e.wharf.admin.call("PUT", "/sites/sync-first/mirror/config/images.yaml", data=config.encode())
    assert stored["run"], "storing a changed configuration starts a run"
    run = wait_run(e, "sync-first", stored["run"])
    assert run["state"] == "done" and run["trigger"] == "config" and run["release"], run
    got = units(run)
    assert {k: u["state"] for k, u in got.items()} == {
        ("team/multi", "1.0"): "copied", ("team/single", "1.0"): "copied", ("team/single", "1.1"): "copied", ("private/secret", "v1"): "copied",
    }, run
    assert run["counts"] == {"copied": 4} and run["bytes"] >= 2 * (64 << 10)
    assert got[("team/single", "1.0")]["blobs_copied"] == 2 and got[("team/single", "1.0")]["duration_ms"] >= 0

    # Single-platform images: the site serves the upstream's manifests byte for byte.
    for v in ("1.0", "1.1"):
        assert raw(f"{reg}/team/single:{v}") == singles[v]["manifest"]
        copy = tmp_path / f"single-{v}"
        skopeo("copy", "--src-tls-verify=false", f"docker://{reg}/team/single:{v}", f"dir:{copy}")
        assert (copy / sha(singles[v]["layer"])).read_bytes() == singles[v]["layer"]
    assert skopeo("inspect", "--tls-verify=false", f"docker://{reg}/team/single:2.0", check=False).returncode != 0, "2.0 is outside the range"
    # Through the token flow with the entry's credentials, under its target name.
    assert raw(f"{reg}/private/secret:v1") == secret["manifest"]
    assert e.token.scopes["repository:team/secret:pull"] >= 1

    # The index lists three platforms, two are declared: the site serves a
    # new index of those two, annotated with the upstream digest.
    index = json.loads(raw(f"{reg}/team/multi:1.0"))
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    assert index["annotations"]["io.wharf.mirror.source-digest"] == f"sha256:{sha(multi['index'])}"
    assert index["annotations"]["io.wharf.mirror.left-out-platforms"] == "linux/s390x"
    for arch in ("amd64", "arm64"):
        image = multi["images"][arch]
        inspected = json.loads(skopeo("--override-arch", arch, "inspect", "--tls-verify=false", f"docker://{reg}/team/multi:1.0").stdout)
        assert inspected["Layers"] == [f"sha256:{sha(image['layer'])}"]
        assert raw(f"{reg}/team/multi@sha256:{sha(image['manifest'])}") == image["manifest"]
        out = tmp_path / f"multi-{arch}"
        skopeo("--override-arch", arch, "copy", "--src-tls-verify=false", f"docker://{reg}/team/multi:1.0", f"dir:{out}")
        assert (out / sha(image["layer"])).read_bytes() == image["layer"]
    left_out = skopeo("--override-arch", "s390x", "copy", "--src-tls-verify=false", f"docker://{reg}/team/multi:1.0", f"dir:{tmp_path / 's390x'}", check=False)
    assert left_out.returncode != 0 and "s390x" in left_out.stderr, left_out.stderr
    # podman pulls a declared platform, and says a left-out one is not there.
    import shutil
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="wharf-pod-", dir="/tmp"))
    (root / "auth.json").write_text("{}")
    try:
        got_arm = podman(root, "pull", "--tls-verify=false", "--platform", "linux/arm64", f"{reg}/team/multi:1.0")
        image_id = podman(root, "image", "inspect", "--format", "{{.Id}}", got_arm.stdout.strip()).stdout.strip()
        assert image_id == sha(multi["images"]["arm64"]["config"]), "the arm64 image (its config)"
        no = podman(root, "pull", "--tls-verify=false", "--platform", "linux/s390x", f"{reg}/team/multi:1.0", check=False)
        assert no.returncode != 0 and "s390x" in no.stderr, no.stderr
    finally:
        podman(root, "system", "reset", "--force", check=False)
        shutil.rmtree(root, ignore_errors=True)
    all_out = tmp_path / "all"
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{reg}/team/multi:1.0", f"oci:{all_out}:v")
    assert {sha(multi["images"][a]["layer"]) for a in ("amd64", "arm64")} <= {p.name for p in (all_out / "blobs/sha256").iterdir()}

    # A second run: HEADs only, nothing transferred, no release.
    blob_gets = e.open.requests_seen("GET", "/blobs/") + e.private.requests_seen("GET", "/blobs/")
    manifest_gets = e.open.requests_seen("GET", "/manifests/") + e.private.requests_seen("GET", "/manifests/")
    again = wait_run(e, "sync-first", e.wharf.admin.call("POST", "/sites/sync-first/mirror/runs", expect=202)["id"])
    assert again["state"] == "done" and again["release"] is None and again["counts"] == {"skipped": 4}, again
    assert all(u["reason"].startswith("exists") for u in again["units"])
    assert e.open.requests_seen("GET", "/blobs/") + e.private.requests_seen("GET", "/blobs/") == blob_gets
    assert e.open.requests_seen("GET", "/manifests/") + e.private.requests_seen("GET", "/manifests/") == manifest_gets
    listed = e.wharf.admin.call("GET", "/sites/sync-first/mirror/runs")["runs"]
    assert [r["id"] for r in listed[:2]] == [again["id"], run["id"]] and listed[1]["copied"] == 4 and listed[0]["skipped"] == 4


def test_moved_tags_new_versions_and_broken_units_then_rollback(env, tmp_path):
    e = env
    reg = site(e, "sync-change")
    old = {v: seed(e, e.open, f"change/app:{v}", os.urandom(1000)) for v in ("1.0", "1.1")}
    multi = seed_multi(e, "change/multi:1", ("amd64", "arm64"))
    tampered = Front(e.open)
    tampered.tamper = True
    seed(e, e.open, "change/tampered:1", b"tampered")
    config = f"""images:
  - {{name: change/app, versions: ['~1'], source_registry: '{e.open.address}', platforms: [linux/amd64]}}
  - {{name: change/multi, versions: ['1'], source_registry: '{e.open.address}'}}
  - {{name: change/multi, versions: ['1'], source_registry: '{e.open.address}', target: change/multi-ppc, platforms: [linux/amd64, linux/ppc64le]}}
  - {{name: change/tampered, versions: ['1'], source_registry: '127.0.0.1:{tampered.port}'}}
"""
    first = wait_run(e, "sync-change", e.wharf.admin.call("PUT", "/sites/sync-change/mirror/config", data=config.encode())["run"])
    got = units(first)
    assert got[("change/app", "1.0")]["state"] == "copied" and got[("change/app", "1.1")]["state"] == "copied"
    assert got[("change/multi", "1")]["state"] == "copied" and got[("change/multi", "1")]["digest"] == sha(multi["index"]), "all platforms declared: the upstream index"
    ppc = [u for u in first["units"] if u["target"] == "change/multi-ppc"][0]
    assert ppc["state"] == "failed" and ppc["reason"] == "platform missing at the source: 1 has no linux/ppc64le", ppc
    bad = got[("change/tampered", "1")]
    assert bad["state"] == "failed" and bad["reason"].startswith("digest mismatch"), bad
    assert first["state"] == "done" and first["release"], "what failed fails alone"
    assert raw(f"{reg}/change/multi:1") == multi["index"]
    assert skopeo("inspect", "--tls-verify=false", f"docker://{reg}/change/multi-ppc:1", check=False).returncode != 0
    before = first["release"]

    # Upstream: 1.0 moves, 1.2 appears (the range picks it up), 1.1 stays.
    moved = seed(e, e.open, "change/app:1.0", os.urandom(1000))
    new = seed(e, e.open, "change/app:1.2", os.urandom(1000))
    second = wait_run(e, "sync-change", e.wharf.admin.call("POST", "/sites/sync-change/mirror/runs", {"image": "change/app"}, expect=202)["id"])
    assert second["only"] == "change/app" and {k: u["state"] for k, u in units(second).items()} == {
        ("change/app", "1.0"): "copied", ("change/app", "1.1"): "skipped", ("change/app", "1.2"): "copied"}, second
    assert raw(f"{reg}/change/app:1.0") == moved["manifest"] and raw(f"{reg}/change/app:1.2") == new["manifest"]
    assert raw(f"{reg}/change/app:1.1") == old["1.1"]["manifest"]
    assert raw(f"{reg}/change/multi:1") == multi["index"], "a selective run leaves the rest as it was"

    # Rollback brings back the previous set.
    e.wharf.admin.call("POST", "/sites/sync-change/rollback", {"to": before})
    assert raw(f"{reg}/change/app:1.0") == old["1.0"]["manifest"]
    assert skopeo("inspect", "--tls-verify=false", f"docker://{reg}/change/app:1.2", check=False).returncode != 0
    tampered.stop()


def test_prune_drops_what_is_no_longer_declared(env):
    e = env
    reg = site(e, "sync-prune")
    for v in ("1", "2"):
        seed(e, e.open, f"prune/app:{v}", os.urandom(100))
    source = f"source_registry: '{e.open.address}', platforms: [linux/amd64]"
    put = lambda versions, prune: e.wharf.admin.call(  # noqa: E731
        "PUT", "/sites/sync-prune/mirror/config", data=f"images:\n  - {{name: prune/app, versions: {versions}, {source}, prune: {prune}}}\n".encode())["run"]
    wait_run(e, "sync-prune", put("['1', '2']", "false"))
    kept = wait_run(e, "sync-prune", put("['2']", "false"))
    assert kept["release"] is None and raw(f"{reg}/prune/app:1"), "prune off: 1 stays"
    pruned = wait_run(e, "sync-prune", put("['2']", "true"))
    assert {k: u["state"] for k, u in units(pruned).items()} == {("prune/app", "2"): "skipped", ("prune/app", "1"): "pruned"}, pruned
    assert skopeo("inspect", "--tls-verify=false", f"docker://{reg}/prune/app:1", check=False).returncode != 0
    assert raw(f"{reg}/prune/app:2")


def test_charts_land_in_index_yaml_and_in_the_registry(env):
    e = env
    host = site(e, "sync-charts").split(":")[0]
    good = [chart("vault", v) for v in ("0.29.0", "0.30.0")]
    for v, data in zip(("0.29.0", "0.30.0"), good):
        e.charts.add("vault", v, data)
    e.charts.add("vault", "0.31.0", chart("vault", "0.31.0"), digest="0" * 64)  # the index lies about this one
    e.charts.add("other", "1.0.0", chart("other", "1.0.0"))
    config = f"""charts:
  - name: vault
    versions: ['0.29.0', '0.30.0', '0.31.0']
    repo_name: hashicorp
    repo_url: '{e.charts.url}'
"""
    run = wait_run(e, "sync-charts", e.wharf.admin.call("PUT", "/sites/sync-charts/mirror/config/charts.yaml", data=config.encode())["run"])
    got = units(run)
    assert got[("hashicorp", "0.29.0")]["state"] == "copied" and got[("hashicorp", "0.30.0")]["state"] == "copied", run
    assert got[("hashicorp", "0.31.0")]["state"] == "failed" and "digest mismatch" in got[("hashicorp", "0.31.0")]["reason"]
    assert verify_repository(e.wharf, host, "hashicorp") == {"vault": ["0.30.0", "0.29.0"]}
    tags = e.wharf.get(host, "/v2/hashicorp/vault/tags/list").json()["tags"]
    assert sorted(tags) == ["0.29.0", "0.30.0"]
    # Again: the archives are held, nothing is downloaded.
    held = lambda: len([g for g in e.charts.gets if g.endswith(("0.29.0.tgz", "0.30.0.tgz"))])  # noqa: E731
    gets = held()
    again = wait_run(e, "sync-charts", e.wharf.admin.call("POST", "/sites/sync-charts/mirror/runs", {"chart": "vault"}, expect=202)["id"])
    assert {k: u["state"] for k, u in units(again).items()} == {("hashicorp", "0.29.0"): "skipped", ("hashicorp", "0.30.0"): "skipped", ("hashicorp", "0.31.0"): "failed"}
    assert held() == gets, "held archives are not downloaded again (the failed one is tried again)"
    # The source changes the bytes of a version (chart archives are not served
    # immutable): the next run follows it, as it follows a moved tag; a new
    # version lands beside it.
    changed_029 = chart("vault", "0.29.0", extra="home: https://changed.example\n")
    e.charts.add("vault", "0.29.0", changed_029)
    e.charts.add("vault", "0.32.0", chart("vault", "0.32.0"))
    config = config.replace("'0.31.0']", "'0.31.0', '0.32.0']")
    changed = wait_run(e, "sync-charts", e.wharf.admin.call("PUT", "/sites/sync-charts/mirror/config/charts.yaml", data=config.encode())["run"])
    got = units(changed)
    assert got[("hashicorp", "0.29.0")]["state"] == "copied" and got[("hashicorp", "0.32.0")]["state"] == "copied" and changed["release"], got
    assert verify_repository(e.wharf, host, "hashicorp") == {"vault": ["0.32.0", "0.30.0", "0.29.0"]}
    assert e.wharf.get(host, "/hashicorp/vault-0.29.0.tgz").content == changed_029


def test_the_cron_trigger_starts_the_runs_that_are_due(env):
    e = env
    seed(e, e.open, "cron/app:1", b"cron")
    config = f"images:\n  - {{name: cron/app, versions: ['1'], source_registry: '{e.open.address}', platforms: [linux/amd64]}}\n".encode()
    for name, schedule in (("sync-due", "*/5 * * * *"), ("sync-later", "0 0 1 1 *")):
        site(e, name)
        e.wharf.admin.call("PUT", f"/sites/{name}/mirror/settings", {"schedule": schedule})
        e.wharf.admin.call("PUT", f"/sites/{name}/mirror/config", data=config)
    # The due site's schedule counted from ten minutes ago; the other's next time is next January.
    ten_minutes_ago = int(time.time() * 1000) - 600_000
    e.wharf.d1_write("UPDATE mirror_configs SET schedule_since = ? WHERE site_id = (SELECT id FROM sites WHERE name = 'sync-due')", (ten_minutes_ago,))
    runs = lambda name: e.wharf.admin.call("GET", f"/sites/{name}/mirror/runs")["runs"]  # noqa: E731
    before = {name: len(runs(name)) for name in ("sync-due", "sync-later")}
    r = requests.get(e.wharf.url("/__scheduled?cron=*+*+*+*+*"), verify=False, timeout=30)
    assert r.status_code == 200, r.text
    deadline = time.time() + 30
    while len(runs("sync-due")) == before["sync-due"] and time.time() < deadline:
        time.sleep(0.3)
    newest = runs("sync-due")[0]
    assert newest["trigger"] == "schedule", newest
    assert wait_run(e, "sync-due", newest["id"])["state"] == "done"
    assert len(runs("sync-later")) == before["sync-later"], "not due: no run"
    settings = e.wharf.admin.call("GET", "/sites/sync-due/mirror/settings")
    assert settings["next_run_at"] > int(time.time() * 1000) - 60_000, "the schedule counts from the run it started"
    # Fired again at once: the due time was taken, no second run. A run left
    # unfinished for hours (a lost message) is ended: what it left pending fails.
    e.wharf.d1_write(
        "INSERT INTO mirror_runs(id, site_id, trigger, nonce, config, state, entries_pending, units_total, created_at) "
        "SELECT 990001, id, 'manual', 'stuck', '{}', 'running', 0, 1, 1 FROM sites WHERE name = 'sync-later'")
    e.wharf.d1_write(
        "INSERT INTO mirror_units(run_id, seq, site_id, kind, entry, name, target, version, state) "
        "SELECT 990001, 0, id, 'image', 0, 'cron/app', 'cron/app', '1', 'pending' FROM sites WHERE name = 'sync-later'")
    requests.get(e.wharf.url("/__scheduled?cron=*+*+*+*+*"), verify=False, timeout=30)
    stuck = wait_run(e, "sync-later", 990001, timeout=30)
    assert stuck["state"] == "done" and stuck["units"][0]["state"] == "failed" and stuck["units"][0]["reason"].startswith("timeout"), stuck
    assert len(runs("sync-due")) == before["sync-due"] + 1


def test_scan_reports_attached_to_mirrored_images_are_counted(env):
    """A publisher's CI scans the mirrored image and attaches the report as a
    referrer (what `oras attach --artifact-type … <image> report.json` sends);
    the run's report and the site's listing show its counts by severity."""
    e = env
    reg = site(e, "sync-scan")
    host = reg.split(":")[0]
    image = seed(e, e.open, "scan/app:1", b"scan me")
    config = f"images:\n  - {{name: scan/app, versions: ['1'], source_registry: '{e.open.address}', platforms: [linux/amd64]}}\n".encode()
    run = wait_run(e, "sync-scan", e.wharf.admin.call("PUT", "/sites/sync-scan/mirror/config", data=config)["run"])
    assert units(run)[("scan/app", "1")]["scans"] == [] and run["severities"] == {}
    auth = {"Authorization": f"Bearer {e.wharf.admin.make_token('publish', 'sync-scan').token}"}
    report = json.dumps({"SchemaVersion": 2, "ArtifactName": f"{reg}/scan/app:1", "Results": [
        {"Target": "debian", "Vulnerabilities": [{"VulnerabilityID": "CVE-2026-1", "Severity": "CRITICAL"},
                                                 {"VulnerabilityID": "CVE-2026-2", "Severity": "HIGH"},
                                                 {"VulnerabilityID": "CVE-2026-3", "Severity": "HIGH"}]}]}).encode()
    empty = b"{}"
    for blob in (empty, report):
        r = e.wharf.get(host, f"/v2/scan/app/blobs/uploads/?digest=sha256:{sha(blob)}", method="POST", data=blob, headers=auth)
        assert r.status_code == 201, r.text
    manifest = image["manifest"]
    referrer = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "artifactType": "application/vnd.aquasec.trivy.report+json",
                           "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": f"sha256:{sha(empty)}", "size": 2},
                           "layers": [{"mediaType": "application/json", "digest": f"sha256:{sha(report)}", "size": len(report)}],
                           "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{sha(manifest)}", "size": len(manifest)}}).encode()
    r = e.wharf.get(host, f"/v2/scan/app/manifests/sha256:{sha(referrer)}", method="PUT", data=referrer,
                    headers={**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, r.text
    shown = e.wharf.admin.call("GET", f"/sites/sync-scan/mirror/runs/{run['id']}")
    scans = units(shown)[("scan/app", "1")]["scans"]
    assert scans == [{"referrer": f"sha256:{sha(referrer)}", "artifact_type": "application/vnd.aquasec.trivy.report+json", "format": "trivy",
                      "severities": {"critical": 1, "high": 2}, "findings": 3}], scans
    assert shown["severities"] == {"critical": 1, "high": 2}
    listing = e.wharf.admin.call("GET", "/sites/sync-scan/mirror/images")["images"]
    assert listing[0]["target"] == "scan/app" and listing[0]["tags"][0]["tag"] == "1"
    assert listing[0]["tags"][0]["digest"] == f"sha256:{sha(manifest)}" and listing[0]["tags"][0]["severities"] == {"critical": 1, "high": 2}


def test_a_rate_limited_source_is_asked_again_after_its_retry_after(env):
    e = env
    site(e, "sync-429")
    image = seed(e, e.open, "limited/app:1", b"limited")
    front = Front(e.open)
    try:
        # The source answers its next two requests 429, asking for 6 s each
        # time (Wharf's own backoff would wait 2 s, then 4 s).
        front.status, front.retry_after, front.status_times = 429, "6", 2
        config = f"images:\n  - {{name: limited/app, versions: ['1'], source_registry: '127.0.0.1:{front.port}', platforms: [linux/amd64]}}\n".encode()
        run = wait_run(e, "sync-429", e.wharf.admin.call("PUT", "/sites/sync-429/mirror/config", data=config)["run"])
        assert units(run)[("limited/app", "1")]["state"] == "copied", run
        limited = [t for t, m, p, st in front.times if st == 429]
        assert len(limited) == 2, front.times
        after = [t for t, m, p, st in front.times if st == 0 and t > limited[-1]]
        assert limited[1] - limited[0] >= 5.9, "the source was asked again only after its Retry-After"
        assert after and after[0] - limited[-1] >= 5.9
        assert raw(f"{reg_of(e, 'sync-429')}/limited/app:1") == image["manifest"]
    finally:
        front.stop()


def reg_of(e, name: str) -> str:
    return f"{name}.sync.wharf.test:{e.wharf.port}"


def test_the_readme_runs_recipe_runs_as_written(env, tmp_path):
    from test_readme import block_after, run_block

    e = env
    image = seed(e, e.open, "hashicorp/vault:1.19.0", b"vault")
    site(e, "mirror")
    token = e.wharf.admin.make_token("admin", "mirror").token  # storing the configuration takes an admin token of the site
    (tmp_path / "images.yaml").write_text(
        f"images:\n  - name: 'hashicorp/vault'\n    versions: ['1.19.0']\n    source_registry: '{e.open.address}'\n    platforms: [linux/amd64]\n")
    admin = e.hosts.add("admin.wharf.test")
    (tmp_path / ".curlrc").write_text("insecure\n")  # wrangler's self-signed certificate
    out = run_block(block_after("### Declared mirrors", "**Runs.**"), tmp_path,
                    {"API": f"https://{admin}:{e.wharf.port}/api/v1", "AUTH": f"Authorization: Bearer {token}", "CURL_HOME": str(tmp_path)})
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["state"] == "done" and lines[0]["counts"] == {"copied": 1}, out
    assert lines[0]["units"] == [{"name": "hashicorp/vault", "version": "1.19.0", "state": "copied", "reason": None}]
    assert lines[1]["state"] in ("running", "done") and isinstance(lines[1]["id"], int)
    assert lines[-1] == {"target": "hashicorp/vault", "tags": [{"tag": "1.19.0", "digest": f"sha256:{sha(image['manifest'])}", "severities": {}}]}

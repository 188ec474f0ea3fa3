"""Helm chart repositories, verified as Helm reads them (no helm client can be
installed here): index.yaml parsed with a YAML library, every field Helm
needs, each digest against the served archive, the archive untarred; the
same charts pulled from the site's registry with skopeo, media types and
digests checked."""

import hashlib
import io
import json
import subprocess
import tarfile
from datetime import datetime
from urllib.parse import urljoin

import pytest
import yaml
from debian import Gpg, Hosts
from test_oci import skopeo
from wharf import Wharf


@pytest.fixture(scope="module")
def helm(tmp_path_factory):
    w = Wharf(tmp_path_factory.mktemp("helm-state"), https=True)
    hosts = Hosts()
    host = hosts.add("charts.helm.wharf.test")
    w.admin.site("charts", host)
    yield w, host
    w.stop()
    hosts.cleanup()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def chart(name: str, version: str, top: str | None = None, extra: str = "", files: dict | None = None) -> bytes:
    """A chart archive as `helm package` writes it."""
    top = top or name
    chart_yaml = f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"1.10\"\ndescription: the {name} chart\ntype: application\n{extra}"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as t:
        for path, data in {f"{top}/Chart.yaml": chart_yaml.encode(), f"{top}/values.yaml": b"replicas: 1\n",
                           f"{top}/templates/cm.yaml": b"kind: ConfigMap\n", **(files or {})}.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime = len(data), 1700000000
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def add(admin, rel: int, repo: str, data: bytes, expect=201, **params):
    q = "&".join([f"sha256={sha(data)}"] + [f"{k}={v}" for k, v in params.items()])
    return admin.call("POST", f"/sites/charts/releases/{rel}/helm/{repo}/charts?{q}", data=data, expect=expect,
                      headers={"Content-Type": "application/octet-stream"})


def verify_repository(w, host: str, repo: str) -> dict:
    """What `helm repo add` + `helm pull` check: index.yaml parses, apiVersion
    v1, each version carries name, version, apiVersion, urls and a digest equal
    to the sha256 of the archive its URL serves, whose Chart.yaml says the same."""
    r = w.get(host, f"/{repo}/index.yaml")
    assert r.status_code == 200, r.text
    index = yaml.safe_load(r.text)
    # Timestamps are plain scalars (Helm's YAML reader gives them to time.Time as text; PyYAML makes datetimes).
    assert index["apiVersion"] == "v1" and isinstance(index["generated"], datetime)
    base = f"https://{host}/{repo}/index.yaml"
    seen = {}
    for name, versions in index["entries"].items():
        assert versions, name
        for v in versions:
            assert v["name"] == name and v["apiVersion"] in ("v1", "v2") and v["urls"] and isinstance(v["created"], datetime), v
            url = urljoin(base, v["urls"][0])
            assert url.startswith(f"https://{host}/{repo}/")
            archive = w.get(host, url.split(host, 1)[1])
            assert archive.status_code == 200 and sha(archive.content) == v["digest"], v
            with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as t:
                meta = yaml.safe_load(t.extractfile(f"{name}/Chart.yaml").read())
            assert (meta["name"], str(meta["version"])) == (name, v["version"])
            seen.setdefault(name, []).append(v["version"])
    return seen


def test_a_chart_repository_as_helm_reads_it_and_as_oci_artifacts(helm, tmp_path):
    w, host = helm
    admin = w.admin.make_token("publish", "charts")
    rel = admin.draft("charts")
    web1, web2, api = chart("web", "1.0.0"), chart("web", "1.10.0"), chart("api", "0.1.0-rc.1+build.2")
    for data in (web1, web2, api):
        up = add(admin, rel, "stable", data)
        assert up["sha256"] == sha(data) and up["metadata"]["appVersion"] == "1.10"

    # Provenance: a clear-signed document naming this archive's digest.
    gpg = Gpg(tmp_path / "gpg").generate("Chart Signer <c@example.com>")
    prov_text = f"apiVersion: v2\nname: web\nversion: 1.10.0\n\n...\nfiles:\n  web-1.10.0.tgz: sha256:{sha(web2)}\n"
    prov = gpg.run("--clearsign", input=prov_text.encode())
    admin.call("PUT", f"/sites/charts/releases/{rel}/helm/stable/charts/web/1.10.0/provenance", data=prov)
    wrong = gpg.run("--clearsign", input=prov_text.replace(sha(web2), sha(web1)).encode())
    err = admin.call("PUT", f"/sites/charts/releases/{rel}/helm/stable/charts/web/1.10.0/provenance", data=wrong, expect=422)
    assert err["error"]["code"] == "invalid_provenance"

    # Before activation nothing is served; after it, the whole repository at once.
    assert w.get(host, "/stable/index.yaml").status_code == 404
    admin.activate("charts", rel)
    seen = verify_repository(w, host, "stable")
    assert seen == {"api": ["0.1.0-rc.1+build.2"], "web": ["1.10.0", "1.0.0"]}  # newest first, by SemVer
    served_prov = w.get(host, "/stable/web-1.10.0.tgz.prov")
    assert served_prov.status_code == 200 and served_prov.content == prov
    assert subprocess.run(["gpg", "--homedir", str(gpg.home), "--verify"], input=served_prov.content, capture_output=True).returncode == 0
    index = yaml.safe_load(w.get(host, "/stable/index.yaml").text)
    assert index["entries"]["web"][0]["appVersion"] == "1.10" and index["entries"]["web"][0]["type"] == "application"

    # The same chart in the site's registry, as `helm pull oci://host/stable/web --version 1.10.0` reads it.
    ref = f"docker://{host}:{w.port}/stable/web:1.10.0"
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", ref).stdout)
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"
    layers = {l["mediaType"]: l for l in manifest["layers"]}
    assert layers["application/vnd.cncf.helm.chart.content.v1.tar+gzip"]["digest"] == f"sha256:{sha(web2)}"
    assert layers["application/vnd.cncf.helm.chart.provenance.v1.prov"]["digest"] == f"sha256:{sha(prov)}"
    for digest, want in [(manifest["config"]["digest"], None), (f"sha256:{sha(web2)}", web2)]:
        blob = w.get(host, f"/v2/stable/web/blobs/{digest}")
        assert blob.status_code == 200 and sha(blob.content) == digest[7:]
        if want is not None:
            assert blob.content == want
    config = json.loads(w.get(host, f"/v2/stable/web/blobs/{manifest['config']['digest']}").content)
    assert (config["name"], config["version"], config["apiVersion"]) == ("web", "1.10.0", "v2")
    # A version with build metadata is tagged as Helm tags it ('+' becomes '_').
    assert json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}:{w.port}/stable/api:0.1.0-rc.1_build.2").stdout)["layers"][0]["digest"] == f"sha256:{sha(api)}"

    # A removed version leaves the index, its archive and its tag, in the next release only.
    rel2 = admin.draft("charts")
    admin.call("DELETE", f"/sites/charts/releases/{rel2}/helm/stable/charts/web/1.0.0", expect=204)
    assert "1.0.0" in verify_repository(w, host, "stable")["web"]
    admin.activate("charts", rel2)
    assert verify_repository(w, host, "stable")["web"] == ["1.10.0"]
    assert w.get(host, "/stable/web-1.0.0.tgz").status_code == 404
    assert w.get(host, "/v2/stable/web/manifests/1.0.0").status_code == 404
    # And a rollback brings it all back.
    admin.call("POST", "/sites/charts/rollback", {"to": rel})
    assert verify_repository(w, host, "stable")["web"] == ["1.10.0", "1.0.0"]


def test_malformed_charts_are_refused_with_the_reason_and_leave_nothing(helm):
    w, host = helm
    admin = w.admin
    rel = admin.draft("charts")
    before = admin.call("GET", f"/sites/charts/releases/{rel}/helm/stable/charts")["charts"]
    cases = [
        (b"this is not a chart", "not gzip"),
        (chart("web", "1.0.0", top="other"), "its folder in the archive is \"other\""),
        (chart("web", "1.0"), "not SemVer 2"),
        (chart("web", "1.0.0", files={"web/../../evil": b"x"}), "leaves the package root"),
    ]
    no_yaml = io.BytesIO()
    with tarfile.open(fileobj=no_yaml, mode="w:gz") as t:
        info = tarfile.TarInfo("web/values.yaml")
        info.size = 2
        t.addfile(info, io.BytesIO(b"a\n"))
    cases.append((no_yaml.getvalue(), "no web/Chart.yaml"))
    for data, reason in cases:
        err = add(admin, rel, "stable", data, expect=422)
        assert err["error"]["code"] == "invalid_chart" and reason in err["error"]["message"], err
    assert admin.call("GET", f"/sites/charts/releases/{rel}/helm/stable/charts")["charts"] == before
    # Same name and version, other bytes: refused unless replaced.
    add(admin, rel, "stable", chart("dup", "1.0.0"))
    other = chart("dup", "1.0.0", extra="keywords: [x]\n")
    err = add(admin, rel, "stable", other, expect=409)
    assert "replace=true" in err["error"]["message"]
    add(admin, rel, "stable", other, replace="true")
    listed = admin.call("GET", f"/sites/charts/releases/{rel}/helm/stable/charts")["charts"]
    assert [c["sha256"] for c in listed if c["name"] == "dup"] == [sha(other)]
    admin.call("DELETE", f"/sites/charts/releases/{rel}", expect=204)


def test_a_chart_pushed_to_the_registry_is_listed_in_index_yaml(helm):
    """The requests `helm push pushed-2.0.0.tgz oci://host/stable` makes (blob
    uploads, then the manifest with Helm's media types): the classic
    repository lists the chart at once and serves its archive, leaving the
    pushed artifact as it was."""
    w, host = helm
    auth = {"Authorization": f"Bearer {w.admin.make_token('publish', 'charts').token}"}
    tgz = chart("pushed", "2.0.0")
    config = json.dumps({"apiVersion": "v2", "name": "pushed", "version": "2.0.0", "description": "pushed by helm"}).encode()
    for blob in (config, tgz):
        r = w.get(host, f"/v2/stable/pushed/blobs/uploads/?digest=sha256:{sha(blob)}", method="POST", data=blob, headers=auth)
        assert r.status_code == 201, r.text
    oci_manifest = "application/vnd.oci.image.manifest.v1+json"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": oci_manifest,
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": f"sha256:{sha(config)}", "size": len(config)},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": f"sha256:{sha(tgz)}", "size": len(tgz)}],
        "annotations": {"org.opencontainers.image.title": "pushed", "org.opencontainers.image.version": "2.0.0"}}).encode()
    r = w.get(host, "/v2/stable/pushed/manifests/2.0.0", method="PUT", data=manifest, headers={**auth, "Content-Type": oci_manifest})
    assert r.status_code == 201, r.text
    # The push published the classic repository too, in a release of its own.
    assert verify_repository(w, host, "stable")["pushed"] == ["2.0.0"]
    notes = [r["note"] for r in w.admin.call("GET", "/sites/charts/releases")["releases"][:2]]
    assert notes == ["helm push: publish stable/index.yaml", "push manifest to stable/pushed"], notes
    assert w.get(host, "/stable/pushed-2.0.0.tgz").content == tgz
    got = w.get(host, "/v2/stable/pushed/manifests/2.0.0", headers={"Accept": oci_manifest})
    assert got.status_code == 200 and got.content == manifest, "the pushed artifact is left as pushed"

"""Seeds fuzz/corpus/<target>/ with real inputs: packages built by dpkg-deb and
like abuild (the e2e tests' builders), manifests, paths, headers, tokens."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from apk import build_apk  # noqa: E402
from debian import build_deb  # noqa: E402

out = Path(sys.argv[1])


def seed(target: str, name: str, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


with tempfile.TemporaryDirectory() as tmp:
    for z in ("gzip", "xz", "zstd", "none"):
        seed("deb_package", f"hello-{z}.deb", build_deb(Path(tmp), "hello", "1:1.2-3", "amd64", z, extra="Depends: libc6 (>= 2.36)\n"))
    ctrl = subprocess.run(["dpkg-deb", "-f", str(next(Path(tmp).glob("*.gzip.deb")))], capture_output=True, check=True).stdout
    for deb in Path(tmp).glob("*.deb"):
        # The data member, for the archive check: the byte before it says how to split it.
        data, at = deb.read_bytes(), 8
        while at + 60 <= len(data):
            name, size = data[at:at + 16].decode().strip().rstrip("/"), int(data[at + 48:at + 58])
            if name.startswith("data.tar"):
                seed("package_archive", f"{deb.stem}-{name}", b"\x07" + data[at + 60:at + 60 + size])
            at += 60 + size + size % 2
seed("deb_control", "control", ctrl)
seed("deb_control", "multi", "Package: a\nVersion: 1.0~rc1-2+b1\nArchitecture: all\nDescription: x\n long\n .\n more\n")
apk = build_apk("hello", "1.2.3-r0", "x86_64", depends=["so:libc.musl-x86_64.so.1"])
seed("apk_package", "hello.apk", apk)
seed("apk_package", "noarch.apk", build_apk("doc", "2.0_rc1-r1", "noarch"))
seed("apk_pkginfo", "pkginfo", "pkgname = hello\npkgver = 1.2.3-r0\narch = x86_64\nsize = 1\ndatahash = " + "ab" * 32 + "\ndepend = so:libc\n")
seed("apk_pkginfo", "version", "1.0_alpha2_p3~abc-r10")
config = json.dumps({"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "a" * 64, "size": 2})
layer = json.dumps({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "b" * 64, "size": 3})
seed("oci_manifest", "manifest", f'{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{config},"layers":[{layer}],'
     f'"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{"c" * 64}","size":5}},"artifactType":"x/y"}}')
seed("oci_manifest", "index", '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":'
     f'"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{"d" * 64}","size":7,"platform":{{"architecture":"arm64","os":"linux"}}}}]}}')
seed("oci_manifest", "docker", '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":' + config + ',"layers":[]}')
for i, p in enumerate(["/dists/stable/InRelease", "/pool/main/h/hello/hello_1.0_amd64.deb", "/a%2Fb/..%2f/x", "/v2/team/app/manifests/v1",
                       "/v2/org/app/blobs/sha256:" + "e" * 64, "/v2/app/blobs/uploads/0123", "/api/v1/sites/a/releases/3/paths/x/y",
                       "APT.Example.COM.", "xn--bcher-kva.example", "/..\\..\\hello.txt", "/%00", "/v2/_catalog"]):
    seed("paths", f"p{i}", p)
for i, h in enumerate(["bytes=0-10\n\"etag\"\nWed, 21 Oct 2015 07:28:00 GMT\n*\nbytes=5-\n\"x\"", "bytes=-5", "bytes=0-0,2-3", "W/\"a\", \"b\"\n\n\n\n\n"]):
    seed("http_headers", f"h{i}", h)
seed("upstream_auth", "bearer", 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"')
seed("upstream_auth", "basic", 'Basic realm="Registry Realm"')
seed("upstream_auth", "token", '{"token":"abc","access_token":"abc","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}')
seed("mirror_config", "example", """images:
  - name: 'hashicorp/vault'
    versions: ['1.19.0', '~1.25', '>=2.0.0 <3 || ^4']
    source_registry: 'docker.io'
    platforms: ["linux/amd64", "linux/arm/v7"]
    keep: 2
    credentials: {username: bot, password_secret: HUB_TOKEN}
charts:
  - {name: vault, match: '0\\.3[0-9]\\..*', repo_name: hashicorp, repo_url: 'https://helm.releases.hashicorp.com', prune: true}
""")
seed("tokens", "bearer", "Bearer wharf_0123456789abcdef_" + "x" * 43)
seed("tokens", "scope", "repository:team/app:pull,push&repository:x:*&registry:catalog:*")
seed("tokens", "registry", "eyJzaXRlIjoxLCJzaXRlX2NyZWF0ZWQiOjEsImFjY2VzcyI6W10sImV4cCI6MX0.c2ln")
seed("scan_report", "trivy", json.dumps({"SchemaVersion": 2, "Results": [{"Target": "os", "Vulnerabilities": [{"Severity": "HIGH"}, {"Severity": "CRITICAL"}]}]}))
seed("scan_report", "grype", json.dumps({"matches": [{"vulnerability": {"id": "CVE-1", "severity": "Medium"}}]}))
seed("scan_report", "sarif", json.dumps({"version": "2.1.0", "runs": [{"tool": {"driver": {"rules": [
    {"id": "CVE-1", "properties": {"tags": ["vulnerability", "HIGH"], "security-severity": "7.5"}}]}}, "results": [{"ruleId": "CVE-1", "level": "error"}]}]}))
seed("scan_report", "cyclonedx", json.dumps({"bomFormat": "CycloneDX", "components": [{}], "vulnerabilities": [{"ratings": [{"severity": "low"}]}]}))
seed("scan_report", "index", json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "a" * 64, "size": 10, "platform": {"os": "linux", "architecture": "amd64"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "b" * 64, "size": 10, "platform": {"os": "linux", "architecture": "s390x"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "c" * 64, "size": 10, "platform": {"os": "unknown", "architecture": "unknown"},
     "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": "sha256:" + "a" * 64}}]}))


def batch_tar() -> bytes:
    import io
    import tarfile
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in (("a.deb", b"first"), ("d" * 120 + "/long.apk", b"x" * 700), ("c.tgz", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = {"WHARF.sha256": "0" * 64}
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


seed("batch_tar", "pax", b"\x07" + batch_tar())

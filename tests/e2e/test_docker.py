"""Docker itself against Wharf: `docker login`/`push`/`pull` on a site, and
Docker's `registry-mirrors` pointing at a Wharf mirror site (the README's
daemon.json). The test runs its own dockerd (Debian's docker.io, vfs storage,
no networking of its own) with a private data root and socket."""

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from debian import Hosts
from test_oci import oci_layout, sha, skopeo
from upstream import Upstream
from wharf import Wharf, stop_process_group


class Dockerd:
    def __init__(self, root: Path, config: dict):
        self.root = root
        (root / "daemon.json").write_text(json.dumps({"storage-driver": "vfs", "iptables": False, "ip-forward": False,
                                                      "ip-masq": False, "bridge": "none", **config}))
        self.sock = root / "docker.sock"
        self.log = open(root / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            ["dockerd", "--config-file", str(root / "daemon.json"), "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "docker.pid"), "-H", f"unix://{self.sock}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            if self.sock.exists() and self.run("version", check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("dockerd did not start: " + (root / "dockerd.log").read_text(errors="replace")[-3000:])

    def run(self, *args, check=True, input=None) -> subprocess.CompletedProcess:
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}", "DOCKER_CONFIG": str(self.root / "client")}
        r = subprocess.run(["docker", *args], capture_output=True, env=env, timeout=300, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {r.stderr.decode(errors='replace')}")
        return r

    def stop(self):
        stop_process_group(self.proc, timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("docker")
    hosts = Hosts()
    upstream = Upstream(root / "upstream")
    w = Wharf(root / "state", https=True)
    push_host, mirror_host = hosts.add("docker-push.wharf.test"), hosts.add("docker-mirror.wharf.test")
    w.admin.site("docker-push", push_host)
    w.admin.site("docker-mirror", mirror_host)
    w.admin.call("PUT", "/sites/docker-mirror/oci/settings", {"upstreams": [{"url": upstream.url, "library": True}]})
    # dockerd wants short paths for its sockets.
    droot = Path(tempfile.mkdtemp(prefix="wharf-dockerd-", dir="/tmp"))
    dockerd = None
    try:
        dockerd = Dockerd(droot, {"registry-mirrors": [f"https://{mirror_host}:{w.port}"],
                                  "insecure-registries": [f"{push_host}:{w.port}", f"{mirror_host}:{w.port}"]})
        yield {"root": root, "wharf": w, "upstream": upstream, "dockerd": dockerd,
               "push": f"{push_host}:{w.port}", "mirror_host": mirror_host}
    finally:
        if dockerd:
            dockerd.stop()
        shutil.rmtree(droot, ignore_errors=True)
        w.stop()
        upstream.stop()
        hosts.cleanup()


def rootfs_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_docker_logs_in_pushes_and_pulls(setup):
    d, w, ref = setup["dockerd"], setup["wharf"], f"{setup['push']}/team/app:v1"
    d.run("import", "-", ref, input=rootfs_tar({"hello.txt": b"pushed by docker\n", "big.bin": os.urandom(3 << 20)}))
    denied = d.run("push", ref, check=False)
    # Refused by the registry for want of a login (not a DNS, TLS or daemon failure).
    said = denied.stderr.decode(errors="replace")
    assert denied.returncode != 0 and said.strip().splitlines()[-1] == "unauthorized", said
    token = w.admin.make_token("publish", "docker-push").token
    d.run("login", setup["push"], "--username", "ci", "--password-stdin", input=token.encode())
    d.run("push", ref)
    local_id = d.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.decode().strip()
    d.run("rmi", ref)
    d.run("logout", setup["push"])
    d.run("pull", ref)  # anonymous pull
    assert d.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.decode().strip() == local_id
    digest = d.run("image", "inspect", "--format", "{{index .RepoDigests 0}}", ref).stdout.decode().strip().split("@")[1]
    r = w.get(setup["push"].split(":")[0], "/v2/team/app/manifests/v1", method="HEAD",
              headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest


def test_docker_pulls_through_a_registry_mirrors_entry(setup):
    """`docker pull hello:v1` means docker.io/library/hello:v1: with Wharf as the
    daemon's registry mirror it comes from the mirror site's upstream (Docker
    Hub itself is unreachable here, so only the mirror can answer)."""
    d, up = setup["dockerd"], setup["upstream"]
    layout = setup["root"] / "hello"
    image = oci_layout(layout, "v1", {"hello.txt": b"from the mirror\n"})
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{up.address}/library/hello:v1")
    d.run("pull", "hello:v1")
    repo_digests = d.run("image", "inspect", "--format", "{{json .RepoDigests}}", "hello:v1").stdout.decode()
    assert f"sha256:{sha(image['manifest'])}" in repo_digests
    entries = setup["wharf"].admin.call("GET", "/sites/docker-mirror/oci/cache?repository=library/hello")["entries"]
    assert any(e["kind"] == "tag" and e["reference"] == "v1" for e in entries)


def test_docker_pulls_a_declared_mirrors_partial_index(setup, tmp_path):
    """A declared mirror that copies one platform of a two-platform index:
    docker pulls the copied platform and says plainly that the other is not there."""
    from test_oci import oci_multi_arch_layout
    d, w, up = setup["dockerd"], setup["wharf"], setup["upstream"]
    multi = oci_multi_arch_layout(tmp_path / "multi", "v", ("amd64", "s390x"))
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{tmp_path / 'multi'}:v", f"docker://{up.address}/team/multi:1")
    config = f"images:\n  - {{name: team/multi, versions: ['1'], source_registry: '{up.address}', platforms: [linux/amd64]}}\n"
    run = w.admin.call("PUT", "/sites/docker-push/mirror/config", data=config.encode())["run"]
    for _ in range(300):
        report = w.admin.call("GET", f"/sites/docker-push/mirror/runs/{run}")
        if report["state"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert report["state"] == "done" and report["counts"] == {"copied": 1}, report
    ref = f"{setup['push']}/team/multi:1"
    d.run("pull", "--platform", "linux/amd64", ref)
    assert d.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.decode().strip() == f"sha256:{sha(multi['images']['amd64']['config'])}"
    no = d.run("pull", "--platform", "linux/s390x", ref, check=False)
    said = no.stderr.decode(errors="replace")
    assert no.returncode != 0 and "no matching manifest for linux/s390x" in said, said

"""Registry pulls: Wharf against Debian's docker-registry (distribution 2.8)
serving the same image on loopback, both over TLS, in one run: the pull time
of an image with a large layer (skopeo copy to a dir:) and manifest GETs per
second (wrk); and the same image pulled through a Wharf site that mirrors a
second docker-registry (plain HTTP, same storage): cold once, then warm.

Run by hand: `make bench-oci`. Results: bench/out-oci/results.md.
BENCH_OCI_LAYER_MIB sets the layer size (default 256).
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
from debian import Hosts  # noqa: E402
from test_oci import oci_layout, sha  # noqa: E402
from wharf import Wharf, free_port  # noqa: E402

OUT = HERE / "out-oci"
LAYER_MIB = int(os.environ.get("BENCH_OCI_LAYER_MIB", "256"))
RUNS = 5


def run(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def start_registry(root: Path, tls: bool = True) -> tuple[subprocess.Popen, int]:
    """docker-registry on loopback, storing under root/data (a plain-HTTP one,
    `tls=False`, can serve the same storage as the mirror's upstream)."""
    port = free_port()
    listen = f"addr: 127.0.0.1:{port}"
    if tls:
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"))
        listen += f", tls: {{certificate: {root / 'cert.pem'}, key: {root / 'key.pem'}}}"
    config = root / ("config.yml" if tls else "config-plain.yml")
    config.write_text(f"""version: 0.1
log: {{level: error}}
storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}
http: {{{listen}}}
""")
    p = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    scheme = "https" if tls else "http"
    for _ in range(100):
        try:
            requests.get(f"{scheme}://127.0.0.1:{port}/v2/", verify=False, timeout=1)
            return p, port
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError("docker-registry did not start")


def timed_pull(ref: str, dest: Path, retries: int = 0) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    t = time.perf_counter()
    run("skopeo", "copy", "--retry-times", str(retries), "--src-tls-verify=false", f"docker://{ref}", f"dir:{dest}")
    return time.perf_counter() - t


def ratio(a: list, b: list) -> str:
    return f"{statistics.median(a) / statistics.median(b):.2f}×" if a and b else "n/a"


def wrk(url: str, host: str) -> float:
    out = run("wrk", "-t2", "-c32", "-d10s", "-H", f"Host: {host}", "-H",
              "Accept: application/vnd.oci.image.manifest.v1+json", url).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    hosts = Hosts()
    w = Wharf(OUT / "state", https=True, extra_vars={"MAX_BLOB_BYTES": str(4 << 30), **({"EDGE_CACHE": os.environ["EDGE_CACHE"]} if "EDGE_CACHE" in os.environ else {})})
    reg, reg_port = start_registry(OUT)
    upstream = None
    try:
        host = hosts.add("bench-registry.wharf.test")
        w.admin.site("bench", host)
        token = w.admin.make_token("publish", "bench").token
        image = oci_layout(OUT / "image", "v1", {"big.bin": os.urandom(LAYER_MIB << 20)})
        layout = f"oci:{OUT / 'image'}:v1"
        wharf_ref, plain_ref = f"{host}:{w.port}/bench/app:v1", f"127.0.0.1:{reg_port}/bench/app:v1"
        t = time.perf_counter()
        run("skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", f"ci:{token}", layout, f"docker://{wharf_ref}")
        push_wharf = time.perf_counter() - t
        t = time.perf_counter()
        run("skopeo", "copy", "--dest-tls-verify=false", layout, f"docker://{plain_ref}")
        push_reg = time.perf_counter() - t
        # Same bytes on both sides: the manifests and layers are the layout's.
        for ref in (wharf_ref, plain_ref):
            info = json.loads(run("skopeo", "inspect", "--tls-verify=false", f"docker://{ref}").stdout)
            assert info["Digest"] == f"sha256:{sha(image['manifest'])}", (ref, info["Digest"])
        rows = []
        for name, ref in (("Wharf", wharf_ref), ("docker-registry 2.8", plain_ref)):
            pulls = [timed_pull(ref, OUT / "pulled") for _ in range(RUNS)]
            assert (OUT / "pulled" / sha(image["layer"])).stat().st_size == len(image["layer"])
            rows.append([name, statistics.median(pulls)])
        # The same image through a mirror site whose upstream is docker-registry.
        upstream, upstream_port = start_registry(OUT, tls=False)
        mirror_host = hosts.add("bench-mirror.wharf.test")
        w.admin.site("mirror", mirror_host)
        w.admin.call("PUT", "/sites/mirror/oci/settings", {"upstreams": [{"url": f"http://127.0.0.1:{upstream_port}"}]})
        mirror_ref = f"{mirror_host}:{w.port}/bench/app:v1"
        # Locally, workerd serves nothing else while a cold layer streams from the
        # upstream into R2 (the local R2 runs in the same process): skopeo's
        # parallel config fetch can time out its TLS handshake (10 s) and retry.
        cold = timed_pull(mirror_ref, OUT / "pulled", retries=3)
        assert (OUT / "pulled" / sha(image["layer"])).read_bytes() == image["layer"]
        for _ in range(600):  # the layer's copy is stored after the response
            entries = w.admin.call("GET", "/sites/mirror/oci/cache?repository=bench/app")["entries"]
            if any(e["kind"] == "blob" and e["reference"] == sha(image["layer"]) and e["sha256"] for e in entries):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the mirrored layer was never cached")
        warm = statistics.median(timed_pull(mirror_ref, OUT / "pulled") for _ in range(RUNS))
        manifest_path = "/v2/bench/app/manifests/v1"
        rows[0].append(wrk(f"https://127.0.0.1:{w.port}{manifest_path}", host))
        rows[1].append(wrk(f"https://127.0.0.1:{reg_port}{manifest_path}", f"127.0.0.1:{reg_port}"))
        mirror_rps = wrk(f"https://127.0.0.1:{w.port}{manifest_path}", mirror_host)
        # skopeo's defaults on an uncompressed layer: compressed on the fly,
        # sent without a length. A new layer each round (nothing to skip),
        # interleaved. A failed push is counted and its log kept, not retried.
        default_push = {"Wharf": [], "docker-registry 2.8": []}
        failed = {"Wharf": 0, "docker-registry 2.8": 0}
        for i in range(3):
            shutil.rmtree(OUT / "plain-image", ignore_errors=True)
            oci_layout(OUT / "plain-image", "v1", {"big.bin": os.urandom(LAYER_MIB << 20)}, gzipped=False)
            for name, ref in (("docker-registry 2.8", f"127.0.0.1:{reg_port}/bench/plain:v{i}"), ("Wharf", f"{host}:{w.port}/bench/plain:v{i}")):
                creds = ["--dest-creds", f"ci:{token}"] if name == "Wharf" else []
                t = time.perf_counter()
                r = subprocess.run(["skopeo", "--debug", "copy", "--retry-times", "0", "--dest-tls-verify=false", *creds,
                                    f"oci:{OUT / 'plain-image'}:v1", f"docker://{ref}"], capture_output=True, text=True)
                if r.returncode == 0:
                    default_push[name].append(time.perf_counter() - t)
                else:
                    failed[name] += 1
                    (OUT / f"failed-push-{name.split()[0]}-{i}.log").write_text(r.stderr)
        size_mb = len(image["layer"]) / 1e6
        lines = [f"| registry | pull of a {LAYER_MIB} MiB layer (median of {RUNS}) | throughput | manifest GETs/s (wrk, 32 connections) |",
                 "|---|---:|---:|---:|"]
        for name, pull, rps in rows:
            lines.append(f"| {name} | {pull:.2f} s | {size_mb / pull:.0f} MB/s | {rps:,.0f} |")
        lines += ["", f"Wharf / docker-registry: pull time {rows[0][1] / rows[1][1]:.2f}×, manifest GETs/s {rows[0][2] / rows[1][2]:.2f}×. "
                  f"Push of the image with skopeo: Wharf {push_wharf:.2f} s, docker-registry {push_reg:.2f} s. "
                  f"With skopeo's defaults on an uncompressed {LAYER_MIB} MiB layer (compressed on the fly, no length; 3 pushes each; "
                  f"failed: Wharf {failed['Wharf']}, docker-registry {failed['docker-registry 2.8']}): "
                  f"Wharf {', '.join(f'{x:.2f}' for x in default_push['Wharf'])} s, docker-registry {', '.join(f'{x:.2f}' for x in default_push['docker-registry 2.8'])} s "
                  f"(medians {ratio(default_push['Wharf'], default_push['docker-registry 2.8'])}).",
                  "", "| pull through a Wharf mirror of docker-registry | time | throughput | manifest GETs/s |", "|---|---:|---:|---:|",
                  f"| cold (fetched from the upstream, stored in R2 on the way) | {cold:.2f} s | {size_mb / cold:.0f} MB/s | |",
                  f"| warm (median of {RUNS}) | {warm:.2f} s | {size_mb / warm:.0f} MB/s | {mirror_rps:,.0f} |",
                  "", f"Warm pull-through overhead against the same image pushed to Wharf: pull time {warm / rows[0][1]:.2f}×, "
                  f"manifest GETs/s {mirror_rps / rows[0][2]:.2f}×.",
                  "", f"Both over TLS on loopback; Wharf on workerd with local D1/R2 (wrangler dev), this {os.cpu_count()}-core machine."]
        report = "\n".join(lines)
        (OUT / "results.md").write_text(report + "\n")
        print(report)
        if any(failed.values()):
            sys.exit(f"{sum(failed.values())} push(es) failed: their skopeo logs are in {OUT}/failed-push-*.log")
    finally:
        os.killpg(reg.pid, signal.SIGTERM)
        if upstream:
            os.killpg(upstream.pid, signal.SIGTERM)
        w.stop()
        hosts.cleanup()


if __name__ == "__main__":
    main()

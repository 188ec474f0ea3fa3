"""The hot path side by side, in one run: small requests per second against
the runtime's ceiling (a null worker on the same wrangler/workerd), Debian's
docker-registry 2.8 and nginx, on the same content, over loopback, plain HTTP.

Measures, interleaved over rounds (every peer once per round, medians of the
rounds): a 2 KiB file GET (Wharf's data plane, nginx), a manifest GET by tag
and by digest and a 4 KiB blob GET (Wharf's registry, docker-registry), and a
plain "ok" from the null worker; prints the ratios and workerd's resident
memory before and after the load.

Run by hand: `make bench-hot`. Results: bench/out-hot/results.md.
BENCH_WRK_SECONDS (default 5) per measurement, BENCH_ROUNDS (default 3),
BENCH_WRK_CONNECTIONS (default 16).
"""

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
os.environ.setdefault("BENCH_WRK_SECONDS", "5")
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE))
from bench import download_mbps, start_nginx, wrk  # noqa: E402
import bench as bench_module  # noqa: E402
from oci import start_registry  # noqa: E402
from wharf import WRANGLER, Wharf, free_port, stop_process_group, wrangler_env  # noqa: E402

OUT = HERE / "out-hot"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BLOB_MIB = int(os.environ.get("BENCH_HOT_BLOB_MIB", "64"))


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def start_null_worker(root: Path) -> tuple[subprocess.Popen, int]:
    """A worker that answers "ok" and does nothing else, on the same wrangler
    and workerd as Wharf: the most any worker can do here."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.js").write_text('export default { fetch() { return new Response("ok"); } };\n')
    (root / "wrangler.toml").write_text('name = "null"\nmain = "index.js"\ncompatibility_date = "2026-04-20"\n')
    port = free_port()
    p = subprocess.Popen([str(WRANGLER), "dev", "--ip", "127.0.0.1", "--port", str(port), "--inspector-port", str(free_port()),
                          "--log-level", "warn"], cwd=root, env=wrangler_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
    for _ in range(200):
        try:
            if requests.get(f"http://127.0.0.1:{port}/", timeout=1).text == "ok":
                return p, port
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("the null worker did not start")


def workerd_rss_mib(group: int) -> float:
    """Resident memory of the workerd processes in a process group (MiB)."""
    out = subprocess.run(["ps", "-o", "rss=,comm=", "-g", str(group)], capture_output=True, text=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "workerd" in line) / 1024


def push_image(base: str, host: str, name: str, auth: dict) -> tuple[str, str]:
    """Pushes a small image; returns the manifest's and the layer's digests."""
    config, layer = b'{"architecture":"amd64","os":"linux"}', os.urandom(4096)
    for b in (config, layer):
        # POST then PUT with the digest: the form every registry takes.
        r = requests.post(f"{base}/v2/{name}/blobs/uploads/", headers={"Host": host, **auth})
        assert r.status_code == 202, r.text
        u = urllib.parse.urlsplit(r.headers["Location"])
        loc = f"{base}{u.path}" + (f"?{u.query}" if u.query else "")
        r = requests.put(f"{loc}{'&' if '?' in loc else '?'}digest=sha256:{sha(b)}", data=b,
                         headers={"Host": host, "Content-Type": "application/octet-stream", **auth})
        assert r.status_code == 201, r.text
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{sha(config)}", "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{sha(layer)}", "size": len(layer)}]}).encode()
    r = requests.put(f"{base}/v2/{name}/manifests/v1", data=manifest, headers={"Host": host, "Content-Type": OCI_MANIFEST, **auth})
    assert r.status_code == 201, r.text
    return sha(manifest), sha(layer)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    bench_module.OUT = OUT  # start_nginx writes its config there
    files = OUT / "files"
    files.mkdir()
    small = os.urandom(2048)
    (files / "small.bin").write_bytes(small)
    blob = os.urandom(BLOB_MIB << 20)
    (files / "blob.bin").write_bytes(blob)
    blob_sha = sha(blob)

    print("starting the null worker, Wharf, docker-registry and nginx ...", flush=True)
    null, null_port = start_null_worker(OUT / "null")
    w = Wharf(OUT / "state")
    w_off = Wharf(OUT / "state-off", extra_vars={"EDGE_CACHE": "off"})
    (OUT / "registry").mkdir()
    registry, reg_port = start_registry(OUT / "registry", tls=False)
    nginx, nginx_port = start_nginx(files)
    results: dict[str, list[dict]] = {}
    speeds: dict[str, list[float]] = {}
    try:
        a = w.admin
        a.site("bench", "bench.test")
        rel = a.draft("bench")
        a.put("bench", rel, "small.bin", small)
        a.activate("bench", rel)
        for inst in (w, w_off):
            inst.admin.site("blob", "blob.test")
            r = inst.admin.draft("blob")
            inst.admin.put("blob", r, "blob.bin", blob)
            inst.admin.activate("blob", r)
        wurl, rurl = f"http://127.0.0.1:{w.port}", f"http://127.0.0.1:{reg_port}"
        auth = {"Authorization": f"Bearer {w.root_token}"}
        wm, wl = push_image(wurl, "bench.test", "bench/app", auth)
        rm, rl = push_image(rurl, "registry.test", "bench/app", {})
        accept = ["-H", f"Accept: {OCI_MANIFEST}"]
        targets = [
            ("null worker: GET", f"http://127.0.0.1:{null_port}/", "null.test", []),
            ("Wharf: 2 KiB file GET", f"{wurl}/small.bin", "bench.test", []),
            ("nginx: 2 KiB file GET", f"http://127.0.0.1:{nginx_port}/small.bin", "bench.test", []),
            ("Wharf: manifest GET by tag", f"{wurl}/v2/bench/app/manifests/v1", "bench.test", accept),
            ("docker-registry: manifest GET by tag", f"{rurl}/v2/bench/app/manifests/v1", "registry.test", accept),
            ("Wharf: manifest GET by digest", f"{wurl}/v2/bench/app/manifests/sha256:{wm}", "bench.test", accept),
            ("docker-registry: manifest GET by digest", f"{rurl}/v2/bench/app/manifests/sha256:{rm}", "registry.test", accept),
            ("Wharf: 4 KiB blob GET", f"{wurl}/v2/bench/app/blobs/sha256:{wl}", "bench.test", []),
            ("docker-registry: 4 KiB blob GET", f"{rurl}/v2/bench/app/blobs/sha256:{rl}", "registry.test", []),
        ]
        downloads = [
            (f"Wharf: {BLOB_MIB} MiB blob GET, edge cache on", f"{wurl}/blob.bin"),
            (f"Wharf: {BLOB_MIB} MiB blob GET, edge cache off", f"http://127.0.0.1:{w_off.port}/blob.bin"),
            (f"nginx: {BLOB_MIB} MiB file GET", f"http://127.0.0.1:{nginx_port}/blob.bin"),
        ]
        rss_before, null_before = workerd_rss_mib(w.proc.pid), workerd_rss_mib(null.pid)
        for r in range(ROUNDS):
            for name, url, host, extra in targets:
                print(f"round {r + 1}/{ROUNDS}: {name} ...", flush=True)
                results.setdefault(name, []).append(wrk(url, host, extra))
            for name, url in downloads:
                print(f"round {r + 1}/{ROUNDS}: {name} ...", flush=True)
                speeds.setdefault(name, []).append(download_mbps(url, "blob.test", blob_sha, runs=1))
        rss_after, null_after = workerd_rss_mib(w.proc.pid), workerd_rss_mib(null.pid)
    finally:
        w.stop()
        w_off.stop()
        stop_process_group(null)
        stop_process_group(registry)
        nginx.terminate()
        nginx.wait()

    med = {name: {k: statistics.median(x[k] for x in runs) for k in ("rps", "p50", "p99")} for name, runs in results.items()}
    null_rps = med["null worker: GET"]["rps"]
    lines = ["| measure | requests/s | p50 ms | p99 ms | / null worker |", "|---|---:|---:|---:|---:|"]
    for name, _, _, _ in targets:
        m = med[name]
        lines.append(f"| {name} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['rps'] / null_rps:.2f}× |")
    ratios = [
        ("Wharf 2 KiB file / null worker", med["Wharf: 2 KiB file GET"]["rps"] / null_rps),
        ("Wharf manifest by tag / null worker", med["Wharf: manifest GET by tag"]["rps"] / null_rps),
        ("Wharf manifest by tag / docker-registry", med["Wharf: manifest GET by tag"]["rps"] / med["docker-registry: manifest GET by tag"]["rps"]),
        ("Wharf manifest by digest / docker-registry", med["Wharf: manifest GET by digest"]["rps"] / med["docker-registry: manifest GET by digest"]["rps"]),
        ("Wharf 4 KiB blob GET / docker-registry", med["Wharf: 4 KiB blob GET"]["rps"] / med["docker-registry: 4 KiB blob GET"]["rps"]),
        ("Wharf 2 KiB file / nginx", med["Wharf: 2 KiB file GET"]["rps"] / med["nginx: 2 KiB file GET"]["rps"]),
    ]
    lines += ["", "| ratio (requests/s) | value |", "|---|---:|"] + [f"| {n} | {v:.2f}× |" for n, v in ratios]
    lines += ["", f"| {BLOB_MIB} MiB body, one curl per round | MB/s (median) | / nginx |", "|---|---:|---:|"]
    nginx_mbps = statistics.median(speeds[downloads[2][0]])
    for name, _ in downloads:
        v = statistics.median(speeds[name])
        lines.append(f"| {name} | {v:,.0f} | {v / nginx_mbps:.2f}× |")
    lines += ["", f"No blob HEAD row: wrk waits for the body a HEAD answer announces, and ApacheBench stalls on workerd's keep-alive HEAD answers (one request in 5 s), so a small blob GET stands in.", "", f"workerd RSS: Wharf {rss_before:.0f} MiB before the load, {rss_after:.0f} MiB after; the null worker {null_before:.0f} → {null_after:.0f} MiB.",
              "", f"wrk: 2 threads, {bench_module.WRK_CONNECTIONS} connections, {bench_module.WRK_SECONDS} s per measurement; "
              f"{ROUNDS} interleaved rounds, medians; machine: {os.cpu_count()} cores; everything on loopback, plain HTTP."]
    report = "\n".join(lines)
    (OUT / "results.md").write_text(report + "\n")
    print()
    print(report)


if __name__ == "__main__":
    main()

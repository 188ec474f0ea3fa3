"""Wharf vs nginx on the same files, plus release copy-on-write cost at 100,000 paths.

Everything runs on this machine over loopback, in one run, so the ratios compare
like with like. Printed as a Markdown table and saved to bench/out/results.md.
"""

import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
from wharf import Wharf, free_port  # noqa: E402

OUT = HERE / "out"
WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
WRK_CONNECTIONS = int(os.environ.get("BENCH_WRK_CONNECTIONS", "16"))
BIG_MIB = int(os.environ.get("BENCH_BIG_MIB", "256"))
SCALE_PATHS = int(os.environ.get("BENCH_SCALE_PATHS", "100000"))


def wrk(url: str, host: str, extra: list = ()) -> dict:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", "--latency", "-H", f"Host: {host}", *extra, url],
        capture_output=True, text=True, check=True,
    ).stdout

    def ms(label):
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert non2xx is None, f"errors during the run:\n{out}"
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms("50%"), "p99": ms("99%")}


def download_mbps(url: str, host: str, expect_sha: str, runs: int = 3) -> float:
    speeds = []
    for _ in range(runs):
        r = subprocess.run(["curl", "-sS", "-H", f"Host: {host}", "-o", str(OUT / "download.bin"), "-w", "%{speed_download}", url],
                           capture_output=True, text=True, check=True)
        speeds.append(float(r.stdout) / 1e6)
    assert hashlib.sha256((OUT / "download.bin").read_bytes()).hexdigest() == expect_sha
    (OUT / "download.bin").unlink()
    return statistics.median(speeds)


def start_nginx(root: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = OUT / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {OUT}/nginx.pid;
error_log {OUT}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  etag on;
  types {{ application/octet-stream bin; }}
  client_body_temp_path {OUT}/nginx-tmp;
  proxy_temp_path {OUT}/nginx-tmp; fastcgi_temp_path {OUT}/nginx-tmp;
  uwsgi_temp_path {OUT}/nginx-tmp; scgi_temp_path {OUT}/nginx-tmp;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
    (OUT / "nginx-tmp").mkdir(exist_ok=True)
    p = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(OUT)], stderr=subprocess.DEVNULL)
    for _ in range(50):
        try:
            subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{port}/small.bin"], check=True)
            return p, port
        except subprocess.CalledProcessError:
            time.sleep(0.1)
    raise RuntimeError("nginx did not start")


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    files = OUT / "files"
    files.mkdir()
    small = os.urandom(2048)
    (files / "small.bin").write_bytes(small)
    big_path = files / "big.bin"
    with open(big_path, "wb") as f:
        for _ in range(BIG_MIB):
            f.write(os.urandom(1 << 20))
    big_sha = hashlib.sha256(big_path.read_bytes()).hexdigest()

    print("starting Wharf (wrangler dev on workerd, local D1/R2) and nginx ...", flush=True)
    w = Wharf(OUT / "state", extra_vars={"MAX_BLOB_BYTES": str(8 << 30)})
    nginx, nport = start_nginx(files)
    rows = []
    try:
        a = w.admin
        a.site("bench", "bench.test")
        a.site("small-site", "small.test")
        a.site("big-site", "big.test")

        t = time.perf_counter()
        import requests
        with open(big_path, "rb") as f:
            r = requests.put(w.url(f"/api/v1/blobs/sha256/{big_sha}"), data=f,
                             headers={"Host": "admin.wharf.test", "Authorization": f"Bearer {w.root_token}",
                                      "Content-Length": str(big_path.stat().st_size)}, timeout=600)
        r.raise_for_status()
        upload_s = time.perf_counter() - t
        rel = a.draft("bench")
        a.put("bench", rel, "small.bin", small)
        a.call("PUT", f"/sites/bench/releases/{rel}/paths/big.bin", {"sha256": big_sha})
        a.activate("bench", rel)

        wurl, nurl = f"http://127.0.0.1:{w.port}", f"http://127.0.0.1:{nport}"
        print("2 KiB file with wrk ...", flush=True)
        ws, ns = wrk(f"{wurl}/small.bin", "bench.test"), wrk(f"{nurl}/small.bin", "bench.test")
        rows.append(("2 KiB file: requests/s", ws["rps"], ns["rps"]))
        rows.append(("2 KiB file: p50 latency (ms)", ws["p50"], ns["p50"]))
        rows.append(("2 KiB file: p99 latency (ms)", ws["p99"], ns["p99"]))
        print(f"{BIG_MIB} MiB file with curl ...", flush=True)
        wb = download_mbps(f"{wurl}/big.bin", "bench.test", big_sha)
        nb = download_mbps(f"{nurl}/big.bin", "bench.test", big_sha)
        rows.append((f"{BIG_MIB} MiB file: download MB/s", wb, nb))

        # Copy-on-write releases at scale.
        print(f"building a {SCALE_PATHS}-path release ...", flush=True)
        sha_small = hashlib.sha256(small).hexdigest()
        big_rel = a.draft("big-site")
        for start in range(0, SCALE_PATHS, 1000):
            a.call("POST", f"/sites/big-site/releases/{big_rel}/changes",
                   {"put": [{"path": f"files/p/pkg{i:06d}/pkg{i:06d}_1.0_amd64.txt", "sha256": sha_small}
                            for i in range(start, min(start + 1000, SCALE_PATHS))]})
        t = time.perf_counter()
        first = a.activate("big-site", big_rel)
        full_activation_s = time.perf_counter() - t
        assert first["rows_opened"] == SCALE_PATHS
        changed = a.blob(b"one changed package")
        timings, written = [], []
        for _ in range(5):
            t = time.perf_counter()
            d = a.draft("big-site")
            a.call("PUT", f"/sites/big-site/releases/{d}/paths/files/p/pkg050000/pkg050000_1.0_amd64.txt",
                   {"sha256": changed if len(timings) % 2 == 0 else sha_small})
            res = a.activate("big-site", d)
            timings.append(time.perf_counter() - t)
            written.append(res["rows_closed"] + res["rows_opened"])
        small_rel = a.draft("small-site")
        a.call("POST", f"/sites/small-site/releases/{small_rel}/changes",
               {"put": [{"path": f"files/p/pkg{i:06d}/pkg{i:06d}_1.0_amd64.txt", "sha256": sha_small} for i in range(100)]})
        a.activate("small-site", small_rel)

        print("lookup latency: 100,000-path site vs 100-path site ...", flush=True)
        lb = wrk(f"{wurl}/files/p/pkg000042/pkg000042_1.0_amd64.txt", "big.test")
        ls = wrk(f"{wurl}/files/p/pkg000042/pkg000042_1.0_amd64.txt", "small.test")
    finally:
        w.stop()
        nginx.terminate()
        nginx.wait()

    lines = ["| measure | Wharf (workerd, local) | nginx | Wharf / nginx |", "|---|---:|---:|---:|"]
    for name, wv, nv in rows:
        lines.append(f"| {name} | {wv:,.2f} | {nv:,.2f} | {wv / nv:.2f}× |")
    lines += [
        "",
        "| release copy-on-write | value |",
        "|---|---:|",
        f"| upload of the {BIG_MIB} MiB blob (streamed to R2, sha256 checked) | {BIG_MIB * 1.048576 / upload_s:,.1f} MB/s |",
        f"| first activation of {SCALE_PATHS:,} paths | {full_activation_s:.2f} s |",
        f"| release from the {SCALE_PATHS:,}-path parent changing one path: D1 rows written for contents | {statistics.median(written):.0f} |",
        f"| same, create + put + activate over HTTP (median of 5) | {statistics.median(timings) * 1000:.0f} ms |",
        "",
        "| lookup on the same 2 KiB path | 100,000-path site | 100-path site | ratio |",
        "|---|---:|---:|---:|",
        f"| requests/s | {lb['rps']:,.0f} | {ls['rps']:,.0f} | {lb['rps'] / ls['rps']:.2f}× |",
        f"| p50 latency (ms) | {lb['p50']:.2f} | {ls['p50']:.2f} | {lb['p50'] / ls['p50']:.2f}× |",
        f"| p99 latency (ms) | {lb['p99']:.2f} | {ls['p99']:.2f} | {lb['p99'] / ls['p99']:.2f}× |",
        "",
        f"wrk: 2 threads, {WRK_CONNECTIONS} connections, {WRK_SECONDS} s per run; downloads: median of 3 curl runs; "
        f"machine: {os.cpu_count()} cores.",
    ]
    report = "\n".join(lines)
    (OUT / "results.md").write_text(report + "\n")
    print()
    print(report)


if __name__ == "__main__":
    main()

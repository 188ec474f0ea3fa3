"""APK index generation: Wharf publishing signed APKINDEX.tar.gz for 1,000 and
10,000 packages (full generation), and the latency of publishing one added
package into the 10,000-package repository.

No apk-tools (`apk index`, `abuild-sign`) is installable here, so there is no
peer in this run; the figures are Wharf's alone.

Run by hand: `make bench-apk`. Results: bench/out-apk/results.md.
BENCH_APK_SIZES=1000 picks the sizes.
"""

import hashlib
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
from apk import build_apk, check_index, rsa_key  # noqa: E402
from wharf import Wharf  # noqa: E402

OUT = HERE / "out-apk"
SIZES = [int(s) for s in os.environ.get("BENCH_APK_SIZES", "1000,10000").split(",")]
RUNS = 3


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    key, pub = rsa_key(OUT / "key")
    w = Wharf(OUT / "state", extra_vars={"APK_SIGNING_KEY": key.read_text(), "MAX_BLOB_BYTES": str(1 << 30)})
    rows, one_publish = [], None
    try:
        for n in SIZES:
            site = f"apk{n}"
            host = f"{site}.bench.test"
            w.admin.site(site, host)
            w.admin.call("PUT", f"/sites/{site}/apk/settings", {"architectures": ["x86_64"], "key_name": "bench.rsa.pub"})
            rel = w.admin.draft(site)

            def ingest(i, rel_id):
                apk = build_apk(f"bench-pkg{i:05d}", f"1.{i % 7}-r{i % 3}", "noarch" if i % 5 == 0 else "x86_64",
                                ["so:libc.musl-x86_64.so.1"])
                w.admin.call("POST", f"/sites/{site}/releases/{rel_id}/apk/edge/main/packages?sha256={hashlib.sha256(apk).hexdigest()}",
                             data=apk, headers={"Content-Type": "application/octet-stream"})

            t = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: ingest(i, rel), range(n)))
            rate = n / (time.perf_counter() - t)
            full = []
            for _ in range(RUNS):
                t = time.perf_counter()
                res = w.admin.call("POST", f"/sites/{site}/releases/{rel}/apk/edge/main/publish?full=true")
                full.append(time.perf_counter() - t)
                print(n, "full publish phases (ms):", res["timings_ms"], flush=True)
            w.admin.activate(site, rel)
            index = w.get(host, "/edge/main/x86_64/APKINDEX.tar.gz").content
            _, records = check_index(index, pub, "bench.rsa.pub", OUT)
            assert len(records) == n, len(records)
            rows.append((n, statistics.median(full), len(index), rate))
            if n == max(SIZES):
                one = []
                for k in range(RUNS):
                    d = w.admin.draft(site)
                    ingest(n + 1 + k, d)
                    t = time.perf_counter()
                    res = w.admin.call("POST", f"/sites/{site}/releases/{d}/apk/edge/main/publish")
                    w.admin.activate(site, d)
                    one.append(time.perf_counter() - t)
                    print("one-package publish phases (ms):", res["timings_ms"], flush=True)
                one_publish = statistics.median(one)
    finally:
        w.stop()
    lines = ["| packages | Wharf full generation (signed APKINDEX.tar.gz) | index size | Wharf ingest rate |", "|---:|---:|---:|---:|"]
    for n, t, size, rate in rows:
        lines.append(f"| {n:,} | {t:.2f} s | {size / 1024:.0f} KiB | {rate:.0f} packages/s |")
    if one_publish is not None:
        lines += ["", f"Publishing one added package into the {max(SIZES):,}-package repository (publish + activate, median of {RUNS}): "
                  f"{one_publish * 1000:.0f} ms."]
    lines += ["", f"Median of {RUNS} runs each; Wharf on workerd with local D1/R2 (wrangler dev) on this {os.cpu_count()}-core machine. "
              "No apk-tools peer is installable here."]
    report = "\n".join(lines)
    (OUT / "results.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()

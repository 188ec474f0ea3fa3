"""Debian index generation: Wharf against apt-ftparchive and dpkg-scanpackages
on the same generated packages (1,000 and 10,000), plus the latency of
publishing one added package into the 10,000-package repository.

Run by hand: `make bench-debian`. Results: bench/out-debian/results.md.
BENCH_DEB_SIZES=10000 picks the sizes; BENCH_DEB_SCANPACKAGES=0 skips the slow
dpkg-scanpackages column while iterating.
"""

import gzip
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
from debian import Gpg, ar, tar_gz  # noqa: E402
from wharf import Wharf  # noqa: E402

OUT = HERE / "out-debian"
SIZES = [int(s) for s in os.environ.get("BENCH_DEB_SIZES", "1000,10000").split(",")]
RUNS = 3


def make_deb(i: int) -> tuple[str, bytes]:
    name = f"bench-pkg{i:05d}"
    control = (f"Package: {name}\nVersion: 1.{i % 7}-{i % 3 + 1}\nArchitecture: {'all' if i % 5 == 0 else 'amd64'}\n"
               f"Maintainer: Bench <bench@example.com>\nInstalled-Size: {i % 300 + 4}\nDepends: libc6 (>= 2.36)\n"
               f"Section: misc\nPriority: optional\nDescription: benchmark package {i}\n Generated for Wharf's benchmark.\n .\n"
               f" Package number {i} of the set.\n").encode()
    deb = ar([("debian-binary", b"2.0\n"), ("control.tar.gz", tar_gz({"./control": control})),
              ("data.tar.gz", tar_gz({f"./usr/share/doc/{name}/README": f"{name}\n".encode() * 20}))])
    arch = "all" if i % 5 == 0 else "amd64"
    return f"pool/main/b/{name}/{name}_1.{i % 7}-{i % 3 + 1}_{arch}.deb", deb


def timed(cmd: str, cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["bash", "-c", cmd], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    key = Gpg(OUT / "gnupg").generate("Bench Archive <bench@example.com>")
    w = Wharf(OUT / "state", extra_vars={"DEB_SIGNING_KEY": key.secret_armored(), "MAX_BLOB_BYTES": str(1 << 30)})
    rows = []
    try:
        for n in SIZES:
            repo = OUT / f"repo-{n}"
            debs = [make_deb(i) for i in range(n)]
            for path, data in debs:
                (repo / path).parent.mkdir(parents=True, exist_ok=True)
                (repo / path).write_bytes(data)
            (repo / "dists/stable/main/binary-amd64").mkdir(parents=True)
            def ftparchive(options: str) -> float:
                # Same outputs as Wharf: Packages (+ gzip -6, xz -0, Wharf's presets), Release, InRelease, Release.gpg.
                return statistics.median(timed(
                    f"apt-ftparchive {options} packages pool > dists/stable/main/binary-amd64/Packages && "
                    "gzip -6nk -f dists/stable/main/binary-amd64/Packages && xz -0k -f dists/stable/main/binary-amd64/Packages && "
                    "apt-ftparchive -o APT::FTPArchive::Release::Origin=bench release dists/stable > dists/stable/Release && "
                    f"GNUPGHOME={OUT}/gnupg gpg --batch --yes --clearsign -o dists/stable/InRelease dists/stable/Release && "
                    f"GNUPGHOME={OUT}/gnupg gpg --batch --yes -abs -o dists/stable/Release.gpg dists/stable/Release", repo)
                    for _ in range(RUNS))

            ftp = ftparchive("")  # its defaults: MD5sum, SHA1, SHA256 and SHA512 per package
            ftp_same = ftparchive("-o APT::FTPArchive::Packages::MD5=false -o APT::FTPArchive::Packages::SHA1=false "
                                  "-o APT::FTPArchive::Packages::SHA512=false")  # SHA256 only, as Wharf writes
            scan = float("nan") if os.environ.get("BENCH_DEB_SCANPACKAGES") == "0" else statistics.median(timed("dpkg-scanpackages -m pool /dev/null > /tmp/wharf-scan-Packages 2>/dev/null", repo)
                                     for _ in range(RUNS))

            site = f"deb{n}"
            w.admin.site(site, f"{site}.bench.test")
            rel = w.admin.draft(site)

            def ingest(item):
                path, data = item
                sha = hashlib.sha256(data).hexdigest()
                w.admin.call("POST", f"/sites/{site}/releases/{rel}/deb/stable/main/packages?sha256={sha}", data=data,
                             headers={"Content-Type": "application/vnd.debian.binary-package"})

            t = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(ingest, debs))
            ingest_rate = n / (time.perf_counter() - t)
            full = []
            for _ in range(RUNS):
                t = time.perf_counter()
                res = w.admin.call("POST", f"/sites/{site}/releases/{rel}/deb/stable/publish?full=true")
                full.append(time.perf_counter() - t)
                print(n, "full publish phases (ms):", res["timings_ms"], flush=True)
            wharf_full = statistics.median(full)
            w.admin.activate(site, rel)
            rows.append((n, wharf_full, ftp, ftp_same, scan, ingest_rate))

            if n == max(SIZES):
                one = []
                for k in range(RUNS):
                    d = w.admin.draft(site)
                    path, data = make_deb(n + 1 + k)
                    ingest_item = (path, data)
                    rel = d
                    ingest(ingest_item)
                    t = time.perf_counter()
                    res = w.admin.call("POST", f"/sites/{site}/releases/{d}/deb/stable/publish")
                    w.admin.activate(site, d)
                    one.append(time.perf_counter() - t)
                    assert res["regenerated"] == ["main/binary-amd64"], res
                    print("one-package publish phases (ms):", res["timings_ms"], flush=True)
                one_publish = statistics.median(one)
                # sanity: apt-visible result
                assert w.get(f"{site}.bench.test", "/dists/stable/InRelease").status_code == 200
    finally:
        w.stop()

    lines = ["| packages | Wharf full generation (signed) | apt-ftparchive, default fields | apt-ftparchive, SHA256 only (Wharf's fields) "
             "| dpkg-scanpackages (Packages only) | apt-ftparchive default / Wharf | apt-ftparchive SHA256-only / Wharf | Wharf ingest rate |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, wf, ftp, same, scan, rate in rows:
        lines.append(f"| {n:,} | {wf:.2f} s | {ftp:.2f} s | {same:.2f} s | {scan:.2f} s | {ftp / wf:.2f}× | {same / wf:.2f}× | {rate:.0f} packages/s |")
    lines += ["", f"Publishing one added package into the {max(SIZES):,}-package repository (publish + activate, median of {RUNS}): "
              f"{one_publish * 1000:.0f} ms.", "",
              f"Median of {RUNS} runs each; Wharf runs on workerd with local D1/R2 (wrangler dev) on this {os.cpu_count()}-core machine."]
    report = "\n".join(lines)
    (OUT / "results.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()

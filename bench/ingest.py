"""First import of a Debian repository, end to end from .deb files on disk:
Wharf's batch ingest (one request carrying every package, then publish and
activate) against aptly (repo add + publish) and reprepro (includedeb, which
publishes as it goes), and Wharf's one-upload-per-package path with 8
clients, in one run on the same generated packages (1,000 and 10,000).

Run by hand: `make bench-ingest`. Results: bench/out-ingest/results.md.
BENCH_INGEST_SIZES picks the sizes (default 1000,10000); the one-by-one
column runs at 1,000 only (10,000 takes minutes).
"""

import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
from debian import Gpg  # noqa: E402
from wharf import ROOT, Wharf  # noqa: E402


from benchlib import bench_module  # noqa: E402

make_deb = bench_module("debian").make_deb  # the same generated packages as bench-debian

OUT = HERE / "out-ingest"
SIZES = [int(s) for s in os.environ.get("BENCH_INGEST_SIZES", "1000,10000").split(",")]
ROUNDS = 3


def run(cmd: str, cwd: Path, env: dict | None = None):
    r = subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def tar_stream(files: list[Path]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for f in files:
            t.add(str(f), arcname=f.name)
    return out.getvalue()


def publish(w: Wharf, site: str, rel: int):
    """Publishes the draft's dist; again when wrangler dev's proxy answered
    503 "restarted mid-request" without reaching the worker (publishing a
    draft again is harmless). Counted in the time."""
    from wharf import ApiError
    for attempt in range(3):
        try:
            return w.admin.call("POST", f"/sites/{site}/releases/{rel}/deb/stable/publish")
        except ApiError as e:
            if "restarted mid-request" not in str(e) or attempt == 2:
                raise
            print("publish: wrangler's proxy answered 503; again", flush=True)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    key = Gpg(OUT / "gnupg").generate("Bench Archive <bench@example.com>")
    w = Wharf(OUT / "state", extra_vars={"DEB_SIGNING_KEY": key.secret_armored(), "MAX_BLOB_BYTES": str(1 << 30),
                                         "ADMIN_HOSTNAMES": "admin.wharf.test,127.0.0.1"})
    cli_env = {**{k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}, "WHARF_URL": f"http://127.0.0.1:{w.port}",
               "WHARF_TOKEN": w.root_token, "WHARF_CONFIG": str(OUT / "cli.toml")}
    rows = []
    try:
        for n in SIZES:
            debs_dir = OUT / f"debs-{n}"
            debs_dir.mkdir()
            files = []
            for i in range(n):
                path, data = make_deb(i)
                f = debs_dir / path.rsplit("/", 1)[1]
                f.write_bytes(data)
                files.append(f)
            times = {"wharf": [], "cli": [], "aptly": [], "reprepro": [], "one": []}
            for r in range(ROUNDS):
                # Wharf: the files on disk become one tar stream, one request, publish, activate.
                site = f"ingest-{n}-{r}"
                w.admin.site(site, f"{site}.bench.test")
                t = time.perf_counter()
                rel = w.admin.draft(site)
                body = tar_stream(files)
                t_tar = time.perf_counter()
                added = w.admin.call("POST", f"/sites/{site}/releases/{rel}/deb/stable/main/packages/batch", data=body,
                                     headers={"Content-Type": "application/x-tar"})["added"]
                t_batch = time.perf_counter()
                publish(w, site, rel)
                t_pub = time.perf_counter()
                w.admin.activate(site, rel)
                times["wharf"].append(time.perf_counter() - t)
                print(f"wharf phases: tar {t_tar - t:.2f} s, batch {t_batch - t_tar:.2f} s, publish {t_pub - t_batch:.2f} s, "
                      f"activate {time.perf_counter() - t_pub:.2f} s", flush=True)
                assert added == n
                # The CLI, as a publisher runs it: `wharf deb add` of the files into a fresh site.
                site = f"cli-{n}-{r}"
                w.admin.site(site, f"{site}.bench.test")
                t = time.perf_counter()
                subprocess.run([str(ROOT / "target/release/wharf"), "--quiet", "deb", "add", "--site", site, "--dist", "stable", *map(str, files)],
                               env=cli_env, check=True, capture_output=True)
                times["cli"].append(time.perf_counter() - t)
                # aptly: repo create, add the directory, publish (unsigned: signing is milliseconds).
                root = OUT / f"aptly-{n}-{r}"
                conf = OUT / f"aptly-{n}-{r}.conf"
                conf.write_text(f'{{"rootDir": "{root}", "architectures": ["amd64", "all"]}}')
                t = time.perf_counter()
                run(f"aptly -config={conf} repo create -distribution=stable -component=main bench && "
                    f"aptly -config={conf} repo add bench {debs_dir} && "
                    f"aptly -config={conf} publish repo -skip-signing -architectures=amd64,all bench", OUT)
                times["aptly"].append(time.perf_counter() - t)
                # reprepro: includedeb of every file (it writes the indexes as it goes); .gz only, its default.
                repo = OUT / f"reprepro-{n}-{r}"
                (repo / "conf").mkdir(parents=True)
                (repo / "conf/distributions").write_text("Codename: stable\nComponents: main\nArchitectures: amd64\n")
                t = time.perf_counter()
                run(f"reprepro -b {repo} includedeb stable {debs_dir}/*.deb", OUT)
                times["reprepro"].append(time.perf_counter() - t)
                if n == min(SIZES):
                    site = f"one-{n}-{r}"
                    w.admin.site(site, f"{site}.bench.test")
                    t = time.perf_counter()
                    rel = w.admin.draft(site)

                    def one(f: Path):
                        data = f.read_bytes()
                        w.admin.call("POST", f"/sites/{site}/releases/{rel}/deb/stable/main/packages?sha256={hashlib.sha256(data).hexdigest()}",
                                     data=data, headers={"Content-Type": "application/vnd.debian.binary-package"})

                    with ThreadPoolExecutor(8) as pool:
                        list(pool.map(one, files))
                    publish(w, site, rel)
                    w.admin.activate(site, rel)
                    times["one"].append(time.perf_counter() - t)
                print(n, {k: [round(x, 2) for x in v] for k, v in times.items()}, flush=True)
            rows.append((n, {k: statistics.median(v) if v else None for k, v in times.items()}))
    finally:
        w.stop()
    med = lambda v: f"{v:.2f} s" if v else "–"  # noqa: E731
    lines = ["| packages | Wharf batch (1 request + publish + activate) | `wharf deb add` (CLI) | aptly 1.5 (repo add + publish) "
             "| reprepro 5.3 (includedeb) | Wharf one upload per package (8 clients) | Wharf / aptly | CLI / aptly | Wharf / reprepro |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, m in rows:
        lines.append(f"| {n:,} | {med(m['wharf'])} | {med(m['cli'])} | {med(m['aptly'])} | {med(m['reprepro'])} | {med(m['one'])} "
                     f"| {m['wharf'] / m['aptly']:.2f}× | {m['cli'] / m['aptly']:.2f}× | {m['wharf'] / m['reprepro']:.2f}× |")
    lines += ["", f"Medians of {ROUNDS} interleaved rounds, each into a fresh repository, from the same generated .deb files on disk "
              "(Wharf's time includes making the tar stream); aptly and reprepro publish unsigned, Wharf signs (InRelease, Release.gpg); "
              f"Wharf on workerd with local D1/R2 (wrangler dev), this {os.cpu_count()}-core machine."]
    report = "\n".join(lines)
    (OUT / "results.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()

"""Publishing one package into a 10,000-package repository, end to end, with
the peers beside Wharf in one run: reprepro (includedeb; .gz only, its
default, and with .xz added), aptly (repo add + publish update) and
apt-ftparchive (a full regeneration of Packages, .gz, .xz and the Release,
SHA256 only, as Wharf writes), on the same generated packages; and Wharf's
own full regeneration of the same dist. For APK (no apk-tools here) Wharf's
one-package publication and full regeneration, absolute.

Wharf's figure is what a publisher waits for: create a draft, upload the
package, activate (activation publishes what changed), three requests; the
batch published in one request; the same with the dist serving .gz only
(what reprepro's default gives apt); and `wharf deb add` (the CLI, release
build: hashing, asking what the site holds, the one request).

Run by hand: `make bench-publish`. Results: bench/out-publish/results.md.
BENCH_PUBLISH_N picks the repository size (default 10000).
"""

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
from apk import build_apk, check_index, rsa_key  # noqa: E402
from debian import Gpg  # noqa: E402
from wharf import ROOT, Wharf, tar_of  # noqa: E402


from benchlib import bench_module  # noqa: E402

make_deb = bench_module("debian").make_deb  # the packages of bench-debian and bench-ingest

OUT = HERE / "out-publish"
N = int(os.environ.get("BENCH_PUBLISH_N", "10000"))
ROUNDS = 5


def run(cmd: str, cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


def retrying(f):
    """wrangler dev's proxy now and then answers 503 "restarted mid-request"
    without reaching the worker; the call is made again (counted)."""
    from wharf import ApiError
    for attempt in range(3):
        try:
            return f()
        except ApiError as e:
            if "restarted mid-request" not in str(e) or attempt == 2:
                raise


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    gpg = Gpg(OUT / "gnupg")
    key = gpg.generate("Bench Archive <bench@example.com>")
    apk_key, apk_pub = rsa_key(OUT / "apk-key")
    w = Wharf(OUT / "state", extra_vars={"DEB_SIGNING_KEY": key.secret_armored(), "APK_SIGNING_KEY": apk_key.read_text(),
                                         "MAX_BLOB_BYTES": str(1 << 30), "ADMIN_HOSTNAMES": "admin.wharf.test,127.0.0.1"})
    cli_env = {**{k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}, "WHARF_URL": f"http://127.0.0.1:{w.port}",
               "WHARF_TOKEN": w.root_token, "WHARF_CONFIG": str(OUT / "cli.toml")}
    times: dict[str, list[float]] = {k: [] for k in ["wharf", "wharf_one", "wharf_one_gz", "cli_one", "wharf_full", "reprepro", "reprepro_xz", "aptly",
                                                     "ftparchive", "apk", "apk_one", "apk_full"]}
    phases = []
    try:
        debs_dir = OUT / "debs"
        debs_dir.mkdir()
        debs = {}
        for i in range(N + 3 * ROUNDS):
            path, data = make_deb(i)
            debs[i] = (path.rsplit("/", 1)[1], data)
            (debs_dir / debs[i][0]).write_bytes(data)
        base = [debs_dir / debs[i][0] for i in range(N)]

        # The repositories of N packages, each tool its own way.
        print(f"setting up {N:,}-package repositories", flush=True)
        w.admin.site("deb", "deb.bench.test")
        rel = w.admin.draft("deb")
        retrying(lambda: w.admin.call("POST", f"/sites/deb/releases/{rel}/deb/stable/main/packages/batch",
                                      data=tar_of({debs[i][0]: debs[i][1] for i in range(N)}), headers={"Content-Type": "application/x-tar"}))
        w.admin.activate("deb", rel)
        # The same packages in a dist that serves .gz only.
        w.admin.site("debgz", "debgz.bench.test")
        w.admin.call("PUT", "/sites/debgz/deb/dists/stable", {"compressions": ["gz"]})
        retrying(lambda: w.admin.call("POST", "/sites/debgz/deb/stable/main/packages/batch",
                                      data=tar_of({debs[i][0]: debs[i][1] for i in range(N)}), headers={"Content-Type": "application/x-tar"}))
        list_file = OUT / "base.list"
        list_file.write_text("\n".join(str(f) for f in base))
        reprepro = {}
        for name, extra in [("reprepro", ""), ("reprepro_xz", "DebIndices: Packages Release . .gz .xz\n")]:
            repo = OUT / name
            (repo / "conf").mkdir(parents=True)
            (repo / "conf/distributions").write_text(f"Codename: stable\nComponents: main\nArchitectures: amd64\n{extra}")
            run(f"xargs -a {list_file} reprepro -b {repo} includedeb stable", OUT)
            reprepro[name] = repo
        conf = OUT / "aptly.conf"
        conf.write_text(f'{{"rootDir": "{OUT / "aptly"}", "architectures": ["amd64", "all"]}}')
        run(f"aptly -config={conf} repo create -distribution=stable -component=main bench && "
            f"xargs -a {list_file} aptly -config={conf} repo add bench && "
            f"aptly -config={conf} publish repo -skip-signing -architectures=amd64,all bench", OUT)
        ftp = OUT / "ftparchive"
        (ftp / "pool").mkdir(parents=True)
        (ftp / "dists/stable/main/binary-amd64").mkdir(parents=True)
        for f in base:
            os.link(f, ftp / "pool" / f.name)
        # APK: N packages, one batch.
        w.admin.site("apk", "apk.bench.test")
        w.admin.call("PUT", "/sites/apk/apk/settings", {"architectures": ["x86_64"], "key_name": "bench.rsa.pub"})
        apks = {f"a{i}.apk": build_apk(f"bench-pkg{i:05d}", f"1.{i % 7}-r{i % 3}", "noarch" if i % 5 == 0 else "x86_64",
                                       ["so:libc.musl-x86_64.so.1"]) for i in range(N + 2 * ROUNDS)}
        rel = w.admin.draft("apk")
        retrying(lambda: w.admin.call("POST", f"/sites/apk/releases/{rel}/apk/edge/main/packages/batch",
                                      data=tar_of({f"a{i}.apk": apks[f"a{i}.apk"] for i in range(N)}), headers={"Content-Type": "application/x-tar"}))
        retrying(lambda: w.admin.activate("apk", rel))

        print("rounds", flush=True)
        for r in range(ROUNDS):
            k = N + r
            name, data = debs[k]
            sha = hashlib.sha256(data).hexdigest()
            # Wharf: draft, upload, activate (which publishes the change).
            t = time.perf_counter()
            d = w.admin.draft("deb")
            w.admin.call("POST", f"/sites/deb/releases/{d}/deb/stable/main/packages?sha256={sha}", data=data,
                         headers={"Content-Type": "application/vnd.debian.binary-package"})
            retrying(lambda: w.admin.activate("deb", d))
            times["wharf"].append(time.perf_counter() - t)
            # Wharf in one request: the batch route without a release (draft, batch, activate inside).
            one_name, one_data = debs[N + ROUNDS + r]
            t = time.perf_counter()
            retrying(lambda: w.admin.call("POST", "/sites/deb/deb/stable/main/packages/batch", data=tar_of({one_name: one_data}),
                                          headers={"Content-Type": "application/x-tar"}))
            times["wharf_one"].append(time.perf_counter() - t)
            # The same into the .gz-only dist (the package of the three-request round: another site).
            t = time.perf_counter()
            retrying(lambda: w.admin.call("POST", "/sites/debgz/deb/stable/main/packages/batch", data=tar_of({name: data}),
                                          headers={"Content-Type": "application/x-tar"}))
            times["wharf_one_gz"].append(time.perf_counter() - t)
            # The CLI: `wharf deb add` of one file.
            cli_name, _ = debs[N + 2 * ROUNDS + r]
            t = time.perf_counter()
            subprocess.run([str(ROOT / "target/release/wharf"), "--quiet", "deb", "add", "--site", "deb", "--dist", "stable", str(debs_dir / cli_name)],
                           env=cli_env, check=True, capture_output=True)
            times["cli_one"].append(time.perf_counter() - t)
            # Wharf's full regeneration of the same dist, for reference (a draft published whole, then dropped).
            d = w.admin.draft("deb")
            t = time.perf_counter()
            res = retrying(lambda: w.admin.call("POST", f"/sites/deb/releases/{d}/deb/stable/publish?full=true"))
            times["wharf_full"].append(time.perf_counter() - t)
            w.admin.call("DELETE", f"/sites/deb/releases/{d}", expect=204)
            phases.append(res["timings_ms"])
            # reprepro, both ways.
            for tool in ["reprepro", "reprepro_xz"]:
                times[tool].append(run(f"reprepro -b {reprepro[tool]} includedeb stable {debs_dir / name}", OUT))
            # aptly: add, publish the change.
            times["aptly"].append(run(f"aptly -config={conf} repo add bench {debs_dir / name} && "
                                      f"aptly -config={conf} publish update -skip-signing stable", OUT))
            # apt-ftparchive: everything again (it has no incremental mode without a cache database; see below).
            os.link(debs_dir / name, ftp / "pool" / name)
            times["ftparchive"].append(run(
                "apt-ftparchive -o APT::FTPArchive::Packages::MD5=false -o APT::FTPArchive::Packages::SHA1=false "
                "-o APT::FTPArchive::Packages::SHA512=false packages pool > dists/stable/main/binary-amd64/Packages && "
                "gzip -6nk -f dists/stable/main/binary-amd64/Packages && xz -0k -f dists/stable/main/binary-amd64/Packages && "
                "apt-ftparchive -o APT::FTPArchive::Release::Origin=bench release dists/stable > dists/stable/Release && "
                f"GNUPGHOME={OUT}/gnupg gpg --batch --yes --clearsign -o dists/stable/InRelease dists/stable/Release", ftp))
            # APK: draft, upload, activate; and a full regeneration.
            apk = apks[f"a{k}.apk"]
            t = time.perf_counter()
            d = w.admin.draft("apk")
            w.admin.call("POST", f"/sites/apk/releases/{d}/apk/edge/main/packages?sha256={hashlib.sha256(apk).hexdigest()}", data=apk,
                         headers={"Content-Type": "application/octet-stream"})
            retrying(lambda: w.admin.activate("apk", d))
            times["apk"].append(time.perf_counter() - t)
            t = time.perf_counter()
            retrying(lambda: w.admin.call("POST", "/sites/apk/apk/edge/main/packages/batch", data=tar_of({"one.apk": apks[f"a{N + ROUNDS + r}.apk"]}),
                                          headers={"Content-Type": "application/x-tar"}))
            times["apk_one"].append(time.perf_counter() - t)
            d = w.admin.draft("apk")
            t = time.perf_counter()
            retrying(lambda: w.admin.call("POST", f"/sites/apk/releases/{d}/apk/edge/main/publish?full=true"))
            times["apk_full"].append(time.perf_counter() - t)
            w.admin.call("DELETE", f"/sites/apk/releases/{d}", expect=204)
            print(r, {k: round(v[-1] * 1000) for k, v in times.items()}, flush=True)

        # What clients see is right: every package, the last one too.
        import lzma
        text = lzma.decompress(w.get("deb.bench.test", "/dists/stable/main/binary-amd64/Packages.xz").content).decode()
        assert text.count("Package: ") == N + 3 * ROUNDS, text.count("Package: ")
        _, records = check_index(w.get("apk.bench.test", "/edge/main/x86_64/APKINDEX.tar.gz").content, apk_pub, "bench.rsa.pub", OUT)
        assert len(records) == N + 2 * ROUNDS
    finally:
        w.stop()

    m = {k: statistics.median(v) for k, v in times.items()}
    ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
    lines = [
        f"| One package into {N:,} (Debian) | time | Wharf / peer |",
        "|---|---:|---:|",
        f"| **Wharf** (draft + upload + activate; .xz and .gz, signed) | **{ms(m['wharf'])}** | |",
        f"| **Wharf in one request** (`POST …/deb/stable/main/packages/batch`) | **{ms(m['wharf_one'])}** | |",
        f"| **Wharf in one request, .gz only** (`compressions: [\"gz\"]`: the index reprepro's default gives apt) | **{ms(m['wharf_one_gz'])}** | |",
        f"| **`wharf deb add`** (the CLI: hashing, what the site holds, one request) | **{ms(m['cli_one'])}** | |",
        f"| reprepro 5.3 includedeb (plain + .gz, its default; unsigned) | {ms(m['reprepro'])} | {m['wharf'] / m['reprepro']:.2f}× "
        f"(one request: {m['wharf_one'] / m['reprepro']:.2f}×; .gz only: {m['wharf_one_gz'] / m['reprepro']:.2f}×; "
        f"CLI: {m['cli_one'] / m['reprepro']:.2f}×) |",
        f"| reprepro includedeb (plain + .gz + .xz) | {ms(m['reprepro_xz'])} | {m['wharf'] / m['reprepro_xz']:.2f}× |",
        f"| aptly 1.5 repo add + publish update (unsigned) | {ms(m['aptly'])} | {m['wharf'] / m['aptly']:.2f}× |",
        f"| apt-ftparchive, full regeneration (SHA256 only, .gz, .xz, signed) | {ms(m['ftparchive'])} | {m['wharf'] / m['ftparchive']:.2f}× |",
        f"| Wharf, full regeneration of the same dist (publish ?full=true) | {ms(m['wharf_full'])} | {m['wharf'] / m['wharf_full']:.2f}× |",
        "",
        f"| One package into {N:,} (APK) | time |",
        "|---|---:|",
        f"| Wharf (draft + upload + activate; signed APKINDEX) | {ms(m['apk'])} |",
        f"| Wharf in one request (`POST …/apk/edge/main/packages/batch`) | {ms(m['apk_one'])} |",
        f"| Wharf, full regeneration (publish ?full=true) | {ms(m['apk_full'])} |",
        "",
        f"Medians of {ROUNDS} interleaved rounds, one package added per round, this {os.cpu_count()}-core machine; Wharf on workerd "
        "with local D1/R2 (wrangler dev), each figure from the publisher's side (HTTP requests included). Phases of Wharf's full "
        f"regeneration (ms, last round): {phases[-1]}.",
    ]
    report = "\n".join(lines)
    (OUT / "results.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()

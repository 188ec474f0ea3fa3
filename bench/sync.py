"""The declared mirror's runs against the CI-job way of doing the same
(`skopeo copy` per version from the source into the site's registry), in one
run, with Debian's docker-registry on loopback as the source:

1. warm: 20 declared versions of which 19 are on the site already (the
   20th is new at the source): the run's time and the requests the source
   saw, against `skopeo copy --preserve-digests` of the 20 tags (what a CI
   job that does not check first does);
2. cold: a multi-platform image of BENCH_SYNC_MIB MiB (two platforms, one
   uncompressed layer each; default 256) copied by a run, against `skopeo
   copy --all --preserve-digests` from the same source to another repository
   of the same site.

Run by hand: `make bench-sync`. Results: bench/out-sync/results.md.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
from debian import Hosts  # noqa: E402
from test_oci import oci_layout, oci_multi_arch_layout, sha  # noqa: E402
from upstream import Upstream  # noqa: E402
from wharf import Wharf  # noqa: E402

OUT = HERE / "out-sync"
MIB = int(os.environ.get("BENCH_SYNC_MIB", "256"))
ROUNDS = 3


def run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def seen(up: Upstream) -> dict:
    """Requests the source logged so far, by method and kind."""
    out = {}
    for line in (up.root / "registry.log").read_text(errors="replace").splitlines():
        if "response completed" not in line:
            continue
        method = line.split("http.request.method=")[1].split()[0]
        uri = line.split("http.request.uri=")[1].split()[0].strip('"')
        kind = "blob" if "/blobs/" in uri else "manifest" if "/manifests/" in uri else "other"
        out[(method, kind)] = out.get((method, kind), 0) + 1
    return out


def delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def fmt(d: dict) -> str:
    return ", ".join(f"{n} {m} {k}" for (m, k), n in sorted(d.items())) or "none"


def wait_run(w: Wharf, site: str, run: int) -> dict:
    while True:
        r = w.admin.call("GET", f"/sites/{site}/mirror/runs/{run}")
        if r["state"] in ("done", "failed"):
            return r
        time.sleep(0.05)


def timed_run(w: Wharf, site: str, config: str) -> tuple[float, dict]:
    t = time.perf_counter()
    run_id = w.admin.call("PUT", f"/sites/{site}/mirror/config", data=config.encode())["run"]
    r = wait_run(w, site, run_id)
    return time.perf_counter() - t, r


def multi_platform(root: Path, mib: int) -> dict:
    """An index of two platforms, each one uncompressed layer of mib/2 MiB."""
    return oci_multi_arch_layout(root, "v", files=lambda arch: {"big.bin": os.urandom((mib << 20) // 2)}, gzipped=False)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    hosts = Hosts()
    up = Upstream(OUT / "source")
    w = Wharf(OUT / "state", https=True, extra_vars={"MAX_BLOB_BYTES": str(4 << 30)})
    try:
        host = hosts.add("bench-sync.wharf.test")
        w.admin.site("sync", host)
        token = w.admin.make_token("publish", "sync").token
        reg = f"{host}:{w.port}"
        src = up.address

        # 1. Warm: 19 of 20 versions present.
        small = oci_layout(OUT / "small", "v", {"f": b"x"})
        versions = [f"1.{i}" for i in range(19 + ROUNDS)]
        for v in versions[:19]:
            run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{OUT / 'small'}:v", f"docker://{src}/warm/app:{v}")
        def config(vs, extra=""):
            return f"images:\n  - {{name: warm/app, versions: {json.dumps(vs)}, source_registry: '{src}', platforms: [linux/amd64]}}\n{extra}"
        first = timed_run(w, "sync", config(versions[:19]))[1]
        assert first["counts"] == {"copied": 19}, first
        warm_wharf, warm_skopeo, req_wharf, req_skopeo = [], [], [], []
        for r in range(ROUNDS):
            new = versions[19 + r]
            layout = OUT / f"new-{r}"
            oci_layout(layout, "v", {"f": os.urandom(64)})
            run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:v", f"docker://{src}/warm/app:{new}")
            # The 19 newest present ones and the new one.
            present = [v for v in versions[:19 + r]][-19:]
            declared = [*present, new]
            before = seen(up)
            t, result = timed_run(w, "sync", config(declared))
            assert result["counts"] == {"skipped": 19, "copied": 1}, result
            warm_wharf.append(t)
            req_wharf.append(delta(seen(up), before))
            # The CI-job way: skopeo copy of each of the 20 tags into the site's registry.
            before = seen(up)
            t = time.perf_counter()
            for v in declared:
                run("skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds", f"ci:{token}",
                    f"docker://{src}/warm/app:{v}", f"docker://{reg}/ci/app:{v}")
            warm_skopeo.append(time.perf_counter() - t)
            req_skopeo.append(delta(seen(up), before))

        # 2. Cold: a multi-platform image, a new one each round, interleaved.
        cold_wharf, cold_skopeo = [], []
        for r in range(ROUNDS):
            shutil.rmtree(OUT / "multi", ignore_errors=True)
            multi = multi_platform(OUT / "multi", MIB)
            run("skopeo", "copy", "--all", "--dest-tls-verify=false", f"oci:{OUT / 'multi'}:v", f"docker://{src}/cold/app:{r}")
            t, result = timed_run(w, "sync", f"images:\n  - {{name: cold/app, versions: ['{r}'], source_registry: '{src}', target: cold/app-{r}}}\n")
            assert result["counts"] == {"copied": 1}, result
            cold_wharf.append(t)
            t = time.perf_counter()
            run("skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds", f"ci:{token}",
                f"docker://{src}/cold/app:{r}", f"docker://{reg}/ci/cold-{r}:{r}")
            cold_skopeo.append(time.perf_counter() - t)
            raw = lambda ref: run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout  # noqa: E731
            assert raw(f"{reg}/cold/app-{r}:{r}") == raw(f"{src}/cold/app:{r}"), "the run copied the source's index as it is"
            assert len(json.loads(multi["index"])["manifests"]) == 2

        med = statistics.median
        lines = [
            f"| {ROUNDS} rounds, interleaved | Wharf run | skopeo copy per tag (CI job) | ratio |", "|---|---:|---:|---:|",
            f"| 20 versions, 19 present: time (median) | {med(warm_wharf):.2f} s | {med(warm_skopeo):.2f} s | {med(warm_wharf) / med(warm_skopeo):.2f}× |",
            f"| requests the source saw (one round) | {fmt(req_wharf[-1])} | {fmt(req_skopeo[-1])} | |",
            f"| cold {MIB} MiB two-platform image: time (median) | {med(cold_wharf):.2f} s | {med(cold_skopeo):.2f} s | {med(cold_wharf) / med(cold_skopeo):.2f}× |",
            "", f"Each time: Wharf {', '.join(f'{x:.2f}' for x in warm_wharf)} / {', '.join(f'{x:.2f}' for x in cold_wharf)} s; "
            f"skopeo {', '.join(f'{x:.2f}' for x in warm_skopeo)} / {', '.join(f'{x:.2f}' for x in cold_skopeo)} s. "
            "A run's time is from storing the configuration to the run's release being active (polled every 50 ms); "
            "skopeo's copies go to the same Wharf site's registry (HTTPS, a publish token), from the same source.",
            "", f"Source: docker-registry 2.8 on loopback (plain HTTP); Wharf on workerd with local D1/R2/Queues (wrangler dev), this {os.cpu_count()}-core machine.",
        ]
        report = "\n".join(lines)
        (OUT / "results.md").write_text(report + "\n")
        print(report)
    finally:
        w.stop()
        up.stop()
        hosts.cleanup()


if __name__ == "__main__":
    main()

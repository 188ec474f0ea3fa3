"""Starts the real Wharf worker on workerd (wrangler dev) with fresh local D1 and R2."""

import hashlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests
import urllib3

# The HTTPS test instance uses wrangler's self-signed certificate.
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

ROOT = Path(__file__).resolve().parents[2]
WRANGLER = ROOT / "node_modules" / ".bin" / "wrangler"
ADMIN_HOST = "admin.wharf.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Stops a server started with start_new_session=True, and its children."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wrangler_env() -> dict:
    env = dict(os.environ)
    env.update({"WRANGLER_SEND_METRICS": "false", "CI": "true", "NO_COLOR": "1",
                # No devtools inspector behind the worker: wrangler dev always
                # attaches one (there is no flag to turn it off; this variable,
                # which VS Code's debugger sets, is the only switch wrangler
                # reads) and forwards every event of it to its Node process as
                # one HTTP request, including a Network.dataReceived per 4 KiB
                # a subrequest receives, and keeps them all while no devtools
                # is attached. A cold 64 MiB pull through the mirror held
                # 7,000-16,000 sockets and took 10-29 s with it, 17 and 2 s
                # without. Tests and benchmarks measure the worker, not that.
                "VSCODE_INSPECTOR_OPTIONS": "{}",
                # No fetch of the `Request.cf` object from Cloudflare (this
                # machine has no internet): without it miniflare tried, gave
                # up, and set the runtime up again with a placeholder, and a
                # request landing then got wrangler's 503 "worker restarted
                # mid-request" (a CI run failed on one).
                "CLOUDFLARE_CF_FETCH_ENABLED": "false"})
    return env


def apply_schema(state: Path, schema: Path = ROOT / "schema.sql") -> None:
    subprocess.run(
        [str(WRANGLER), "d1", "execute", "wharf", "--local", "--persist-to", str(state), "--file", str(schema)],
        cwd=ROOT, env=wrangler_env(), check=True, capture_output=True,
    )


class Wharf:
    """One running worker. `state` is its private D1/R2 folder."""

    def __init__(self, state: Path, schema: Path | None = ROOT / "schema.sql", extra_vars: dict | None = None,
                 https: bool = False, env_file: Path | None = None, test_scheduled: bool = False):
        """`https`: serve over TLS with wrangler's self-signed certificate (registry
        clients such as skopeo try TLS first even with --tls-verify=false).
        `env_file`: a dotenv file of variables, as `make dev` keeps in .dev.vars
        (by default an empty one, so a developer's .dev.vars never leaks in)."""
        self.state = state
        self.scheme = "https" if https else "http"
        self.port = free_port()
        self.root_token = "root-" + secrets.token_hex(16)
        if schema is not None:
            apply_schema(state, schema)
        vars_ = {"ADMIN_HOSTNAMES": ADMIN_HOST, "ADMIN_TOKEN": self.root_token}
        vars_.update(extra_vars or {})
        cmd = [str(WRANGLER), "dev", "--persist-to", str(state), "--ip", "127.0.0.1", "--port", str(self.port),
               "--inspector-port", str(free_port()), "--log-level", "warn", "--local-protocol", self.scheme]
        if test_scheduled:
            cmd.append("--test-scheduled")  # GET /__scheduled fires the Cron Trigger's handler
        if env_file is None:
            env_file = state / "empty.env"
            env_file.write_text("")
        cmd += ["--env-file", str(env_file)]
        for k, v in vars_.items():
            cmd += ["--var", f"{k}:{v}"]
        self.log = open(state / "wrangler.log", "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=wrangler_env(), stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while True:
            try:
                r = requests.get(self.url("/api/v1/health"), headers={"Host": ADMIN_HOST}, timeout=2, verify=False)
                if r.status_code in (200, 503):
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("wrangler dev did not start:\n" + (state / "wrangler.log").read_text(errors="replace")[-4000:])
            time.sleep(0.3)
        self.admin = Admin(self, self.root_token)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def get(self, host: str, path: str, **kw) -> requests.Response:
        headers = {"Host": host, **kw.pop("headers", {})}
        return requests.request(kw.pop("method", "GET"), self.url(path), headers=headers, timeout=60, verify=False, **kw)

    def raw(self, method: str, host: str, path: str, headers: dict | None = None):
        """Sends the path exactly as given (no client-side normalisation)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", host)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, dict(r.getheaders()), body

    def wait_log(self, text: str, timeout: float = 30) -> str:
        """The first line of the worker's log (its console) containing `text`,
        once it is there: tests wait for the event, not for a fixed time."""
        deadline = time.time() + timeout
        while True:
            for line in (self.state / "wrangler.log").read_text(errors="replace").splitlines():
                if text in line:
                    return line
            if time.time() > deadline:
                raise AssertionError(f"the worker never logged {text!r}")
            time.sleep(0.1)

    def r2_multipart_left(self, prefix: str) -> list[str]:
        """Keys under `prefix` of multipart uploads local R2 still holds open
        or holds parts of (an aborted upload keeps neither)."""
        import glob
        import sqlite3
        keys = []
        for db in glob.glob(str(self.state / "v3/r2/miniflare-R2BucketObject/*.sqlite")):
            if db.endswith("/metadata.sqlite"):
                continue
            c = sqlite3.connect(db, timeout=10)
            try:
                keys += [k for (k,) in c.execute(
                    "SELECT key FROM _mf_multipart_uploads u WHERE substr(key, 1, ?) = ? AND (state = 0 OR EXISTS "
                    "(SELECT 1 FROM _mf_multipart_parts p WHERE p.upload_id = u.upload_id))", (len(prefix), prefix))]
            finally:
                c.close()
        return keys

    def r2_keys(self, prefix: str) -> list[str]:
        """The keys local R2 holds under `prefix`, read from its own metadata
        (what the worker deleted is gone from here, whatever it answers)."""
        import glob
        import sqlite3
        keys = []
        for db in glob.glob(str(self.state / "v3/r2/miniflare-R2BucketObject/*.sqlite")):
            if db.endswith("/metadata.sqlite"):
                continue
            c = sqlite3.connect(db, timeout=10)
            try:
                keys += [k for (k,) in c.execute("SELECT key FROM _mf_objects WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))]
            finally:
                c.close()
        return sorted(keys)

    def r2_forget(self, key: str) -> int:
        """Makes local R2 forget an object behind the worker's back (its
        metadata row goes; R2 then answers as if it never held it)."""
        import glob
        import sqlite3
        n = 0
        for db in glob.glob(str(self.state / "v3/r2/miniflare-R2BucketObject/*.sqlite")):
            if db.endswith("/metadata.sqlite"):
                continue
            c = sqlite3.connect(db, timeout=10)
            try:
                n += c.execute("DELETE FROM _mf_objects WHERE key = ?", (key,)).rowcount
                c.commit()
            finally:
                c.close()
        return n

    def d1_write(self, sql: str, params: tuple = ()) -> int:
        """Changes local D1 behind the worker's back, as another isolate (or
        another region's) change would reach it: the worker learns of it only
        by reading D1. Returns the rows changed."""
        import glob
        import sqlite3
        dbs = [d for d in glob.glob(str(self.state / "v3/d1/miniflare-D1DatabaseObject/*.sqlite")) if not d.endswith("/metadata.sqlite")]
        assert len(dbs) == 1, dbs
        c = sqlite3.connect(dbs[0], timeout=10)
        try:
            n = c.execute(sql, params).rowcount
            c.commit()
            return n
        finally:
            c.close()

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.log.close()


class ApiError(Exception):
    def __init__(self, r: requests.Response):
        self.status = r.status_code
        try:
            self.body = r.json()
        except ValueError:
            self.body = r.text
        super().__init__(f"{r.request.method} {r.request.url} -> {r.status_code} {self.body}")


class Admin:
    """A client of the admin API with one bearer token."""

    def __init__(self, wharf: Wharf, token: str):
        self.wharf, self.token = wharf, token

    def with_token(self, token: str) -> "Admin":
        return Admin(self.wharf, token)

    def call(self, method: str, path: str, body=None, data=None, expect=None, headers=None):
        h = {"Host": ADMIN_HOST, "Authorization": f"Bearer {self.token}", **(headers or {})}
        kw = {}
        if body is not None:
            kw["data"] = json.dumps(body)
            h["Content-Type"] = "application/json"
        if data is not None:
            kw["data"] = data
        r = requests.request(method, self.wharf.url("/api/v1" + path), headers=h, timeout=300, verify=False, **kw)
        if expect is not None:
            assert r.status_code == expect, f"{method} {path}: expected {expect}, got {r.status_code} {r.text}"
            if r.status_code >= 400:
                body = r.json()
                assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
        elif r.status_code >= 400:
            raise ApiError(r)
        return r.json() if r.content else None

    # Conveniences for the common flow.
    def site(self, name: str, *hostnames: str):
        self.call("POST", "/sites", {"name": name})
        for h in hostnames:
            self.call("PUT", f"/sites/{name}/hostnames/{h}")

    def blob(self, content: bytes) -> str:
        sha = hashlib.sha256(content).hexdigest()
        self.call("PUT", f"/blobs/sha256/{sha}", data=content)
        return sha

    def draft(self, site: str, **body) -> int:
        return self.call("POST", f"/sites/{site}/releases", body)["id"]

    def put(self, site: str, rel: int, path: str, content: bytes, content_type: str | None = None):
        sha = self.blob(content)
        body = {"sha256": sha}
        if content_type:
            body["content_type"] = content_type
        return self.call("PUT", f"/sites/{site}/releases/{rel}/paths/{path}", body)

    def activate(self, site: str, rel: int, **body):
        return self.call("POST", f"/sites/{site}/releases/{rel}/activate", body)

    def publish(self, site: str, files: dict[str, bytes]) -> int:
        rel = self.draft(site)
        for p, c in files.items():
            self.put(site, rel, p, c)
        self.activate(site, rel)
        return rel

    def make_token(self, scope: str, site: str | None = None, **extra) -> "Admin":
        body = {"name": f"{scope}-{site}", "scope": scope, **extra}
        if site:
            body["site"] = site
        return self.with_token(self.call("POST", "/tokens", body)["token"])


def started(tmp: Path, **kw) -> Wharf:
    tmp.mkdir(parents=True, exist_ok=True)
    return Wharf(tmp, **kw)


def tar_of(files: dict[str, bytes], claim: bool = False) -> bytes:
    """A tar stream of the files, as batch ingest takes it (with `WHARF.sha256`
    pax records when `claim`)."""
    import hashlib
    import io
    import tarfile
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            if claim:
                info.pax_headers = {"WHARF.sha256": hashlib.sha256(data).hexdigest()}
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


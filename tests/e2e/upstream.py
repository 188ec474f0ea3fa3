"""A real upstream registry for the mirror tests: Debian's docker-registry
(distribution 2.8) on loopback, plain HTTP, optionally behind the Docker token
flow with a small token server here (RS256 JWTs whose x5c chain is the
registry's trusted root, as distribution verifies them)."""

import base64
import json
import os
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests
from wharf import free_port, stop_process_group

SERVICE = "upstream-test"
ISSUER = "wharf-test-token-issuer"


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients (workerd) expect; every answer has a length

    def log_message(self, *a):
        pass

    def reply(self, status, headers, body=b""):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class LoopbackServer:
    """A small HTTP server of the tests on a free loopback port, in a thread."""

    def serve(self, handler):
        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        if getattr(self, "httpd", None):
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class TokenServer(LoopbackServer):
    """The Docker token endpoint: Basic credentials in, a signed token out."""

    def __init__(self, root: Path, user: str, password: str):
        self.root, self.requests = root, 0
        self.scopes: Counter[str] = Counter()  # tokens given, per scope
        self.expires_in = 300
        key, cert = root / "token-key.pem", root / "token-cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=wharf-test-tokens",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True, capture_output=True).stdout
        self.key, self.cert = key, cert
        expected = basic(user, password)
        server = self

        class Handler(QuietHandler):
            def do_GET(self):
                server.requests += 1
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                q = parse_qs(urlparse(self.path).query)
                access = []
                server.scopes.update(q.get("scope", [""]))
                for scope in q.get("scope", []):
                    kind, name, actions = scope.split(":")
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
                now = int(time.time())
                header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
                claims = {"iss": ISSUER, "sub": user, "aud": q.get("service", [""])[0], "exp": now + 300, "nbf": now - 10,
                          "iat": now, "jti": os.urandom(8).hex(), "access": access}
                expires_in = server.expires_in
                signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
                sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=signing_input.encode(),
                                     check=True, capture_output=True).stdout
                body = json.dumps({"token": f"{signing_input}.{b64url(sig)}", "expires_in": expires_in}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.serve(Handler)

    @property
    def realm(self) -> str:
        return f"{self.url}/token"


class Upstream:
    """docker-registry serving `root/data`; stop() and start() keep its port and content."""

    def __init__(self, root: Path, token: TokenServer | None = None):
        self.root, self.token, self.port = root, token, free_port()
        root.mkdir(parents=True, exist_ok=True)
        auth = ""
        if token:
            auth = (f"auth: {{token: {{realm: {token.realm}, service: {SERVICE}, issuer: {ISSUER}, "
                    f"rootcertbundle: {token.cert}}}}}\n")
        (root / "config.yml").write_text(f"""version: 0.1
log: {{level: info, formatter: text}}
storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}
http: {{addr: 127.0.0.1:{self.port}}}
{auth}""")
        self.proc = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self):
        self.log = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.root / "config.yml")], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(100):
            try:
                requests.get(f"{self.url}/v2/", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("docker-registry did not start: " + (self.root / "registry.log").read_text()[-2000:])

    def stop(self):
        if self.proc:
            stop_process_group(self.proc)
        self.log.close()

    def blob_file(self, hex_digest: str) -> Path:
        return self.root / "data/docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"

    def requests_seen(self, method: str, path_part: str) -> int:
        """How many `method` requests for a URI containing `path_part` the registry logged."""
        n = 0
        for line in (self.root / "registry.log").read_text(errors="replace").splitlines():
            if "response completed" in line and f"http.request.method={method}" in line and path_part in line:
                n += 1
        return n


class RedirectingFront(LoopbackServer):
    """An upstream the way Docker Hub and ghcr.io serve blobs: the registry API
    behind Basic credentials, blob GETs answered with a redirect to a storage
    URL (here /storage/<hex> on the same server, reading the registry's files)
    that records whether a request brought an Authorization header."""

    def __init__(self, upstream: Upstream, user: str, password: str):
        self.storage_requests, self.storage_with_authorization = 0, 0
        expected = basic(user, password)
        front = self

        class Handler(QuietHandler):
            def handle_any(self):
                if self.path.startswith("/storage/"):
                    front.storage_requests += 1
                    if self.headers.get("Authorization"):
                        front.storage_with_authorization += 1
                    data = upstream.blob_file(self.path.rsplit("/", 1)[1]).read_bytes()
                    return self.reply(200, {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}, data)
                if self.headers.get("Authorization") != expected:
                    return self.reply(401, {"WWW-Authenticate": 'Basic realm="front"', "Content-Length": "0"})
                parts = self.path.split("/")
                if self.command == "GET" and len(parts) > 3 and parts[-2] == "blobs" and parts[-1].startswith("sha256:"):
                    return self.reply(307, {"Location": f"/storage/{parts[-1][7:]}", "Content-Length": "0"})
                r = requests.request(self.command, upstream.url + self.path, headers={"Accept": self.headers.get("Accept", "*/*")},
                                     timeout=30)
                keep = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "docker-content-digest", "link")}
                keep["Content-Length"] = r.headers.get("Content-Length", str(len(r.content)))
                self.reply(r.status_code, keep, r.content)

            do_GET = do_HEAD = handle_any

        self.serve(Handler)


class Front(LoopbackServer):
    """A server of the tests in front of an open Upstream, passing registry
    requests through unless told to misbehave, and counting what it was asked
    (`seen[(method, path)]`):

    - `status`: answer every registry request with this status (503, 429),
      with `Retry-After: retry_after`; only the next `status_times` requests
      when that is set;
    - `tamper`: manifests come with a byte appended (the upstream's
      `Docker-Content-Digest` left as it was);
    - `strip_digest`: manifests come without `Docker-Content-Digest`;
    - `hold`: `(hex, n, event)`: a GET of that blob sends its first `n` bytes,
      then waits for `event` before it sends the rest."""

    def __init__(self, upstream: Upstream):
        self.status: int | None = None
        self.retry_after, self.status_times = "60", None
        self.times: list[tuple[float, str, str, int]] = []  # (when, method, path, status answered)
        self.tamper = self.strip_digest = False
        self.hold: tuple[str, int, threading.Event] | None = None
        self.seen: Counter[tuple[str, str]] = Counter()
        front = self

        class Handler(QuietHandler):
            def handle_any(self):
                front.seen[(self.command, self.path)] += 1
                if front.status and self.path != "/v2/" and front.status_times != 0:
                    if front.status_times:
                        front.status_times -= 1
                    front.times.append((time.time(), self.command, self.path, front.status))
                    body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "front says so"}]}).encode()
                    return self.reply(front.status, {"Content-Type": "application/json", "Content-Length": str(len(body)),
                                                     "Retry-After": front.retry_after}, body)
                front.times.append((time.time(), self.command, self.path, 0))
                r = requests.request(self.command, upstream.url + self.path, headers={"Accept": self.headers.get("Accept", "*/*")},
                                     timeout=30, stream=True)
                keep = {k: v for k, v in r.headers.items()
                        if k.lower() in ("content-type", "docker-content-digest", "link", "content-length", "www-authenticate")}
                manifest = "/manifests/" in self.path
                body = r.raw.read() if self.command != "HEAD" else b""
                if manifest and front.tamper:
                    body += b"\n"
                    if "Content-Length" in keep:
                        keep["Content-Length"] = str(int(keep["Content-Length"]) + 1)
                if manifest and front.strip_digest:
                    keep.pop("Docker-Content-Digest", None)
                if self.command == "HEAD" or "Content-Length" not in keep:
                    keep["Content-Length"] = keep.get("Content-Length", str(len(body)))
                hold = front.hold
                if hold and self.command == "GET" and self.path.endswith(f"/blobs/sha256:{hold[0]}"):
                    self.reply(r.status_code, keep, body[:hold[1]])
                    self.wfile.flush()
                    hold[2].wait(60)
                    self.wfile.write(body[hold[1]:])
                    return
                self.reply(r.status_code, keep, body)

            do_GET = do_HEAD = handle_any

        self.serve(Handler)

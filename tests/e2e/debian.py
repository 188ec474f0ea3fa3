"""Helpers for Debian tests: gpg keys, dpkg-deb packages, a private apt, /etc/hosts."""

import hashlib
import os
import subprocess
from pathlib import Path

HOSTS = Path("/etc/hosts")
MARK = "# wharf-test"


class Hosts:
    """Maps test hostnames to 127.0.0.1 in /etc/hosts; removes its lines afterwards."""

    def __init__(self):
        self.mark = f"{MARK} {os.getpid()}"
        self.names = []

    def add(self, name: str) -> str:
        with open(HOSTS, "a") as f:
            f.write(f"127.0.0.1 {name} {self.mark}\n")
        self.names.append(name)
        return name

    def cleanup(self):
        lines = HOSTS.read_text().splitlines(keepends=True)
        HOSTS.write_text("".join(l for l in lines if not l.rstrip().endswith(self.mark)))


class Gpg:
    def __init__(self, home: Path):
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)

    def run(self, *args, input: bytes | None = None) -> bytes:
        r = subprocess.run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "", *args],
                           env={**os.environ, "GNUPGHOME": str(self.home)}, input=input, capture_output=True)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout

    def __del__(self):
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ, "GNUPGHOME": str(self.home)}, capture_output=True)

    def generate(self, uid: str, algo: str = "ed25519") -> "Gpg":
        self.run("--quick-gen-key", uid, algo, "sign", "never")
        return self

    def secret_armored(self) -> str:
        return self.run("--armor", "--export-secret-keys").decode()

    def public(self, armor: bool = False) -> bytes:
        return self.run(*(["--armor"] if armor else []), "--export")


def build_deb(workdir: Path, package: str, version: str, arch: str, compression: str, extra: str = "") -> bytes:
    root = workdir / f"{package}-{version}-{arch}-{compression}"
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "usr/share/doc" / package).mkdir(parents=True, exist_ok=True)
    (root / "usr/share/doc" / package / "README").write_text(f"{package} {version} {os.urandom(8).hex()}\n")
    (root / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: Wharf Tests <tests@example.com>\n"
        f"Section: misc\nPriority: optional\n{extra}Description: test package {package}\n a package made by the Wharf tests.\n"
    )
    out = workdir / f"{package}_{version}_{arch}.{compression}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(out)],
                   check=True, capture_output=True)
    return out.read_bytes()


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of the files (fixed owner and time)."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ar(members: list[tuple[str, bytes]]) -> bytes:
    """An ar archive, as a .deb is."""
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{1700000000:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data
        if len(data) % 2:
            out += b"\n"
    return bytes(out)


def quick_deb(package: str, version: str, arch: str, control_extra: str = "", payload: bytes = b"") -> bytes:
    """A .deb made in memory (no dpkg-deb): for tests that need hundreds."""
    control = (f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: Wharf Tests <tests@example.com>\n"
               f"Section: misc\nPriority: optional\n{control_extra}Description: test package {package}\n made in memory.\n").encode()
    return ar([("debian-binary", b"2.0\n"), ("control.tar.gz", tar_gz({"./control": control})),
               ("data.tar.gz", tar_gz({f"./usr/share/doc/{package}/README": payload or f"{package} {version}\n".encode()}))])


class Apt:
    """apt-get with its own configuration, lists, cache and keyring: nothing on the host changes."""

    def __init__(self, root: Path):
        self.root = root
        for d in ["etc/sources.list.d", "etc/apt.conf.d", "etc/preferences.d", "etc/trusted.gpg.d",
                  "state/lists/partial", "cache/archives/partial", "downloads"]:
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "status").write_text("")
        (root / "apt.conf").write_text(f"""
Dir::Etc "{root}/etc";
Dir::Etc::main "apt.conf";
Dir::Etc::Parts "apt.conf.d";
Dir::Etc::SourceList "sources.list";
Dir::Etc::SourceParts "sources.list.d";
Dir::Etc::Preferences "preferences";
Dir::Etc::PreferencesParts "preferences.d";
Dir::Etc::Trusted "{root}/etc/trusted.gpg";
Dir::Etc::TrustedParts "{root}/etc/trusted.gpg.d";
Dir::State "{root}/state";
Dir::State::status "{root}/status";
Dir::Cache "{root}/cache";
Debug::NoLocking "true";
APT::Sandbox::User "root";
APT::Architecture "amd64";
APT::Architectures {{ "amd64"; }};
Acquire::Languages "none";
Acquire::http::Proxy "DIRECT";
""")

    def sources(self, line: str):
        (self.root / "etc/sources.list").write_text(line + "\n")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["apt-get", "-q", *args], env={**os.environ, "APT_CONFIG": str(self.root / "apt.conf")},
                           cwd=self.root / "downloads", capture_output=True, text=True)
        if check:
            assert r.returncode == 0, f"apt-get {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
        return r

    def cache(self, *args: str) -> str:
        r = subprocess.run(["apt-cache", *args], env={**os.environ, "APT_CONFIG": str(self.root / "apt.conf")},
                           capture_output=True, text=True, check=True)
        return r.stdout

    def candidate(self, package: str) -> str:
        for line in self.cache("policy", package).splitlines():
            if "Candidate:" in line:
                return line.split(":", 1)[1].strip()
        return ""


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class StagingProxy:
    """An HTTP proxy for apt in front of Wharf that logs every request apt makes
    (method, path, status) and can run a step right after it has fetched an
    InRelease and before apt gets it: a release switch staged between apt's
    InRelease and index fetches."""

    def __init__(self, upstream_port: int):
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        self.log, self.after_inrelease = [], None
        self.hide: tuple[str, ...] = ()  # paths ending so are answered 404, as by a mirror without them
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urlsplit(self.path)
                path = u.path + (f"?{u.query}" if u.query else "")
                if outer.hide and u.path.endswith(outer.hide):
                    outer.log.append((self.command, u.path, 404))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                c = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-") and k.lower() != "host"}
                headers["Host"] = u.netloc
                c.request(self.command, path, headers=headers)
                r = c.getresponse()
                body = r.read()
                c.close()
                outer.log.append((self.command, u.path, r.status))
                if u.path.endswith("/InRelease") and outer.after_inrelease:
                    step, outer.after_inrelease = outer.after_inrelease, None
                    step()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def option(self) -> tuple[str, str]:
        """apt-get options that send its HTTP requests through this proxy."""
        return "-o", f"Acquire::http::Proxy=http://127.0.0.1:{self.port}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def packages_text(wharf, host: str, dist: str = "stable", component: str = "main", arch: str = "amd64") -> str:
    """The Packages index a site serves, as apt reads it: from Packages.xz
    (the uncompressed Packages is listed in the Release, not served)."""
    import lzma
    r = wharf.get(host, f"/dists/{dist}/{component}/binary-{arch}/Packages.xz")
    assert r.status_code == 200, r.status_code
    return lzma.decompress(r.content).decode()


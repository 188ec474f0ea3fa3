"""The README's recipes, run as written (extracted from README.md, not copied)."""

import re
import subprocess

import pytest
from wharf import ROOT, Wharf

README = (ROOT / "README.md").read_text()


def block_after(heading: str) -> str:
    """The first ```sh block after a heading of the README."""
    at = README.index(heading)
    m = re.compile(r"```sh\n(.*?)```", re.S).search(README, at)
    assert m, f"no sh block after {heading!r}"
    return m.group(1)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A worker as `make dev` runs it: the admin API on localhost."""
    w = Wharf(tmp_path_factory.mktemp("readme-state"), extra_vars={"ADMIN_HOSTNAMES": "localhost,127.0.0.1,admin.wharf.test"})
    yield w
    w.stop()


def test_using_it_locally_runs_as_pasted(local, tmp_path):
    script = block_after("## Using it locally").replace("<token>", local.root_token).replace(":8787", f":{local.port}")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("hello from wharf"), r.stdout
    # Pasted again into the same worker it fails loudly, with the server's message, not silently.
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and '"error"' in r.stdout, r.stdout + r.stderr


def test_an_empty_draft_is_not_activated_by_mistake(local):
    admin = local.admin
    admin.site("empty-draft")
    rel = admin.draft("empty-draft")
    err = admin.call("POST", f"/sites/empty-draft/releases/{rel}/activate", {}, expect=422)
    assert err["error"]["code"] == "empty_release"
    assert admin.call("POST", f"/sites/empty-draft/releases/{rel}/activate?allow_empty=true", {})["state"] == "active"


def test_make_dev_prints_the_readme_block():
    """`make dev` prints the block through scripts/readme-block: the same text."""
    out = subprocess.run([str(ROOT / "scripts/readme-block"), "## Using it locally"], capture_output=True, text=True, check=True).stdout
    assert out == block_after("## Using it locally")
    assert 'readme-block" "## Using it locally"' in (ROOT / "scripts/dev").read_text()

"""The image's contents without Docker: the Dockerfile's COPY lines, laid out in a folder.

The folder gets exactly what the Dockerfile copies into its WORKDIR (minus what
.dockerignore leaves out); the app then runs from that folder alone, with the installed
dependencies (the image's `pip install .`) but not the project's own editable install: a
file the Dockerfile forgets is missing here as it would be in the image.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from django.db import connection

from tests.deploy.test_production_settings import HOST, production_env

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: PurePosixPath  # absolute, in the image


def dockerfile_copies(text: str) -> tuple[PurePosixPath, list[Copy]]:
    """(final WORKDIR, COPY instructions from the build context) of a Dockerfile."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    workdir = PurePosixPath("/")
    copies = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "WORKDIR":
            workdir = workdir / rest.strip()
        elif instruction in {"COPY", "ADD"}:
            args = shlex.split(rest)
            if any(a.startswith("--from") for a in args):
                continue  # another stage's files, not the build context
            args = [a for a in args if not a.startswith("--")]
            *sources, dest = args
            copies.append(Copy(tuple(sources), workdir / dest))
    return workdir, copies


def _ignored(relative: PurePosixPath, patterns: list[str]) -> bool:
    text = relative.as_posix()
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in relative.parts):
                return True
        elif fnmatch.fnmatch(text, pattern) or fnmatch.fnmatch(relative.parts[0], pattern):
            return True
    return False


def image_tree(target: Path) -> Path:
    """Lay out in `target` what the Dockerfile copies into its WORKDIR; returns that dir."""
    workdir, copies = dockerfile_copies(DOCKERFILE.read_text())
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignore(directory: str, names: list[str]) -> set[str]:
        base = PurePosixPath(Path(directory).relative_to(REPO_ROOT).as_posix())
        return {n for n in names if _ignored(base / n, patterns)}

    for copy in copies:
        dest = target / copy.dest.relative_to("/")
        for source in copy.sources:
            src = REPO_ROOT / source
            assert not _ignored(PurePosixPath(source), patterns), f"{source} is dockerignored"
            if src.is_dir():
                shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True)
            else:
                into = (
                    dest / src.name
                    if copy.dest.as_posix().endswith("/") or len(copy.sources) > 1
                    else dest
                )
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, into)
    return target / workdir.relative_to("/")


# Runs from the image folder only: the project's editable install is switched off, so a
# module missing from the image cannot be found in the repository instead.
PRELUDE = """
import os, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
repo = os.path.realpath({repo!r})
sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != repo]
sys.path.insert(0, os.getcwd())
"""
MANAGE = (
    PRELUDE
    + """
import runpy
sys.argv = ["manage.py", *sys.argv[1:]]
runpy.run_path("manage.py", run_name="__main__")
"""
)
RENDER = (
    PRELUDE
    + """
import json
import django
django.setup()
import chefs, config, syncer
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import RequestFactory
from syncer.ops.views import sync_dashboard

here = os.getcwd()
for module in (config, chefs, syncer):
    assert module.__file__.startswith(here), module.__file__

def render(view, path):
    request = RequestFactory().get(path, secure=True, HTTP_HOST={host!r})
    request.user = User(username="ops", is_staff=True, is_superuser=True, is_active=True)
    response = view(request)
    response.render()
    return {{"status": response.status_code, "html": response.content.decode()}}

print(json.dumps({{
    "template_dirs": [str(d) for d in settings.TEMPLATES[0]["DIRS"]],
    "index": render(admin.site.index, "/admin/"),
    "dashboard": render(admin.site.admin_view(sync_dashboard), "/admin/sync/"),
}}))
"""
)


def run_in_image(app_dir: Path, code: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code.format(repo=str(REPO_ROOT), host=HOST), *args],
        cwd=app_dir,
        env={**env, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory) -> Path:
    return image_tree(tmp_path_factory.mktemp("image"))


def test_dockerfile_copies_are_parsed():
    workdir, copies = dockerfile_copies(DOCKERFILE.read_text())
    assert workdir == PurePosixPath("/app")
    copied = {s for c in copies for s in c.sources}
    # Sanity of the parser: the dependency layer and the code layer are both seen.
    assert {"pyproject.toml", "manage.py", "config", "syncer"} <= copied


def test_image_has_no_tests_deploy_or_local_state(app_dir):
    names = {p.name for p in app_dir.iterdir()}
    assert "manage.py" in names
    assert not names & {"tests", "deploy", ".venv", ".git", "bench"}, names
    assert not list(app_dir.rglob("__pycache__"))


def test_check_deploy_passes_from_the_image_alone(app_dir):
    result = run_in_image(
        app_dir, MANAGE, "check", "--deploy", "--fail-level", "WARNING", env=production_env()
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.django_db
def test_admin_index_links_the_sync_dashboard_from_the_image_alone(app_dir, aws):
    db = connection.settings_dict  # the test database: migrated, empty
    env = production_env(
        DATABASE_URL=f"mysql://root@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/{db['NAME']}",
        AWS_ENDPOINT_URL=aws_endpoint(),
        AWS_S3_CUSTOM_DOMAIN="d111.cloudfront.net",
    )
    result = run_in_image(app_dir, RENDER, env=env)
    assert result.returncode == 0, result.stderr
    pages = json.loads(result.stdout.splitlines()[-1])
    assert all(d.startswith(str(app_dir)) for d in pages["template_dirs"])
    index, dashboard = pages["index"], pages["dashboard"]
    assert index["status"] == 200
    assert "Sync dashboard" in index["html"]
    assert 'href="/admin/sync/"' in index["html"]
    assert dashboard["status"] == 200
    assert 'id="sync-chart"' in dashboard["html"]
    assert "Sync dashboard" in dashboard["html"]


def aws_endpoint() -> str:
    from django.conf import settings

    return settings.AWS_ENDPOINT_URL


def _docker_unavailable() -> str:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on this machine"
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        return "Docker daemon not reachable: " + (info.stderr.strip().splitlines() or ["?"])[-1]
    return ""


def test_docker_build_where_docker_runs(tmp_path):
    reason = _docker_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"backsync-test:{tmp_path.name.lower()}"
    build = subprocess.run(
        ["docker", "build", "--platform", "linux/amd64", "-t", tag, str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        listing = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "ls", tag, "/app", "/app/syncer/templates"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listing.returncode == 0, listing.stderr
        assert "syncer" in listing.stdout and "manage.py" in listing.stdout
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)

"""Build the stream handler's Lambda asset from the project's own code.

The Lambda runs exactly the modules the local relay calls (`syncer/stream_handler.py` and
the change format it imports, `syncer/changes.py`), copied into `deploy/build/lambda/`
with the `syncer` package layout kept, so the handler is `syncer.stream_handler.handler`.
`syncer/__init__.py` is replaced by an empty file: the Lambda has no Django.

Third-party dependencies are listed in `requirements.txt` next to the code. They are
installed into the asset with pip (manylinux wheels for the Lambda's Python) only when
asked: synthesis in tests and CI stays offline; a real deploy asks for them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HANDLER = "syncer.stream_handler.handler"
HANDLER_MODULES = ("stream_handler.py", "changes.py")
# What the handler imports besides the standard library (boto3 is in the runtime, but the
# pinned one is packaged so that local and Lambda behaviour match).
REQUIREMENTS = ("aws-lambda-powertools>=3.0,<4", "celery[sqs]>=5.5,<6", "boto3>=1.34,<2")
LAMBDA_PYTHON_VERSION = "3.12"
PLACEHOLDER = '''"""Placeholder written at synth time: syncer/stream_handler.py was not found."""


def handler(event, context):
    raise RuntimeError("backsync stream handler was not packaged")
'''


class LambdaAssetError(RuntimeError):
    pass


def build_lambda_asset(*, repo_root: Path, out_dir: Path, install_deps: bool = False) -> Path:
    """(Re)create `out_dir` with the handler code and, optionally, its dependencies."""
    src = repo_root / "syncer"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    pkg = out_dir / "syncer"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name in HANDLER_MODULES:
        source = src / name
        if source.is_file():
            shutil.copy2(source, pkg / name)
        elif name == "stream_handler.py":
            # The handler may not exist yet on a branch; synth must still work (tests), and
            # the placeholder fails loudly if it is ever deployed.
            (pkg / name).write_text(PLACEHOLDER)
        else:
            raise LambdaAssetError(f"missing {source}: the Lambda asset needs it")
    requirements = out_dir / "requirements.txt"
    requirements.write_text("\n".join(REQUIREMENTS) + "\n")
    if install_deps:
        _pip_install(requirements, out_dir)
    return out_dir


def _pip_install(requirements: Path, target: Path) -> None:
    # Binary wheels for the Lambda platform: no Docker, and no C build on this machine.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--requirement",
        str(requirements),
        "--target",
        str(target),
        "--platform",
        "manylinux2014_x86_64",
        "--implementation",
        "cp",
        "--python-version",
        LAMBDA_PYTHON_VERSION,
        "--only-binary=:all:",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise LambdaAssetError(
            "pip could not install the Lambda dependencies (network needed); synthesise "
            "with -c lambdaDeps=none to skip them.\n" + result.stderr
        )

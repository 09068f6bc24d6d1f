"""Build the stream handler's Lambda asset from the project's own code.

The Lambda runs exactly the package the local relay calls, `syncer/pipeline/stream/` (the
handler and the change contract it shares with the worker), copied into
`deploy/build/lambda/` with its package path kept, so the handler is
`syncer.pipeline.stream.handler.handler`. The parent packages' `__init__.py` are written
empty: the Lambda has no Django (an import-linter contract keeps the package free of it).

Third-party dependencies are listed in `requirements.txt` next to the code. They are
installed into the asset with pip (manylinux wheels for the Lambda's Python) only when
asked: synthesis in tests and CI stays offline; a real deploy asks for them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HANDLER = "syncer.pipeline.stream.handler.handler"
# The package the Lambda ships, relative to the repository root.
HANDLER_PACKAGE = Path("syncer", "pipeline", "stream")
# What the handler imports besides the standard library (boto3 is in the runtime, but the
# pinned one is packaged so that local and Lambda behaviour match).
REQUIREMENTS = ("aws-lambda-powertools>=3.0,<4", "celery[sqs]>=5.5,<6", "boto3>=1.34,<2")
LAMBDA_PYTHON_VERSION = "3.12"


class LambdaAssetError(RuntimeError):
    pass


def build_lambda_asset(*, repo_root: Path, out_dir: Path, install_deps: bool = False) -> Path:
    """(Re)create `out_dir` with the handler code and, optionally, its dependencies."""
    src = repo_root / HANDLER_PACKAGE
    modules = sorted(src.glob("*.py"))
    if not (src / "handler.py").is_file():
        raise LambdaAssetError(f"missing {src / 'handler.py'}: the Lambda asset needs it")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    pkg = out_dir / HANDLER_PACKAGE
    pkg.mkdir(parents=True)
    for parent in HANDLER_PACKAGE.parents:
        if parent != Path("."):
            (out_dir / parent / "__init__.py").write_text("")
    for source in modules:
        shutil.copy2(source, pkg / source.name)
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

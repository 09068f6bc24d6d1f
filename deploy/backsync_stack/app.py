"""Build the CDK app: the Lambda asset first, then the stack, options from CDK context."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from .lambda_asset import build_lambda_asset
from .stack import BacksyncStack, DeployOptions

DEPLOY_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = DEPLOY_DIR.parent
LAMBDA_BUILD_DIR = DEPLOY_DIR / "build" / "lambda"
STACK_NAME = "Backsync"


def _context_defaults() -> dict[str, Any]:
    # cdk.json's context, so an App built in-process (tests) matches `cdk synth`.
    return json.loads((DEPLOY_DIR / "cdk.json").read_text()).get("context", {})


def _opt(app: cdk.App, key: str) -> str | None:
    value = app.node.try_get_context(key)
    return None if value in (None, "") else str(value)


def options_from_context(app: cdk.App) -> DeployOptions:
    defaults = DeployOptions()

    def number(key: str, default: float, kind=int):
        raw = _opt(app, key)
        if raw is None:
            return default
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"context {key}={raw!r} is not a number") from None

    return DeployOptions(
        image_uri=_opt(app, "imageUri"),
        release_image_uri=_opt(app, "releaseImageUri"),
        allowed_hosts=_opt(app, "allowedHosts") or defaults.allowed_hosts,
        certificate_arn=_opt(app, "certificateArn"),
        web_desired_count=number("webDesiredCount", defaults.web_desired_count),
        worker_desired_count=number("workerDesiredCount", defaults.worker_desired_count),
        worker_concurrency=number("workerConcurrency", defaults.worker_concurrency),
        db_min_capacity=number("dbMinCapacity", defaults.db_min_capacity, float),
        db_max_capacity=number("dbMaxCapacity", defaults.db_max_capacity, float),
    )


def make_app(
    context: dict[str, Any] | None = None, outdir: str | None = None
) -> tuple[cdk.App, BacksyncStack]:
    """The app with its one stack; `context` overrides cdk.json (as `-c key=value` does)."""
    app = cdk.App(context={**_context_defaults(), **(context or {})}, outdir=outdir)
    install_deps = (_opt(app, "lambdaDeps") or "pip") == "pip"
    asset_dir = build_lambda_asset(
        repo_root=REPO_ROOT, out_dir=LAMBDA_BUILD_DIR, install_deps=install_deps
    )
    stack = BacksyncStack(
        app,
        STACK_NAME,
        repo_root=REPO_ROOT,
        lambda_asset_dir=asset_dir,
        options=options_from_context(app),
        # Account and region from the CLI profile when there is one; none offline.
        env=cdk.Environment(account=_env("CDK_DEFAULT_ACCOUNT"), region=_env("CDK_DEFAULT_REGION")),
        description="backsync: DynamoDB <-> MySQL sync (web, worker, stream handler)",
    )
    return app, stack


def _env(name: str) -> str | None:
    return os.environ.get(name) or None

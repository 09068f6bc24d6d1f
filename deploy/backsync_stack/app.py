"""Build the CDK app: the Lambda asset first, then the stack, options from CDK context."""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from .lambda_asset import build_lambda_asset
from .settings import DeployOptions, SyncSettings
from .stack import BacksyncStack

DEPLOY_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = DEPLOY_DIR.parent
LAMBDA_BUILD_DIR = DEPLOY_DIR / "build" / "lambda"
STACK_NAME = "Backsync"
# The oldest aws-cdk-lib that synthesises this stack (pyproject.toml's lower bound): 2.190
# has no AuroraMysqlEngineVersion.VER_3_08_2; 2.191 synthesises both with and without
# imageUri (checked by installing each next to the project's other packages).
CDK_MIN_VERSION = "2.191.0"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def cdk_version_check() -> None:
    installed = version("aws-cdk-lib")
    if _version_tuple(installed) < _version_tuple(CDK_MIN_VERSION):
        raise RuntimeError(
            f"aws-cdk-lib {installed} is older than {CDK_MIN_VERSION}, which the stack needs "
            "(pip install -e '.[deploy]')"
        )


def _context_defaults() -> dict[str, Any]:
    # cdk.json's context, so an App built in-process (tests) matches `cdk synth`.
    return json.loads((DEPLOY_DIR / "cdk.json").read_text()).get("context", {})


def _opt(app: cdk.App, key: str) -> str | None:
    value = app.node.try_get_context(key)
    return None if value in (None, "") else str(value)


def _number(app: cdk.App, key: str, default: float, kind=int):
    raw = _opt(app, key)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"context {key}={raw!r} is not a number") from None


def sync_from_context(app: cdk.App) -> SyncSettings:
    """The values shared with the app's settings that a deployment may change."""
    defaults = SyncSettings()
    return SyncSettings(
        message_groups=_number(app, "syncMessageGroups", defaults.message_groups),
        stream_batch_size=_number(app, "streamBatchSize", defaults.stream_batch_size),
        stream_batching_window_seconds=_number(
            app, "streamBatchingWindow", defaults.stream_batching_window_seconds
        ),
    )


def options_from_context(app: cdk.App) -> DeployOptions:
    defaults = DeployOptions()
    if _opt(app, "workerDesiredCount") is not None:
        # Silently ignoring it would leave the operator guessing why nothing changed.
        raise ValueError(
            "context workerDesiredCount is gone: the worker scales on its queue between "
            "workerMinCount and workerMaxCount"
        )

    def number(key: str, default: float, kind=int):
        return _number(app, key, default, kind)

    return DeployOptions(
        image_uri=_opt(app, "imageUri"),
        release_image_uri=_opt(app, "releaseImageUri"),
        allowed_hosts=_opt(app, "allowedHosts") or defaults.allowed_hosts,
        certificate_arn=_opt(app, "certificateArn"),
        web_desired_count=number("webDesiredCount", defaults.web_desired_count),
        worker_min_count=number("workerMinCount", defaults.worker_min_count),
        worker_max_count=number("workerMaxCount", defaults.worker_max_count),
        worker_concurrency=number("workerConcurrency", defaults.worker_concurrency),
        db_min_capacity=number("dbMinCapacity", defaults.db_min_capacity, float),
        db_max_capacity=number("dbMaxCapacity", defaults.db_max_capacity, float),
        alarm_email=_opt(app, "alarmEmail"),
        metrics_token_secret_arn=_opt(app, "metricsTokenSecretArn"),
    )


def make_app(
    context: dict[str, Any] | None = None, outdir: str | None = None
) -> tuple[cdk.App, BacksyncStack]:
    """The app with its one stack; `context` overrides cdk.json (as `-c key=value` does)."""
    cdk_version_check()
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
        sync=sync_from_context(app),
        # Account and region from the CLI profile when there is one; none offline.
        env=cdk.Environment(account=_env("CDK_DEFAULT_ACCOUNT"), region=_env("CDK_DEFAULT_REGION")),
        description="backsync: DynamoDB <-> MySQL sync (web, worker, stream handler)",
    )
    return app, stack


def _env(name: str) -> str | None:
    return os.environ.get(name) or None

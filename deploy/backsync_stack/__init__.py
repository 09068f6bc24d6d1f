"""The backsync AWS CDK app: one stack with every AWS resource the service runs on."""

from .app import CDK_MIN_VERSION, REPO_ROOT, make_app
from .lambda_asset import build_lambda_asset
from .stack import BacksyncStack

__all__ = ["CDK_MIN_VERSION", "REPO_ROOT", "BacksyncStack", "build_lambda_asset", "make_app"]

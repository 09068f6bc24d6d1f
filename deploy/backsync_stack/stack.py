"""The backsync stack: one CloudFormation stack, built from five parts.

- network.py: VPC, app and database security groups;
- data.py: the DynamoDB table and its stream, Aurora, the static bucket (state);
- pipeline.py: the change and outbox queues with their DLQs (one helper, queues.py), the
  stream failures queue, the stream handler Lambda and its event source mapping;
- services.py: ECS cluster, web, worker (with its scaling), beat, release and ops tasks;
- ops.py: alarms and dashboard (monitoring.py), the stack's outputs.

The parts are plain classes, not constructs: each creates its resources in the stack's
own scope, so every construct path, and with it every logical id (and the generated names
that derive from the path, e.g. task definition families), is what it was when the stack
was one function. Nesting the table, the cluster, a queue or the bucket under a construct
would give it a new logical id, and CloudFormation would replace it (data lost).
tests/deploy/test_stack_constructs.py compares the template with the one synthesised
before the split.

Numbers that must agree with the application settings (config/settings/base.py) are
passed in through `SyncSettings` (settings.py), whose defaults are the settings' defaults.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Stack
from constructs import Construct

from .data import Data
from .network import Network
from .ops import Ops
from .pipeline import Pipeline
from .services import AppServices
from .settings import DeployOptions, SyncSettings

# SyncSettings and DeployOptions live in settings.py; importable from here as before.
__all__ = ["BacksyncStack", "DeployOptions", "SyncSettings"]


class BacksyncStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repo_root: Path,
        lambda_asset_dir: Path,
        options: DeployOptions | None = None,
        sync: SyncSettings | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        options = options or DeployOptions()
        sync = sync or SyncSettings()
        options.validate(sync)

        self.network = Network(self)
        self.data = Data(self, sync=sync, options=options, network=self.network)
        self.pipeline = Pipeline(
            self, sync=sync, table=self.data.table, lambda_asset_dir=lambda_asset_dir
        )
        self.services = AppServices(
            self,
            sync=sync,
            options=options,
            network=self.network,
            data=self.data,
            pipeline=self.pipeline,
            repo_root=repo_root,
        )
        self.ops = Ops(
            self,
            options=options,
            network=self.network,
            data=self.data,
            pipeline=self.pipeline,
            services=self.services,
        )

from django.apps import AppConfig
from django.core import checks


class SyncerConfig(AppConfig):
    name = "syncer"
    verbose_name = "Sync"

    def ready(self) -> None:
        from syncer.aws import aws_endpoint_check

        checks.register(aws_endpoint_check)

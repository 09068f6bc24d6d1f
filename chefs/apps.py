from django.apps import AppConfig


class ChefsConfig(AppConfig):
    name = "chefs"
    verbose_name = "Chefs"

    def ready(self) -> None:
        from chefs.mapping import CHEF_MAPPING
        from syncer.registry import register

        register(CHEF_MAPPING)

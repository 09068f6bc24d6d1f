from django.apps import AppConfig


class ChefsConfig(AppConfig):
    name = "chefs"
    verbose_name = "Chefs"

"""Write-side services for the legacy table. Admin, APIs and commands call these."""

from django.db import transaction

from chefs.models import Chef

# The legacy API filled a missing name with these; kept for compatibility.
DEFAULT_FIRST_NAME = "Gordon"
DEFAULT_LAST_NAME = "Ramsay"


@transaction.atomic
def chef_create(*, first_name: str, last_name: str, chef_id: str | None = None) -> Chef:
    chef = Chef(first_name=first_name, last_name=last_name, chef_id=chef_id)
    chef.full_clean()
    chef.save()
    return chef


@transaction.atomic
def chef_update(*, chef: Chef, first_name: str | None = None, last_name: str | None = None) -> Chef:
    """Change the given fields; fields left as None keep their value."""
    changed = []
    if first_name is not None and first_name != chef.first_name:
        chef.first_name = first_name
        changed.append("first_name")
    if last_name is not None and last_name != chef.last_name:
        chef.last_name = last_name
        changed.append("last_name")
    if changed:
        chef.full_clean()
        chef.save(update_fields=changed)
    return chef


@transaction.atomic
def chef_delete(*, chef: Chef) -> None:
    chef.delete()

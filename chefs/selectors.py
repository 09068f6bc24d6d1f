"""Read-side queries over the legacy table."""

from django.db.models import Q, QuerySet

from chefs.models import Chef


def chef_list(*, search: str | None = None) -> QuerySet[Chef]:
    """All chefs in a stable order (by id), optionally filtered by name or key."""
    qs = Chef.objects.order_by("id")
    if search:
        qs = qs.filter(
            Q(first_name__icontains=search)
            | Q(last_name__icontains=search)
            | Q(chef_id__icontains=search)
        )
    return qs


def chef_get(*, id: int) -> Chef | None:
    return Chef.objects.filter(pk=id).first()


def chef_get_by_key(*, chef_id: str) -> Chef | None:
    return Chef.objects.filter(chef_id=chef_id).first()

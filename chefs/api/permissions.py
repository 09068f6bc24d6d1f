"""Who may do what on the chef APIs: Django model permissions on `chefs.Chef`.

Granted through the groups in `chefs/roles.py` (readers: view; writers: view, add, change,
delete). Not authenticated: 401; authenticated without the permission: 403.
"""

from __future__ import annotations

from rest_framework.exceptions import MethodNotAllowed
from rest_framework.permissions import BasePermission

_VIEW = ["chefs.view_chef"]


class ChefPermissions(BasePermission):
    perms_map: dict[str, list[str]] = {
        "GET": _VIEW,
        "HEAD": _VIEW,
        "OPTIONS": _VIEW,
        "POST": ["chefs.add_chef"],
        "PUT": ["chefs.change_chef"],
        "PATCH": ["chefs.change_chef"],
        "DELETE": ["chefs.delete_chef"],
    }

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        perms = self.perms_map.get(request.method)
        if perms is None:
            raise MethodNotAllowed(request.method)
        return user.has_perms(perms)


class DynamoChefPermissions(ChefPermissions):
    # POST on the new API updates the item when its key exists (as the original did).
    perms_map = {**ChefPermissions.perms_map, "POST": ["chefs.add_chef", "chefs.change_chef"]}

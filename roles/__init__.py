"""Roles: one concern each (users, wheel, nodejs, proxy, jupyterhub, apache).

Each role module lists its variables with defaults and documentation (``VARIABLES``), says
which facts it needs, plans its actions and names its handlers; see ``provision.role``.
"""

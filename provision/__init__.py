"""jhprovision: turn bare Linux machines into JupyterHub lab servers over SSH.

Layers (one job per module):

- ``inventory``  reads an Ansible-style YAML inventory and resolves host variables;
- ``variables``  the typed, documented variables every role declares, and their validation;
- ``transport``  the only code that talks to a host (SSH through Fabric, local, fake);
- ``facts``      one batched read of a host's state, parsed by pure functions;
- ``steps``      pure planners: facts + desired state -> actions (argv lists, uploads);
- ``runner``     hosts in parallel, roles in order, handlers, recap and JSON report.
"""

__version__ = "0.1.0"

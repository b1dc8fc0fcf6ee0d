"""The service: the only package that wires the store, the providers and the transport together.

``Fleet`` (``fleet``) is a thin facade over per-concern units: ``access`` (keys, exec, health),
``secrets`` (redaction), ``forge`` (the create saga), ``boxes`` (lifecycle), ``reaper`` (a pure
``ReapPolicy`` plus its loop), ``jobs``, ``files`` and ``agents``, over what ``resources`` opens. Tools
and the CLI call ``Fleet`` only.
"""

from server.service.fleet import Fleet, open_fleet
from server.service.resources import FleetResources, open_resources

__all__ = ["Fleet", "FleetResources", "open_fleet", "open_resources"]

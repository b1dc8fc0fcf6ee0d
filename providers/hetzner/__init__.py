"""Hetzner Cloud boxes. One file per role: ``settings`` (HetznerSettings), ``api`` (the hcloud client,
error translation, retries), ``catalog`` (what is sold where; which server type a box gets), ``cloud_init``
(the user data), ``keys`` (the owner's ssh key), ``waiting`` (boot to SSH banner), ``provider``
(HetznerProvider, the contract and capabilities); box-side programs in ``sh/`` (package data)."""

from providers.hetzner.provider import HetznerProvider
from providers.hetzner.settings import HetznerSettings

__all__ = ["HetznerProvider", "HetznerSettings"]

"""Hydra launchers maintained with derelayl (registered with Hydra under ``hydra_plugins``)."""

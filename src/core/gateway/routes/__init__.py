"""Routers of main's gateway, one module per surface."""

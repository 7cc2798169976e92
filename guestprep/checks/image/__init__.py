"""Disk-image checks: hostside's offline audit (hostside/audit.py) seen through the registry."""

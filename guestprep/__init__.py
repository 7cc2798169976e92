"""guestprep: VMware to Proxmox VE guest readiness, preparation and cutover."""
__version__ = "0.1.0"

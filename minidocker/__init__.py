"""minidocker: a small container runtime shim that shows its networking."""
__version__ = "0.1.0"

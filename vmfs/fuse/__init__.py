"""FUSE adapters: the read-only operations and ``mount``, and the read-write operations."""

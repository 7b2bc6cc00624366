"""Changing files and directories through a host attachment: file data and length changes,
directory entries, and the POSIX operations (one transaction each)."""

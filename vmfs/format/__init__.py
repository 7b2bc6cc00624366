"""The format's arithmetic: block addresses, every size derived from the FS descriptor, the VMFS6
name hash, and the bytes of fresh on-disk objects.  Pure functions over :mod:`vmfs.ondisk`."""

"""The on-disk objects, read side: a :class:`~vmfs.volume.volume.Volume` opened on a logical
volume, its resource files, file descriptors and block maps, file data, directories, paths,
statfs figures and the heartbeat slots as they lie on disk.  Knows nothing of hosts or writing."""

"""One host's part in the cluster: identity and clock, heartbeat slot, on-disk locks by ATS,
the per-host journal, metadata transactions, allocation under cluster locks, and the
:class:`~vmfs.cluster.attachment.HostAttachment` that holds them for one read-write open."""

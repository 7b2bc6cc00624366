"""Plain-data views of a volume for ``vmfs-debug``: descriptors, resources, slots, locks, and the
allocation map."""

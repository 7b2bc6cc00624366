"""The simulated ESX host (hardware interface, VMkernel resource managers, one VMM per VM, service
console), built on :mod:`vmfs`.  Several simulated hosts share a datastore only through on-disk
heartbeats and locks, as ESX hosts do; ``tests/cluster/worker.py`` already runs such hosts as
real processes.  The simulator itself is future work (see ../shared/docs/esx-design.md)."""

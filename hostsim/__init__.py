"""The simulated ESX host (hardware interface, VMkernel resource managers, one VMM per VM, service
console), built on :mod:`vmfs`.  Several simulated hosts share a datastore only through on-disk
heartbeats and locks, as ESX hosts do; ``tests/cluster/worker.py`` already runs such hosts as
real processes.  Built so far (docs/hostsim.md): :mod:`hostsim.hic`, the hardware interface, and
:mod:`hostsim.vmkernel.engine`, the deterministic event engine everything runs on; the resource
managers, the VMMs and the console are to come (issue 12; ../shared/docs/esx-design.md)."""

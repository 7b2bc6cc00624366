"""The simulated ESX host (esx-design.md 6.1), built on :mod:`vmfs`: the hardware interface
(:mod:`hostsim.hic`), the VMkernel with its resource managers (:mod:`hostsim.vmkernel`), one VMM
per powered-on VM (:mod:`hostsim.vmm`) and the service console (:mod:`hostsim.console`), layered
in that order.  A simulated host opens its datastores with its own VMFS identity, heartbeat slot,
journal and locks, so hosts share a volume only through the disk, as ESX hosts do.  The front-end
is the ``hostsim`` command (tools/hostsim.py); docs/hostsim.md describes every part."""

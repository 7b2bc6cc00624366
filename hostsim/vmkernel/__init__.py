"""The VMkernel of the simulated host (esx-design.md 6.1): the event engine every world runs on
(:mod:`~hostsim.vmkernel.engine`), the resource managers — the CPU scheduler
(:mod:`~hostsim.vmkernel.cpu`, with :mod:`~hostsim.vmkernel.entitlement` and the resource pools of
:mod:`~hostsim.vmkernel.pools`), the memory manager (:mod:`hostsim.vmkernel.memory`), the storage
stack with mClock (:mod:`~hostsim.vmkernel.storage`, :mod:`~hostsim.vmkernel.mclock`) — and the VMFS
module's clock (:mod:`~hostsim.vmkernel.vmfsclock`).  See docs/hostsim.md."""

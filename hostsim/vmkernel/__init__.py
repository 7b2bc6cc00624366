"""The VMkernel of the simulated host: the event engine (:mod:`hostsim.vmkernel.engine`) that every
world, scheduler and device model runs on.  The CPU, memory and storage resource managers are to
come (issue 12, item 3)."""

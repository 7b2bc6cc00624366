"""The VMM layer of the simulated host: one per VM (esx-design.md 6.1).  Its parts: the guest
language (``guest``), the VM's files on the datastore (``vmx``, ``vmsd``, ``folder``, ``files``),
its virtual SCSI disks (``scsi``), its swap file (``swapfile``), power-on/off of those files
(``poweron``) and the monitor that runs the guest on the VMkernel's resources (``machine``).
See docs/hostsim.md."""

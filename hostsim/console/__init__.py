"""The service console (esx-design.md 6.1): the host config and scenario files, esxtop (panels,
batch CSV, plots), the host itself (``host``: boot, VMs, power, snapshots, samples), the commands an
administrator types (``vimcmd``), the command server of a paced host (``server``) and the
headless scenario runner (``run``).  It sits on top of every other layer
and is the only part a user talks to."""

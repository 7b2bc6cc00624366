"""The service console (esx-design.md 6.1): the host config and scenario files, esxtop (panels,
batch CSV, plots), and the commands an administrator types.  It sits on top of every other layer
and is the only part a user talks to."""

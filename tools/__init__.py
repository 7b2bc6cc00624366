"""Command-line front-ends: option parsing and output only; all logic is in :mod:`vmfs`."""

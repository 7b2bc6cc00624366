"""The root of every error a hostsim user can cause (a bad config, scenario, .vmx or guest program).

One root so the console and the click front-end report any of them in one line, without a
traceback; each component adds its own subclasses in its module (or below, here)."""

from __future__ import annotations


class HostsimError(Exception):
    """An error the user caused, with a one-line message that says where and what is wrong."""


class HostPanic(HostsimError):
    """The host stopped as ESX does at a purple screen (a crash asked for with vsish): nothing
    flushed or given back; a later boot of the same host replays its journal."""

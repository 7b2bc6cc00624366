"""The hardware interface component of the simulated host (esx-design.md 6.1): storage
adapters and LUNs named as ESX names them, LUN drivers over image files, block devices and
memory, a device model that yields DAVG/KAVG, a fault layer, and the storage rescan that mounts
VMFS volumes as datastores under ``/vmfs/volumes``.  See docs/hostsim.md, "Hardware interface"."""

from hostsim.hic.clock import Clock, StepClock, WallClock
from hostsim.hic.faults import AllPathsDownError, FaultPlan, MediumError
from hostsim.hic.lun import LockCounters, Lun, LunHandle, ScsiPath, StorageAdapter
from hostsim.hic.model import DeviceModel, HostQueue, IoRecord, LunStats, StatsSample
from hostsim.hic.storage import (
    VOLUMES,
    Datastore,
    LunScan,
    RescanReport,
    SnapshotVolume,
    StorageSystem,
    VolumesNamespace,
)

__all__ = [
    "VOLUMES",
    "AllPathsDownError",
    "Clock",
    "Datastore",
    "DeviceModel",
    "FaultPlan",
    "HostQueue",
    "IoRecord",
    "LockCounters",
    "Lun",
    "LunHandle",
    "LunScan",
    "LunStats",
    "MediumError",
    "RescanReport",
    "ScsiPath",
    "SnapshotVolume",
    "StatsSample",
    "StepClock",
    "StorageAdapter",
    "StorageSystem",
    "VolumesNamespace",
    "WallClock",
]

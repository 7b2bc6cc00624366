"""fsck's bulk decoding (vmfs/fsck/bulk.py) says what construct says, and its fast path changes nothing.

* Property: numpy records and ``struct`` formats derived from the construct declarations decode
  any bytes into the same field values as construct's own parse.
* Equivalence: on every volume of the corruption corpus (healthy FDs, damaged ones, VMFS5 and the
  real VMFS6 sample) a check with pass 2's fast path finds the same problems, keeps the same FD
  records and resource owners and the same directories, as a check that examines every FD one by
  one (the fast path switched off); and on a healthy volume most FDs did take the fast path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from construct import FormatFieldError, Struct
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fsck import cases, corrupt, volumes
from vmfs.fsck import FsckOptions, Mode, Policy, bulk, check
from vmfs.fsck import pass2_descriptors as pass2
from vmfs.ondisk.common import struct_of
from vmfs.ondisk.dirent5 import DIRENT5_SIZE, Dirent5
from vmfs.ondisk.filedesc import FileMetadata
from vmfs.ondisk.lock import LockFields

CASES = cases.load()
MD = 0x800  # VMFS5's metadata sector offset; any offset does for the property
RSZ = 0x1000


#: one FD slot: random lock fields and metadata fields where the declarations put them, and one
#: random byte elsewhere (so a slot that is zero but for it is still seen as used)
_SLOT = st.tuples(st.binary(min_size=0x48, max_size=0x48), st.binary(min_size=0x64, max_size=0x64),
                  st.integers(0x48, MD - 1), st.integers(0, 255)).map(
    lambda t: (t[0] + bytes(t[2] - 0x48) + bytes([t[3]])).ljust(MD, b"\0") + t[1].ljust(RSZ - MD, b"\0"))


@settings(max_examples=200, deadline=None)
@given(st.lists(_SLOT, min_size=3, max_size=3).map(b"".join))
def test_records_decode_as_construct_does(raw: bytes) -> None:
    dtype = bulk.dtype_of([(LockFields, 0, pass2._BULK_LOCK), (FileMetadata, MD, pass2._BULK_META)], RSZ)
    recs = bulk.records(raw, 0, 3, dtype)
    assert len(recs) == 3
    for k in range(3):
        slot = raw[k * RSZ : (k + 1) * RSZ]
        lock = LockFields.parse(slot)
        meta = FileMetadata.parse(slot[MD:])
        assert {n: int(recs[k][f"0.{n}"]) for n in pass2._BULK_LOCK} == {n: lock[n] for n in pass2._BULK_LOCK}
        assert {n: int(recs[k][f"1.{n}"]) for n in pass2._BULK_META} == {n: meta[n] for n in pass2._BULK_META}
    used = bulk.nonzero_rows(raw, 0, 3, RSZ)
    assert list(used) == [any(raw[k * RSZ : (k + 1) * RSZ]) for k in range(3)]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=DIRENT5_SIZE * 4 + 7))
def test_directory_slots_unpack_as_construct_does(data: bytes) -> None:
    unpack = struct_of(Dirent5)
    whole = len(data) - len(data) % DIRENT5_SIZE
    for i, values in zip(range(0, whole, DIRENT5_SIZE), unpack.iter_unpack(data[:whole]), strict=True):
        parsed = Dirent5.parse(data[i : i + DIRENT5_SIZE])
        assert list(values) == [parsed[c.name] for c in Dirent5.subcons]


def test_short_or_empty_input_gives_no_records() -> None:
    dtype = bulk.dtype_of([(LockFields, 0, ["type"])], RSZ)
    assert len(bulk.records(b"\x01" * (RSZ - 1), 0, 4, dtype)) == 0
    assert len(bulk.nonzero_rows(b"", 0, 4, RSZ)) == 0
    with pytest.raises(TypeError):
        struct_of(Struct("x" / LockFields))


def _check_state(image: Path) -> tuple[Any, ...]:
    report = check([str(image)], FsckOptions(policy=Policy(Mode.NO)))
    phase = report.check
    assert phase is not None
    state = phase.state
    findings = [f.as_dict() for f in phase.findings]
    if state is None:
        return (report.exit_code, findings, None)
    return (report.exit_code, findings, dict(state.fds), dict(state.owners), dict(state.dirs), state.usage)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fast_path_changes_no_verdict(case: cases.Case, tmp_path: Path, populated: Path, vmfs6_image: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    image = tmp_path / "volume.img"
    volumes.copy(populated if case.base == "populated" else vmfs6_image, image)
    image.chmod(0o644)
    corrupt.apply(image, case.steps)
    taken = []
    real = pass2._Bulk.clean_record

    def counting(self: Any, *args: Any) -> Any:
        rec = real(self, *args)
        taken.append(rec is not None)
        return rec

    monkeypatch.setattr(pass2._Bulk, "clean_record", counting)
    fast = _check_state(image)
    monkeypatch.setattr(pass2._Bulk, "clean_record", lambda self, *args: None)
    slow = _check_state(image)
    assert fast == slow
    if case.base == "populated" and fast[2] is not None:
        assert sum(taken) >= len(taken) // 2, f"fast path taken for {sum(taken)} of {len(taken)} FDs"


#: fields of a resident file's or directory's FD that the fast path decides on, and values around
#: each rule's edge (sizes at the resident capacity, other types, address modes and mode bits)
_FIELDS = ["fileLength", "numBlocks", "numPointerBlocks", "mode", "type", "zla", "descAddr", "linkCount",
           "generation", "blockSize", "lock.type", "lock.addr", "lock.mode"]
_VALUES = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 0x400, 0x5FF, 0x600, 0x601, 0x1000, 0o100644, 0o40755, 0o120777,
                     0o1100644, 0x10C00001, 0x10C00002, 0xFFFFFFFF]),
    st.dictionaries(st.just("add"), st.sampled_from([-1, 1, 8, 0x800]), min_size=1),
    st.dictionaries(st.just("or"), st.sampled_from([0o170000, 1 << 16, 1 << 31]), min_size=1),
)


@pytest.mark.slow  # about 40 s: two checks of a fresh copy per example
@settings(max_examples=40, deadline=None)
@given(path=st.sampled_from(["/d1/small", "/d1/d2/inner", "/many/f07", "/d1/d2", "/empty"]),
       field=st.sampled_from(_FIELDS), value=_VALUES)
def test_fast_path_agrees_on_a_damaged_resident_fd(populated: Path, tmp_path_factory: pytest.TempPathFactory,
                                                   path: str, field: str, value: Any) -> None:
    image = tmp_path_factory.mktemp("bulk") / "volume.img"
    volumes.copy(populated, image)
    image.chmod(0o644)
    real = pass2._Bulk.clean_record
    try:
        try:
            corrupt.apply(image, [{"op": "fd", "path": path, "field": field, "value": value}])
        except FormatFieldError:
            return  # a value the field cannot hold (a negative count)
        fast = _check_state(image)
        pass2._Bulk.clean_record = lambda self, *args: None  # type: ignore[method-assign]
        slow = _check_state(image)
    finally:
        pass2._Bulk.clean_record = real  # type: ignore[method-assign]
        image.unlink()
    assert fast == slow

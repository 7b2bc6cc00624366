"""VMFS6 resource file headers rebuilt from their cluster headers (vmfs/fsck/rebuild6.py).

Each resource header but .fbb.sf's, zeroed in a copy of the real ESXi sample and of the populated
VMFS6 volume vmfs-mkfs made: the library cannot open the volume; vmfs-fsck -n reports
RESOURCE_HEADER_BAD (not a fatal loss), -y rebuilds it, and the header it writes is the one that
was there, byte for byte, ESXi's included (the sample's .sbc.sf holds 5916 sub-blocks in 3 groups:
what ESXi left of a 768 MiB volume, no default).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import copy_image
from tests.fsck import corrupt
from tests.fsck.cases import codes, run_fsck
from vmfs.ondisk import resource as R
from vmfs.volume.volume import Volume

KIND = {".sbc.sf": R.RES_SB, ".pbc.sf": R.RES_PB, ".fdc.sf": R.RES_FD, ".pb2.sf": R.RES_PB2, ".jbc.sf": R.RES_JB}


def _header(image: Path, name: str) -> bytes:
    with Volume.open(image) as vol:
        return vol.resources[KIND[name]].reader.read(0, R.RES_HEADER_SIZE)


@pytest.mark.parametrize("name", sorted(KIND))
@pytest.mark.parametrize("base", ["sample", "populated6"])
def test_a_zeroed_header_is_rebuilt_as_it_was(base: str, name: str, tmp_path: Path, vmfs6_image: Path,
                                              populated6: Path) -> None:
    source = vmfs6_image if base == "sample" else populated6
    image = copy_image(source, tmp_path / "v6.img")
    corrupt.apply(image, [{"op": "resource_header", "file": name, "zero": True}])
    with pytest.raises(Exception, match="resource header"):
        Volume.open(image).close()
    rc, report = run_fsck(image, "-n")
    assert (rc, codes(report)) == (4, ["0x010003 RESOURCE_HEADER_BAD"]), report
    rc, report = run_fsck(image, "-y")
    assert rc == 1, report
    assert run_fsck(image, "-n")[0] == 0
    assert _header(image, name) == _header(source, name)

"""The ``vmfs-vmdk`` front-end: options map to one library call; library errors become one line on
stderr and exit status 1, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pyvmfs_tools.vmdk import main, parse_size
from vmdk_helpers import MIB

from vmfs.vmdk.descriptor import Descriptor


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_parse_size() -> None:
    assert parse_size("10G") == 10 << 30
    assert parse_size("512m") == 512 << 20
    assert parse_size("4096") == 4096


def test_create_extend_snapshot_clone_delete(tmp_path: Path) -> None:
    disk = str(tmp_path / "a.vmdk")
    assert run("-c", "4M", "-d", "thin", "-a", "buslogic", disk)[0] == 0
    desc = Descriptor.parse((tmp_path / "a.vmdk").read_bytes())
    assert desc.thin_provisioned and desc.adapter_type == "buslogic"
    assert run("-X", "8M", disk)[0] == 0
    code, out, _ = run("--snapshot", disk)
    assert code == 0 and out.strip() == "a-000001.vmdk"
    code, out, _ = run("--info", str(tmp_path / "a-000001.vmdk"))
    assert code == 0 and "a-000001.vmdk  vmfsSparse" in out and "8388608 bytes" in out
    assert run("-i", str(tmp_path / "a-000001.vmdk"), "-d", "monolithicSparse", str(tmp_path / "c.vmdk"))[0] == 0
    assert run("--delete-snapshot", str(tmp_path / "a-000001.vmdk"))[1].strip() == "a.vmdk"
    assert run("-E", disk, str(tmp_path / "b.vmdk"))[0] == 0
    assert run("-U", str(tmp_path / "b.vmdk"))[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.vmdk"]


def test_lock_info(tmp_path: Path) -> None:
    disk = str(tmp_path / "a.vmdk")
    run("-c", "1M", disk)
    code, out, _ = run("-D", disk)
    assert code == 0
    assert out.splitlines()[0] == "a.vmdk"
    assert "  lock: none (host file" in out and "a-flat.vmdk" in out


def test_punch_and_inflate(tmp_path: Path) -> None:
    disk = str(tmp_path / "a.vmdk")
    run("-c", "2M", "-d", "eagerzeroedthick", disk)
    code, out, _ = run("-K", disk)
    assert code == 0 and out.strip() == f"{2 * MIB} bytes unallocated"
    assert run("-j", disk)[0] == 0
    assert run("-k", disk)[0] == 0


def test_rdm(tmp_path: Path) -> None:
    device = tmp_path / "lun.img"
    device.write_bytes(bytes(MIB))
    assert run("-z", str(device), str(tmp_path / "p.vmdk"))[0] == 0
    assert (tmp_path / "p-rdmp.vmdk").stat().st_size == MIB


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["-X", "1M", "{d}/a.vmdk"], id="shrink"),
        pytest.param(["-c", "1M", "{d}/a.vmdk"], id="exists"),
        pytest.param(["--info", "{d}/missing.vmdk"], id="missing"),
        pytest.param(["-c", "1M", "-d", "weird", "{d}/b.vmdk"], id="bad-format"),
        pytest.param(["--revert", "{d}/a.vmdk"], id="not-a-snapshot"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, args: list[str]) -> None:
    run("-c", "2M", str(tmp_path / "a.vmdk"))
    code, out, err = run(*(a.format(d=tmp_path) for a in args))
    assert code == 1
    assert err.startswith("vmfs-vmdk: ") and err.count("\n") == 1
    assert "Traceback" not in err + out


def test_corrupt_disk_message(tmp_path: Path) -> None:
    (tmp_path / "x.vmdk").write_bytes(b"KDMV" + bytes(20))
    code, _, err = run("--info", str(tmp_path / "x.vmdk"))
    assert code == 1 and "corrupt sparse header" in err and err.count("\n") == 1


def test_usage_errors(tmp_path: Path) -> None:
    assert run(str(tmp_path / "a.vmdk"))[0] == 2  # no action
    assert run("-j", "-k", str(tmp_path / "a.vmdk"))[0] == 2  # two actions
    assert run("-c", "ten", str(tmp_path / "a.vmdk"))[0] == 2

"""The ``dcd``, ``xtc`` and ``pdb`` reporters: readable by mdtraj and by the formats'
definitions, with the box, atom subsets and one file per replica."""

from __future__ import annotations

import struct
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from torchmd_plugins.reporters.files import replica_paths
from torchmd_plugins.reporters.trajectory import DCDReporter, PDBReporter, XTCReporter

from tests.core.toys import MemoryReporter
from torchmd_core import Simulation, load_config
from torchmd_core.testing import check_config_roundtrip


def run_with_memory(
    config: Path, steps: int, interval: int
) -> tuple[Simulation, list[np.ndarray], list[np.ndarray]]:
    """Run, keeping (R, N, 3) positions and (R, 3, 3) boxes every ``interval`` steps."""
    sim = Simulation.from_config(load_config(config))
    memory = MemoryReporter(MemoryReporter.Config(interval=interval), sim.system)
    sim.reporters.append(memory)
    sim.run(steps)
    positions = [f.state.positions.double().numpy() for f in memory.frames]
    boxes = [
        None if f.state.box is None else f.state.box.double().numpy()
        for f in memory.frames
    ]
    return sim, positions, boxes


@pytest.mark.parametrize("cls", [DCDReporter, XTCReporter, PDBReporter])
def test_config_round_trip(cls):
    check_config_roundtrip(cls, cls.Config(file="x", atoms="name CA"))
    check_config_roundtrip(cls, cls.Config(file="x", atoms=(1, 2, 3)))


def read_fortran_dcd(
    path: Path,
) -> tuple[dict[str, int], np.ndarray, np.ndarray | None]:
    """A DCD read by the format's definition (Fortran unformatted records), as VMD's
    and MDAnalysis' readers do: header, then per frame [unit cell], X, Y, Z."""
    data = path.read_bytes()
    pos = 0

    def record() -> bytes:
        nonlocal pos
        (n,) = struct.unpack_from("<i", data, pos)
        body = data[pos + 4 : pos + 4 + n]
        assert struct.unpack_from("<i", data, pos + 4 + n)[0] == n, (
            "record markers differ"
        )
        pos += n + 8
        return body

    head = record()
    assert head[:4] == b"CORD"
    icntrl = struct.unpack_from("<20i", head, 4)
    record()  # title
    (n_atoms,) = struct.unpack("<i", record())
    frames, cells = [], []
    while pos < len(data):
        cells.append(np.frombuffer(record(), "<f8") if icntrl[10] else None)
        xyz = [np.frombuffer(record(), "<f4") for _ in range(3)]
        frames.append(np.stack(xyz, axis=1))
    assert len(frames) == icntrl[0]  # NSET
    assert all(f.shape == (n_atoms, 3) for f in frames)
    return (
        {"nset": icntrl[0], "atoms": n_atoms, "has_cell": icntrl[10]},
        np.array(frames),
        (np.array(cells) if icntrl[10] else None),
    )


def test_dcd_holds_positions_and_box(tmp_path, toy_config):
    cfg = toy_config([{"kind": "dcd", "file": "t.dcd", "interval": 3}], steps=9)
    sim, positions, _ = run_with_memory(cfg, 9, 3)
    traj = mdtraj.load_dcd(str(tmp_path / "t.dcd"), top=sim.system.topology)
    assert traj.n_frames == 4
    np.testing.assert_allclose(
        traj.xyz * 10, np.array(positions)[:, 0], rtol=0, atol=1e-5
    )
    np.testing.assert_allclose(traj.unitcell_lengths * 10, 14.0, rtol=1e-6)
    np.testing.assert_allclose(traj.unitcell_angles, 90.0)
    info, frames, cells = read_fortran_dcd(tmp_path / "t.dcd")
    assert info == {"nset": 4, "atoms": 12, "has_cell": 1}
    np.testing.assert_array_equal(frames, np.array(positions)[:, 0].astype(np.float32))
    assert cells is not None and np.allclose(cells[:, [0, 2, 5]], 14.0)  # A, B, C


def test_dcd_without_box_has_no_unit_cell(tmp_path, toy_config):
    cfg = toy_config(
        [{"kind": "dcd", "file": "t.dcd", "interval": 2}], steps=4, box=None
    )
    sim, positions, _ = run_with_memory(cfg, 4, 2)
    info, frames, cells = read_fortran_dcd(tmp_path / "t.dcd")
    assert info["has_cell"] == 0 and cells is None
    np.testing.assert_array_equal(frames, np.array(positions)[:, 0].astype(np.float32))
    assert (
        mdtraj.load_dcd(
            str(tmp_path / "t.dcd"), top=sim.system.topology
        ).unitcell_vectors
        is None
    )


def test_xtc_holds_positions_box_step_and_time(tmp_path, toy_config):
    cfg = toy_config([{"kind": "xtc", "file": "t.xtc", "interval": 4}], steps=12)
    sim, positions, boxes = run_with_memory(cfg, 12, 4)
    traj = mdtraj.load_xtc(str(tmp_path / "t.xtc"), top=sim.system.topology)
    np.testing.assert_allclose(
        traj.xyz * 10, np.array(positions)[:, 0], atol=0.01
    )  # 0.001 nm
    np.testing.assert_allclose(traj.time, [0.0, 0.008, 0.016, 0.024], atol=1e-6)
    np.testing.assert_allclose(
        traj.unitcell_vectors * 10, np.array(boxes)[:, 0], atol=1e-5
    )
    data = (tmp_path / "t.xtc").read_bytes()
    assert struct.unpack(">i", data[:4])[0] == 1995  # XTC magic (big-endian XDR)
    with mdtraj.formats.XTCTrajectoryFile(str(tmp_path / "t.xtc")) as fh:
        _, _, step, _ = fh.read()
    assert step.tolist() == [0, 4, 8, 12]


@pytest.mark.parametrize(
    "atoms", [[1, 4, 5, 9], "index 1 4 5 9"], ids=["indices", "selection"]
)
def test_atom_subset(tmp_path, toy_config, atoms):
    cfg = toy_config(
        [
            {"kind": "dcd", "file": "t.dcd", "interval": 2, "atoms": atoms},
            {"kind": "xtc", "file": "t.xtc", "interval": 2, "atoms": atoms},
            {"kind": "pdb", "file": "t.pdb", "atoms": atoms},
        ],
        steps=4,
    )
    sim, positions, _ = run_with_memory(cfg, 4, 2)
    want = np.array(positions)[:, 0][:, [1, 4, 5, 9]]
    top = sim.system.topology.subset([1, 4, 5, 9])
    dcd = mdtraj.load_dcd(str(tmp_path / "t.dcd"), top=top)
    xtc = mdtraj.load_xtc(str(tmp_path / "t.xtc"), top=top)
    np.testing.assert_allclose(dcd.xyz * 10, want, atol=1e-5)
    np.testing.assert_allclose(xtc.xyz * 10, want, atol=0.01)
    pdb = mdtraj.load_pdb(str(tmp_path / "t.pdb"))
    assert [a.name for a in pdb.topology.atoms] == ["H1", "C4", "H5", "H9"]
    np.testing.assert_allclose(pdb.xyz[0] * 10, want[-1], atol=1e-3)


def test_one_file_per_replica(tmp_path, toy_config):
    cfg = toy_config(
        [
            {"kind": "dcd", "file": "out/t.dcd", "interval": 2},
            {"kind": "xtc", "file": "out/t.xtc", "interval": 2},
            {"kind": "pdb", "file": "out/end.pdb"},
        ],
        steps=4,
        n_replicas=3,
    )
    sim, positions, _ = run_with_memory(cfg, 4, 2)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "end_r0.pdb",
        "end_r1.pdb",
        "end_r2.pdb",
        "t_r0.dcd",
        "t_r0.xtc",
        "t_r1.dcd",
        "t_r1.xtc",
        "t_r2.dcd",
        "t_r2.xtc",
    ]
    for r in range(3):
        traj = mdtraj.load_dcd(
            str(tmp_path / f"out/t_r{r}.dcd"), top=sim.system.topology
        )
        np.testing.assert_allclose(traj.xyz * 10, np.array(positions)[:, r], atol=1e-5)
        pdb = mdtraj.load_pdb(str(tmp_path / f"out/end_r{r}.pdb"))
        np.testing.assert_allclose(pdb.xyz[0] * 10, positions[-1][r], atol=1e-3)


def test_replica_file_names_sort_by_replica():
    assert replica_paths(Path("a/t.dcd"), 1) == [Path("a/t.dcd")]
    names = [p.name for p in replica_paths(Path("a/t.dcd"), 11)]
    assert (
        names[0] == "t_r00.dcd" and names[10] == "t_r10.dcd" and names == sorted(names)
    )


def test_pdb_final_structure_and_periodic_refresh(tmp_path, toy_config):
    cfg = toy_config(
        [
            {"kind": "pdb", "file": "final.pdb"},
            {"kind": "pdb", "file": "latest.pdb", "interval": 3},
        ],
        steps=7,
    )
    sim = Simulation.from_config(load_config(cfg))
    sim.run(7)
    final = mdtraj.load_pdb(str(tmp_path / "final.pdb"))
    np.testing.assert_allclose(
        final.xyz[0] * 10, sim.state.positions[0].numpy(), atol=1e-3
    )
    assert (
        "CRYST1   14.000   14.000   14.000  90.00  90.00  90.00"
        in (tmp_path / "final.pdb").read_text()
    )
    assert sim.reporters[1].last_step == 7 and sim.reporters[0].last_step == 7
    assert [p.name for p in tmp_path.glob(".*")] == []  # no temporary files left

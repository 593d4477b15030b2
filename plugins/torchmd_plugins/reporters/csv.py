"""The ``csv`` reporter: one row per reporting step (and replica) of energies,
temperature, volume, density, each energy term and the speed."""

from __future__ import annotations

import csv as _csv
import io
from pathlib import Path
from typing import IO, Literal

import torch
from pydantic import Field

from torchmd_core import CheckpointError, Frame, ReporterConfig, RunInfo, System
from torchmd_plugins.reporters.files import FileReporter, fsync_file

__all__ = ["CSVReporter"]


class CSVReporter(FileReporter):
    """Energies, temperature, volume and density as CSV rows.

    Columns: ``step, time_ps``, ``replica`` (with more than one replica: one row per
    replica), ``potential_kcal_mol, kinetic_kcal_mol, total_kcal_mol, temperature_K``,
    ``volume_A3, density_g_cm3`` (periodic systems), one ``<term>_kcal_mol`` per energy
    term, one column per per-replica extra of the run (``bath_temperature_K`` under
    replica exchange), and ``speed_ns_day`` (since the previous row; empty in the
    first row).
    """

    per_replica = False
    needs = frozenset({"energy_terms"})

    class Config(ReporterConfig):
        kind: Literal["csv"] = "csv"
        file: Path = Field(
            description="CSV file to write (relative to the config file)."
        )
        interval: int = Field(1000, gt=0, description="Steps between rows.")
        energy_terms: bool = Field(
            True,
            description="Add one column per energy term (costs one extra energy "
            "evaluation per row).",
        )

    def __init__(self, config: Config, system: System) -> None:
        super().__init__(config, system)
        self.config: CSVReporter.Config = config
        if not config.energy_terms:
            self.needs = frozenset()  # type: ignore[misc]  # per instance: no extra evaluation
        self.columns: list[str] = []
        self.extras: tuple[str, ...] = ()  # per-replica Frame.extras written as columns
        self._fh: IO[str] | None = None

    @property
    def path(self) -> Path:
        return self.paths[0]

    def make_columns(self, run: RunInfo) -> list[str]:
        cols = ["step", "time_ps"]
        if run.n_replicas > 1:
            cols.append("replica")
        cols += [
            "potential_kcal_mol",
            "kinetic_kcal_mol",
            "total_kcal_mol",
            "temperature_K",
        ]
        if run.periodic:
            cols += ["volume_A3", "density_g_cm3"]
        if self.config.energy_terms:
            cols += [f"{name}_kcal_mol" for name in run.term_names]
        return [*cols, *run.extras, "speed_ns_day"]

    def start_file(self, path: Path, run: RunInfo) -> None:
        self.columns = self.make_columns(run)
        self.extras = run.extras

    def continue_file(self, path: Path, record: dict[str, int], run: RunInfo) -> None:
        self.columns = self.make_columns(run)
        self.extras = run.extras
        with path.open("r", newline="") as fh:
            first = fh.readline().rstrip("\r\n")
        if first != ",".join(self.columns):
            raise CheckpointError(
                f"'{path}' does not start with the columns this run writes "
                f"({','.join(self.columns)}); it was changed since the checkpoint, "
                "so it is left alone. Restore it, or start it anew with --overwrite"
            )
        self.cut_back(path, record["bytes"])
        self._fh = path.open("a", newline="", buffering=1)

    def report(self, frame: Frame) -> None:
        if self._fh is None:
            self._fh = self.path.open("x", newline="", buffering=1)
            self._fh.write(",".join(self.columns) + "\n")
        rows = self._rows(frame)
        text = io.StringIO()
        _csv.writer(text, lineterminator="\n").writerows(rows)
        self._fh.write(text.getvalue())
        self._frames[self.path.name] = self._frames.get(self.path.name, 0) + len(rows)
        self.last_step = frame.step

    def _rows(self, frame: Frame) -> list[list[str]]:
        values = [
            frame.potential_energy,
            frame.kinetic_energy,
            frame.potential_energy + frame.kinetic_energy,
            frame.temperature_K,
        ]
        fmt = ["{:.6f}", "{:.6f}", "{:.6f}", "{:.4f}"]
        if frame.volume_A3 is not None and frame.density_g_cm3 is not None:
            values += [frame.volume_A3, frame.density_g_cm3]
            fmt += ["{:.4f}", "{:.6f}"]
        if self.config.energy_terms and frame.energy_terms is not None:
            values += list(frame.energy_terms.values())
            fmt += ["{:.6f}"] * len(frame.energy_terms)
        values += [frame.extras[name] for name in self.extras]
        fmt += ["{:.6f}"] * len(self.extras)
        table = torch.stack([v.detach().reshape(-1) for v in values], dim=1)  # (R, C)
        speed = "" if frame.speed_ns_day is None else f"{frame.speed_ns_day:.3f}"
        rows = []
        for r, line in enumerate(table.to(device="cpu", dtype=torch.float64).tolist()):
            head = [str(frame.step), f"{frame.time_ps:.6f}"]
            if table.shape[0] > 1:
                head.append(str(r))
            rows.append(
                head + [f.format(v) for f, v in zip(fmt, line, strict=True)] + [speed]
            )
        return rows

    def flush(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.flush()
            fsync_file(self.path)

    def close_files(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

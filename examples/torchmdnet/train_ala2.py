"""Train a small TensorNet on AMBER energies and forces of alanine dipeptide in vacuum.

1. Sample: Langevin MD with our own ``amber`` + ``nonbonded`` potentials (no cutoff),
   as ``sample_amber.yaml`` describes, at 300 K and at 600 K (so that the model also
   sees the edges of the 300 K ensemble).
2. Label: AMBER energies and forces of every frame, in float64.
3. Train: a TorchMD-NET TensorNet (``torchmdnet.models.model.create_model``) on energies
   and forces, Adam with a cosine learning-rate schedule.
4. Refine: run Langevin MD with the model itself (``kind: torchmdnet`` on the model in
   memory), label those frames with AMBER and train on all frames a little longer. A
   model fitted to thermal AMBER frames only has holes where AMBER's data has none:
   here it let hydrogen-bonded O…H pairs collapse to ~1 Å. Its own trajectories find
   those holes; their AMBER labels close them.
5. Save: a checkpoint in the layout ``torchmdnet.models.model.load_model`` reads (what
   ``kind: torchmdnet`` loads), float32 weights only.

Run from anywhere (about 8 minutes on 2 idle CPU cores)::

    python examples/torchmdnet/train_ala2.py         # writes ala2_tensornet.ckpt here
    tmd run examples/torchmdnet/ala2_tensornet.yaml   # Langevin MD with the model

The repository ships the checkpoint this script wrote (seed 0), so the second command
works without training first.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from torchmd_core import Simulation, State, parse_config

HERE = Path(__file__).resolve().parent

#: TensorNet hyper-parameters (torchmd-train's names): ~50k weights, 5 Å cutoff.
MODEL_ARGS: dict[str, Any] = {
    "model": "tensornet",
    "embedding_dimension": 32,
    "num_layers": 2,
    "num_rbf": 16,
    "rbf_type": "expnorm",
    "trainable_rbf": False,
    "activation": "silu",
    "cutoff_lower": 0.0,
    "cutoff_upper": 5.0,
    "max_z": 9,  # H, C, N, O
    "max_num_neighbors": 32,
    "equivariance_invariance_group": "O(3)",
    "derivative": False,
    "atom_filter": -1,
    "prior_model": None,
    "output_model": "Scalar",
    "reduce_op": "add",
    "precision": 32,
    "static_shapes": False,
}

#: Refinement frames above this AMBER energy (kcal/mol; thermal frames at 600 K stay
#: below 35) are left out: their forces of thousands of kcal/mol/Å would swamp the
#: loss, and the milder frames of the same holes already teach the repulsive wall.
MAX_REFINE_ENERGY = 200.0


def log(*parts: object) -> None:
    print(*parts, flush=True)


def amber_simulation(temperature_K: float = 300.0, seed: int = 0) -> Simulation:
    """The simulation ``sample_amber.yaml`` describes, at ``temperature_K``."""
    data = yaml.safe_load((HERE / "sample_amber.yaml").read_text())
    data["integrator"]["temperature_K"] = temperature_K
    data["seed"] = seed
    config = parse_config(data, source="sample_amber.yaml", base_dir=HERE)
    sim = Simulation.from_config(config)
    if config.minimize is not None:
        sim.minimize(config.minimize.tolerance_kcal_mol_A)
    return sim


def sample(sim: Simulation, steps: int, interval: int) -> torch.Tensor:
    """(F, 22, 3) frames (Å) of ``sim``, one per ``interval`` steps after steps / 3 of
    warm-up."""
    sim.run(steps // 3)
    frames = []
    for _ in range(steps // interval):
        sim.run(interval)
        frames.append(sim.state.positions.detach().double())
    return torch.cat(frames)


def with_model(sim: Simulation, model: torch.nn.Module, n_replicas: int) -> Simulation:
    """The same system, integrator and starting structure, with the model as the only
    potential (the Python form of ``kind: torchmdnet``)."""
    from torchmd_plugins.torchmdnet import TorchMDNetPotential

    potential = TorchMDNetPotential(
        TorchMDNetPotential.Config(), sim.system, module=model
    )
    state = sim.state.select(list(range(n_replicas)))
    return Simulation(
        sim.system, potential, sim.integrator, state=state, seed=sim.seed + 1
    )


def label(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AMBER (energies (F,), forces (F, 22, 3), atomic numbers (22,)) in float64."""
    data = yaml.safe_load((HERE / "sample_amber.yaml").read_text())
    data["n_replicas"], data["precision"] = 1, "float64"
    sim = Simulation.from_config(parse_config(data, base_dir=HERE))
    energies, forces = [], []
    with torch.no_grad():
        for chunk in frames.split(256):
            e, f = sim.potential.energy_and_forces(State(positions=chunk))
            energies.append(e)
            forces.append(f)
    return torch.cat(energies), torch.cat(forces), sim.system.atomic_numbers


class Dataset:
    """Frames with AMBER labels (float32 for training), split once into train/val."""

    def __init__(self, z: torch.Tensor, seed: int) -> None:
        self.z = z
        self.x = torch.zeros(0, len(z), 3)
        self.energy = torch.zeros(0)
        self.forces = torch.zeros(0, len(z), 3)
        self.is_val = torch.zeros(0, dtype=torch.bool)
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, x: torch.Tensor, energy: torch.Tensor, forces: torch.Tensor) -> None:
        """Add frames; every tenth (at random) is held out for validation."""
        self.x = torch.cat([self.x, x.float()])
        self.energy = torch.cat([self.energy, energy.float()])
        self.forces = torch.cat([self.forces, forces.float()])
        held = torch.rand(len(x), generator=self.generator) < 0.1
        self.is_val = torch.cat([self.is_val, held])

    @property
    def train(self) -> torch.Tensor:
        return torch.nonzero(~self.is_val).flatten()

    @property
    def val(self) -> torch.Tensor:
        return torch.nonzero(self.is_val).flatten()


def new_model(data: Dataset) -> torch.nn.Module:
    """A TensorNet whose output is scaled to the training energies' mean and spread."""
    from torchmd_plugins.torchmdnet.models import import_torchmdnet

    tmn = (
        import_torchmdnet()
    )  # torchmdnet.models.model, with Warp's chatter turned down
    energy = data.energy[data.train]
    model: torch.nn.Module = tmn.create_model(
        dict(MODEL_ARGS), mean=energy.mean(), std=energy.std()
    )
    return model


def fit(
    model: torch.nn.Module, data: Dataset, epochs: float, lr: float
) -> dict[str, float]:
    """Adam on 0.05·MSE(E) + MSE(F), cosine-decayed from ``lr``; validation errors."""
    model.train()
    batch_size = 32
    train = data.train
    steps = max(1, round(epochs * math.ceil(len(train) / batch_size)))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 100)
    log(f"training on {len(train)} frames ({len(data.val)} held out), {steps} steps")
    t0, step, epoch = time.time(), 0, 0
    while step < steps:
        for idx in train[torch.randperm(len(train), generator=data.generator)].split(
            batch_size
        ):
            e_pred, f_pred = _predict(model, data.z, data.x[idx], create_graph=True)
            loss = 0.05 * (e_pred - data.energy[idx]).square().mean()
            loss = loss + (f_pred - data.forces[idx]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step == steps:
                break
        epoch += 1
        errors = validation_errors(model, data)
        log(
            f"  epoch {epoch:2d}  val energy MAE {errors['energy_mae']:.2f} kcal/mol, "
            f"force RMSE {errors['force_rmse']:.2f} kcal/mol/Å "
            f"({time.time() - t0:.0f} s)"
        )
    model.eval()
    return errors


def _predict(
    model: torch.nn.Module, z: torch.Tensor, x: torch.Tensor, create_graph: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    n_frames, n_atoms = x.shape[:2]
    pos = x.reshape(-1, 3).clone().requires_grad_(True)
    batch = torch.arange(n_frames).repeat_interleave(n_atoms)
    y, _ = model(z.repeat(n_frames), pos, batch, num_systems=n_frames)
    (grad,) = torch.autograd.grad(y.sum(), pos, create_graph=create_graph)
    return y.reshape(n_frames), -grad.reshape(n_frames, n_atoms, 3)


def validation_errors(model: torch.nn.Module, data: Dataset) -> dict[str, float]:
    """Energy MAE (kcal/mol) and force RMSE (kcal/mol/Å) on the held-out frames."""
    val = data.val
    e_pred, f_pred = [], []
    for chunk in val.split(128):
        ep, fp = _predict(model, data.z, data.x[chunk], create_graph=False)
        e_pred.append(ep.detach())
        f_pred.append(fp.detach())
    de = torch.cat(e_pred) - data.energy[val]
    df = torch.cat(f_pred) - data.forces[val]
    return {
        "energy_mae": float(de.abs().mean()),
        "force_rmse": float(df.square().mean().sqrt()),
    }


def save(model: torch.nn.Module, path: Path, errors: dict[str, float]) -> None:
    """A checkpoint ``load_model`` reads: hyper-parameters and float32 weights only."""
    state = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    payload = {
        "hyper_parameters": dict(MODEL_ARGS),
        "state_dict": state,
        "validation": errors,
    }
    torch.save(payload, path)
    log(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "ala2_tensornet.ckpt")
    parser.add_argument(
        "--steps", type=int, default=3000, help="AMBER MD steps per temperature"
    )
    parser.add_argument("--epochs", type=float, default=6.0, help="training epochs")
    parser.add_argument("--refine-steps", type=int, default=2000, help="model MD steps")
    parser.add_argument("--refine-epochs", type=float, default=2.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()

    sims = [
        amber_simulation(t, seed=args.seed + i) for i, t in enumerate((300.0, 600.0))
    ]
    frames = torch.cat([sample(sim, args.steps, interval=50) for sim in sims])
    energy, forces, z = label(frames)
    log(
        f"1. sampled {len(frames)} AMBER frames in {time.time() - t0:.0f} s: energies "
        f"{float(energy.min()):.0f} to {float(energy.max()):.0f} kcal/mol, force RMS "
        f"{float(forces.square().mean().sqrt()):.0f} kcal/mol/Å"
    )
    data = Dataset(z, args.seed)
    data.add(frames, energy, forces)
    model = new_model(data)
    log("2. training")
    fit(model, data, args.epochs, lr=2e-3)

    with torch.no_grad():
        frames = sample(with_model(sims[0], model, 16), args.refine_steps, interval=50)
    energy, forces, _ = label(frames)
    keep = energy < MAX_REFINE_ENERGY
    log(
        f"3. the model's own 300 K MD: {len(frames)} frames, AMBER energies up to "
        f"{float(energy.max()):.0f} kcal/mol; {int(keep.sum())} kept; refining"
    )
    data.add(frames[keep], energy[keep], forces[keep])
    errors = fit(model, data, args.refine_epochs, lr=5e-4)
    save(model, args.out, errors)
    log(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

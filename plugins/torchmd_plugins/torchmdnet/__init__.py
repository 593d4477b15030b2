"""Built-in plugin package: torchmdnet (TorchMD-NET potentials, ML/MM)."""

from torchmd_plugins.torchmdnet.potential import TorchMDNetPotential

__all__ = ["TorchMDNetPotential"]

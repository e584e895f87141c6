from lmadapt.methods.distill.config import DistillConfig
from lmadapt.methods.distill.method import Distill


def _command_group():
    """`lmadapt distill rationales | train` (mounted by the CLI from the registry)."""
    from lmadapt.methods.distill.cli import distill_app

    return distill_app


Distill.command_group = staticmethod(_command_group)

__all__ = ["Distill", "DistillConfig"]

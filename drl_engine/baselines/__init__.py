"""The first paper's baselines as model kinds: ae, vae, dae, cdae, simclr_gauss.

Each uses DRL's encoder architecture and latent size, trains through the registry and the
same trainer, and is encoded and probed by the same per-t protocol; none samples.
"""

from .losses import BASELINE_LOSSES, baseline_loss, nt_xent
from .model import BaselineModel
from .reconstructions import has_decoder, save_reconstructions

__all__ = ["BASELINE_LOSSES", "BaselineModel", "baseline_loss", "has_decoder", "nt_xent",
           "save_reconstructions"]

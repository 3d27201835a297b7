"""Networks: the score U-Net s_theta(x_t, t, z) and the encoder E_phi(x0[, t])."""

from .encoder import Encoder
from .layers import AttnBlock, Downsample, GaussianFourierEmbedding, ResBlock, Upsample, sinusoidal_embedding
from .unet import DownPath, ScoreUNet

__all__ = ["AttnBlock", "DownPath", "Downsample", "Encoder", "GaussianFourierEmbedding", "ResBlock",
           "ScoreUNet", "Upsample", "sinusoidal_embedding"]

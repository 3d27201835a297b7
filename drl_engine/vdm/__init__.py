"""A continuous-time Variational Diffusion Model (Kingma et al. 2021) and the VAE built on it.

`vdm_vae`: encoder q(z|x) = N(mu(x), sigma(x)^2), prior N(0, I), decoder a VDM whose
eps-network is conditioned on z; trained on the ELBO
    -log p(x) <= E_q(z|x)[ L_VDM(x | z) ] + KL(q(z|x) || N(0, I)),
    L_VDM = diffusion loss + prior loss + reconstruction loss,
reported in bits/dim. `vdm`: the same decoder without encoder.

Modules: pixels (8-bit values <-> [-1, 1]), schedule (gamma(t)), fourier (input features),
model (VDMModel), losses (the ELBO terms), sampling (ancestral sampler), evaluate (test-set
bits/dim).
"""

from .model import VDMModel

__all__ = ["VDMModel"]

"""The frame tokenizer (VQ-VAE): 128x72 frames <-> 32x18 token grids. See vq_vae/README.md."""
from vq_vae.checkpoint import VQVAE_FORMAT_VERSION, VQVAE_KIND, load_vqvae, save_vqvae, vqvae_identity
from vq_vae.model import VQVAE, VQVAEConfig

__all__ = ["VQVAE", "VQVAEConfig", "load_vqvae", "save_vqvae", "vqvae_identity", "VQVAE_KIND",
           "VQVAE_FORMAT_VERSION"]

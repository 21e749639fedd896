"""The three Follow-Your-Emoji networks (landmark guider, ReferenceNet, UNet3D with motion modules).

Plain ``nn.Module`` construction from frozen configs; state-dict keys and shapes are the official ones, so the
official checkpoints load unchanged with ``load_state_dict(strict=True)`` (no key mapping). Device, dtype, meta
construction and file formats are ``emoji_model.checkpoints``' concern: the builders only build (they work inside a
``torch.device("meta")`` context) and return modules in eval mode.
"""

from __future__ import annotations

from .config import (
    FULL,
    GuiderConfig,
    MotionModuleConfig,
    NetworkConfigs,
    UNet3DConfig,
    UNetConfig,
    guider_config_from_official,
    motion_config_from_official,
    unet_config_from_official,
)
from .guider import LandmarkGuider
from .motion import sinusoid_table
from .referencenet import ReferenceNet
from .speed import SpeedOptions
from .unet3d import PreparedConditions, UNet3D

__all__ = [
    "FULL",
    "GuiderConfig",
    "LandmarkGuider",
    "MotionModuleConfig",
    "NetworkConfigs",
    "PreparedConditions",
    "ReferenceNet",
    "SpeedOptions",
    "UNet3D",
    "UNet3DConfig",
    "UNetConfig",
    "build_guider",
    "build_referencenet",
    "build_unet3d",
    "guider_config_from_official",
    "motion_config_from_official",
    "sinusoid_table",
    "unet_config_from_official",
]


def build_guider(cfg: GuiderConfig = FULL.guider) -> LandmarkGuider:
    """Landmark images (B, 3, F, H, W) in [0, 1] → (B, 320, F, H/8, W/8)."""
    return LandmarkGuider(cfg).eval()


def build_referencenet(cfg: UNetConfig = FULL.referencenet) -> ReferenceNet:
    """Reference latent (B, 4, h, w), t, CLIP states (B, 257, 1024) → 16 norm1 features."""
    return ReferenceNet(cfg).eval()


def build_unet3d(cfg: UNet3DConfig = FULL.unet3d) -> UNet3D:
    """Denoiser: latents (B, 4, F, h, w), t, CLIP states, landmark features, reference features → (B, 4, F, h, w)."""
    return UNet3D(cfg).eval()

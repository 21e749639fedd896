"""Sizes of the three networks: frozen dataclasses, the official full size (``FULL``), and readers of official configs.

The official code builds both UNets from the sd-image-variations ``unet/config.json`` (a standard SD-1.x UNet) plus
``configs/infer.yaml``'s ``unet_additional_kwargs``; the landmark guider takes three keyword arguments. The readers
below accept exactly those dicts (e.g. the golden ``tiny_configs.json``) and refuse settings this port does not
implement, instead of silently building something else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The SD-1.x block layout, the only one the official code supports (it hard-codes the reference-feature routing).
_SD_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


@dataclass(frozen=True)
class UNetConfig:
    """The SD-1.x 2-D UNet skeleton both networks share; on its own it is the ReferenceNet's config.

    Levels ``0 .. n-2`` hold spatial transformers (cross-attention blocks), the deepest level holds only resnets,
    the up path mirrors it; the mid block has one transformer.
    """

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    num_attention_heads: int = 8  # diffusers' config calls it ``attention_head_dim`` (a naming quirk): heads
    cross_attention_dim: int = 768
    clip_dim: int = 1024  # ``clip_fc = Linear(clip_dim, cross_attention_dim)``, hard-coded 1024 → 768 officially
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0

    def __post_init__(self) -> None:
        if len(self.block_out_channels) < 2:
            raise ValueError(f"block_out_channels needs at least 2 levels, got {self.block_out_channels}")
        for channels in self.block_out_channels:
            if channels % self.num_attention_heads or channels % self.norm_num_groups:
                raise ValueError(
                    f"every width must divide into {self.num_attention_heads} heads and {self.norm_num_groups} "
                    f"groups, got {self.block_out_channels}"
                )

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    @property
    def num_transformers(self) -> int:
        """Spatial transformers in the whole UNet, i.e. ReferenceNet features (16 for SD-1.x)."""
        levels = len(self.block_out_channels) - 1
        return levels * self.layers_per_block + 1 + levels * (self.layers_per_block + 1)


@dataclass(frozen=True)
class MotionModuleConfig:
    """AnimateDiff v2 "Vanilla" motion module (``motion_module_kwargs`` in infer.yaml)."""

    num_attention_heads: int = 8
    num_transformer_blocks: int = 1
    num_attention_blocks: int = 2  # ("Temporal_Self", "Temporal_Self")
    max_frames: int = 32  # temporal_position_encoding_max_len: rows of the stored sinusoid table ``pe``
    norm_num_groups: int = 32  # hard-coded in the official TemporalTransformer3DModel
    norm_eps: float = 1e-6


@dataclass(frozen=True)
class UNet3DConfig:
    """The denoising UNet: the 2-D skeleton, every 2-D op applied per frame, plus a motion module per layer."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    motion: MotionModuleConfig = field(default_factory=MotionModuleConfig)

    def __post_init__(self) -> None:
        for channels in self.unet.block_out_channels:
            if channels % self.motion.norm_num_groups or channels % self.motion.num_attention_heads:
                raise ValueError(
                    f"motion modules need widths divisible by {self.motion.norm_num_groups} groups and "
                    f"{self.motion.num_attention_heads} heads, got {self.unet.block_out_channels}"
                )


@dataclass(frozen=True)
class GuiderConfig:
    """The landmark guider (``Guider(conditioning_embedding_channels, conditioning_channels, block_out_channels)``)."""

    conditioning_channels: int = 3
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)
    conditioning_embedding_channels: int = 320  # = the UNet's first width: its output is added after conv_in


@dataclass(frozen=True)
class NetworkConfigs:
    """The configs of the three networks together (``FULL``: the official full size)."""

    referencenet: UNetConfig
    unet3d: UNet3DConfig
    guider: GuiderConfig

    @classmethod
    def from_official(
        cls, unet_config: Mapping, unet_additional_kwargs: Mapping, guider_kwargs: Mapping
    ) -> NetworkConfigs:
        """From the official dicts: ``unet/config.json``, infer.yaml's ``unet_additional_kwargs``, Guider kwargs."""
        unet = unet_config_from_official(unet_config)
        return cls(
            referencenet=unet,
            unet3d=UNet3DConfig(unet=unet, motion=motion_config_from_official(unet_additional_kwargs)),
            guider=guider_config_from_official(guider_kwargs),
        )

    @classmethod
    def from_golden(cls, tiny_configs: Mapping) -> NetworkConfigs:
        """From the golden ``tiny_configs.json`` (the exact dicts the tiny official models were built from)."""
        # its key is "unet_base_config (sd-image-variations-diffusers/unet/config.json)"
        base = next(value for key, value in tiny_configs.items() if key.split()[0] == "unet_base_config")
        return cls.from_official(
            base,
            tiny_configs["unet"]["unet_additional_kwargs"],
            tiny_configs["lmk_guider"]["kwargs"],
        )


FULL = NetworkConfigs(referencenet=UNetConfig(), unet3d=UNet3DConfig(), guider=GuiderConfig())


def _require(what: str, value, expected) -> None:
    if value != expected:
        raise ValueError(f"unsupported {what}: {value!r} (this port implements {expected!r} only)")


def unet_config_from_official(config: Mapping) -> UNetConfig:
    """A diffusers ``UNet2DConditionModel`` config dict (sd-image-variations ``unet/config.json``) → UNetConfig."""
    down = tuple(t.replace("3D", "2D") for t in config.get("down_block_types", _SD_DOWN_BLOCKS))
    up = tuple(t.replace("3D", "2D") for t in config.get("up_block_types", _SD_UP_BLOCKS))
    _require("down_block_types", down, _SD_DOWN_BLOCKS)
    _require("up_block_types", up, _SD_UP_BLOCKS)
    _require("act_fn", config.get("act_fn", "silu"), "silu")
    _require("center_input_sample", config.get("center_input_sample", False), False)
    _require("use_linear_projection", config.get("use_linear_projection", False), False)
    _require("class_embed_type", config.get("class_embed_type"), None)
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    if not isinstance(heads, int):
        raise ValueError(f"per-level head counts are not supported: {heads!r}")
    return UNetConfig(
        in_channels=config.get("in_channels", 4),
        out_channels=config.get("out_channels", 4),
        block_out_channels=tuple(config["block_out_channels"]),
        layers_per_block=config.get("layers_per_block", 2),
        num_attention_heads=heads,
        cross_attention_dim=config.get("cross_attention_dim", 768),
        norm_num_groups=config.get("norm_num_groups", 32),
        norm_eps=config.get("norm_eps", 1e-5),
        flip_sin_to_cos=config.get("flip_sin_to_cos", True),
        freq_shift=config.get("freq_shift", 0),
        downsample_padding=config.get("downsample_padding", 1),
        mid_block_scale_factor=config.get("mid_block_scale_factor", 1.0),
    )


def motion_config_from_official(kwargs: Mapping) -> MotionModuleConfig:
    """infer.yaml's ``unet_additional_kwargs`` → MotionModuleConfig (refusing the variants not implemented)."""
    _require("use_motion_module", kwargs.get("use_motion_module"), True)
    _require("motion_module_type", kwargs.get("motion_module_type"), "Vanilla")
    _require("motion_module_mid_block", kwargs.get("motion_module_mid_block"), True)
    _require("motion_module_decoder_only", kwargs.get("motion_module_decoder_only", False), False)
    _require("motion_module_resolutions", sorted(kwargs.get("motion_module_resolutions", ())), [1, 2, 4, 8])
    _require("use_inflated_groupnorm", kwargs.get("use_inflated_groupnorm"), True)
    _require("unet_use_cross_frame_attention", bool(kwargs.get("unet_use_cross_frame_attention")), False)
    _require("unet_use_temporal_attention", bool(kwargs.get("unet_use_temporal_attention")), False)
    _require("attention_mode", kwargs.get("attention_mode"), "SpatialAtten")
    mm = kwargs.get("motion_module_kwargs", {})
    types = tuple(mm.get("attention_block_types", ("Temporal_Self", "Temporal_Self")))
    if not types or any(t != "Temporal_Self" for t in types):
        raise ValueError(f"unsupported attention_block_types {types!r} (only 'Temporal_Self')")
    _require("temporal_position_encoding", mm.get("temporal_position_encoding"), True)
    _require("temporal_attention_dim_div", mm.get("temporal_attention_dim_div", 1), 1)
    return MotionModuleConfig(
        num_attention_heads=mm.get("num_attention_heads", 8),
        num_transformer_blocks=mm.get("num_transformer_block", 1),
        num_attention_blocks=len(types),
        max_frames=mm.get("temporal_position_encoding_max_len", 32),
    )


def guider_config_from_official(kwargs: Mapping) -> GuiderConfig:
    return GuiderConfig(
        conditioning_channels=kwargs.get("conditioning_channels", 3),
        block_out_channels=tuple(kwargs.get("block_out_channels", (16, 32, 64, 128))),
        conditioning_embedding_channels=kwargs["conditioning_embedding_channels"],
    )

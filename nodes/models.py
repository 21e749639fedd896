"""The Follow-Your-Emoji networks as a ComfyUI model, and ComfyUI's own VAE / CLIP_VISION as the library's encoders.

``FYE_MODEL`` is a ``comfy.model_patcher.ModelPatcher`` around the library's ``FollowYourEmojiNetworks`` (one
``nn.Module``), so ComfyUI's memory manager moves it to the GPU for a run and offloads it when other models need the
room, like any checkpoint. ``networks()`` loads it and hands the module to the library.

What ComfyUI 0.3.75 does, read in its source, and how the adapters below meet the library's contract:

- ``VAE.encode(pixels)`` (``comfy/sd.py``) takes IMAGE layout (B, H, W, C) in [0, 1], applies its own
  ``process_input`` (2x − 1 for the SD VAE), and returns the **raw, unscaled** latent on the CPU in float32. For the
  SD VAE (``AutoencoderKL``) the latent is the posterior's **mode = mean**: ``DiagonalGaussianRegularizer(sample=
  False)`` returns ``posterior.mode()``, no sampling (``comfy/ldm/models/autoencoder.py``). The 0.18215 factor is not
  applied by the VAE but by a model's ``latent_format.process_in`` in the samplers. For TAESD, ``encode`` divides by
  ``vae_scale`` = 0.18215, i.e. also returns raw-scale latents. So ``vae_encode`` maps the library's [−1, 1] input
  back to [0, 1] and passes ComfyUI's result through unchanged: the RAW MEAN the library asks for.
- ``ClipVisionModel.encode_image`` resizes with torch bicubic+antialias; the official preprocessing is PIL's. So
  ``clip_encode`` loads the patcher and calls the underlying ``CLIPVisionModelProjection`` on the library's already
  normalised pixels. Its ``forward`` returns ``(x, intermediate, pooled, projected)`` where ``x`` is the output of the
  last encoder layer; ``post_layernorm`` is applied only to the pooled class token (``output_layernorm`` is False for
  CLIP, True only for SigLIP) (``comfy/clip_model.py``). Index 0 is therefore ``last_hidden_state`` before
  ``post_layernorm`` — the tensor the official pipeline uses (it is also what ``encode_image`` returns as
  ``last_hidden_state``). No intermediate layer is needed (``intermediate_output=None``).
"""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_management
import comfy.model_patcher
import torch

from ..emoji_model import checkpoints
from ..emoji_model.encoders import VIT_L14_CONFIG
from ..emoji_model.errors import ModelFileError
from ..emoji_model.model_files import LAYOUTS
from ..emoji_model.reference import VAE_SCALE_FACTOR
from .model_paths import (
    NONE,
    check_model_folder,
    model_folder_choices,
    model_folder_path,
    weight_file_choices,
    weight_file_path,
)

DTYPES = ("auto", *checkpoints.DTYPES)
CLIP_WIDTH, CLIP_SIZE = VIT_L14_CONFIG["hidden_size"], VIT_L14_CONFIG["image_size"]  # the clip_fc input width, px

Encoder = Callable[[torch.Tensor], torch.Tensor]


class FYE_LoadModel:
    """Load the Follow-Your-Emoji networks (ReferenceNet, UNet3D with motion modules, landmark guider)."""

    DESCRIPTION = __doc__
    CATEGORY = "FollowYourEmoji/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("FYE_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The three networks, managed by ComfyUI's memory manager (loaded to the GPU when sampling).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    model_folder_choices(),
                    {
                        "tooltip": f"A folder in models/followyouremoji holding {LAYOUTS}.",
                    },
                ),
                "dtype": (
                    list(DTYPES),
                    {
                        "default": "auto",
                        "tooltip": "Weight precision. auto: ComfyUI's choice for a UNet on this device "
                        "(fp16 on most GPUs, fp32 on CPU).",
                    },
                ),
            },
            "optional": {
                "base_unet": (
                    weight_file_choices(),
                    {
                        "default": NONE,
                        "tooltip": "Base SD UNet weights under the Follow-Your-Emoji files (none: the folder's "
                        "sd-image-variations-diffusers/unet, if any). The Follow-Your-Emoji files override "
                        "them, so this is rarely needed.",
                    },
                ),
                "motion_module": (
                    weight_file_choices(),
                    {
                        "default": NONE,
                        "tooltip": "AnimateDiff v2 motion module (mm_sd_v15_v2) from models/followyouremoji or "
                        "models/animatediff_models. none: the folder's own, if any; needed only when the UNet "
                        "file has no motion-module weights.",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model):  # the optional files: ComfyUI's own "not in list" check
        return check_model_folder(model) or True

    def load(self, model, dtype, base_unet=NONE, motion_module=NONE):
        load_device = comfy.model_management.get_torch_device()
        offload_device = comfy.model_management.unet_offload_device()
        networks = checkpoints.load_follow_your_emoji(
            model_folder_path(model),
            dtype=network_dtype(dtype, load_device),
            device=offload_device,
            base_unet=weight_file_path(base_unet),
            motion_module=weight_file_path(motion_module),
        )
        return (comfy.model_patcher.ModelPatcher(networks, load_device=load_device, offload_device=offload_device),)


def network_dtype(choice: str, load_device: torch.device) -> torch.dtype:
    """The chosen dtype; ``auto``: what ComfyUI picks for a UNet on ``load_device`` (honours --fp16-unet etc.)."""
    if choice != "auto":
        return checkpoints.DTYPES[choice]
    return comfy.model_management.unet_dtype(
        load_device, supported_dtypes=[torch.float16, torch.bfloat16, torch.float32]
    )


def networks(model: comfy.model_patcher.ModelPatcher) -> checkpoints.FollowYourEmojiNetworks:
    """The networks on their load device, through ComfyUI's memory manager. Loaded fully: they are plain torch
    modules without ComfyUI's cast-on-the-fly layers, so a partial (low-VRAM) load would leave weights behind."""
    comfy.model_management.load_models_gpu([model], force_full_load=True)
    return model.model


def vae_encoder(vae) -> Encoder:
    """The library's ``vae_encode``: (1, 3, H, W) in [−1, 1] → the raw latent mean (1, 4, H/8, W/8), float32."""
    if vae.latent_channels != 4 or vae.spacial_compression_encode() != VAE_SCALE_FACTOR:
        raise ModelFileError(
            f"Follow-Your-Emoji needs an SD 1.x VAE (4 latent channels, {VAE_SCALE_FACTOR}× smaller), e.g. "
            f"sd-vae-ft-mse; this VAE has {vae.latent_channels} channels, {vae.spacial_compression_encode()}×."
        )

    def encode(x: torch.Tensor) -> torch.Tensor:
        pixels = x.movedim(1, -1).add(1.0).div(2.0)  # (1, H, W, 3) in [0, 1], ComfyUI's IMAGE layout
        return vae.encode(pixels)

    return encode


def clip_encoder(clip_vision) -> Encoder:
    """The library's ``clip_encode``: normalised (1, 3, 224, 224) pixels → (1, 257, 1024) ``last_hidden_state``
    before ``post_layernorm``, float32, computed by ComfyUI's own CLIP vision model (see the module docstring)."""
    width = _clip_width(clip_vision)
    if width != CLIP_WIDTH or clip_vision.image_size != CLIP_SIZE:
        raise ModelFileError(
            f"Follow-Your-Emoji needs the CLIP ViT-L/14 image encoder ({CLIP_WIDTH} wide, {CLIP_SIZE} px; "
            "sd-image-variations-diffusers/image_encoder) in CLIPVisionLoader; this one is "
            f"{type(clip_vision.model).__name__}, width {width}, {clip_vision.image_size} px."
        )

    def encode(pixel_values: torch.Tensor) -> torch.Tensor:
        comfy.model_management.load_model_gpu(clip_vision.patcher)
        hidden = clip_vision.model(
            pixel_values=pixel_values.to(clip_vision.load_device, torch.float32), intermediate_output=None
        )[0]
        return hidden.to(comfy.model_management.intermediate_device(), torch.float32)

    return encode


def _clip_width(clip_vision) -> int | None:
    """The CLIP's hidden width from its class embedding; None for what has none (SigLIP, DINOv2)."""
    embeddings = getattr(getattr(clip_vision.model, "vision_model", None), "embeddings", None)
    class_embedding = getattr(embeddings, "class_embedding", None)
    return None if class_embedding is None else class_embedding.shape[-1]


NODE_CLASS_MAPPINGS = {"FYE_LoadModel": FYE_LoadModel}
NODE_DISPLAY_NAME_MAPPINGS = {"FYE_LoadModel": "Follow-Your-Emoji Model Loader"}

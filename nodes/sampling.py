"""Nodes for the diffusion half of Follow-Your-Emoji: encode the portrait once, then sample the animation's latents.

The sampler takes the retargeted ``FYE_MOTION`` from *Align Landmarks*, not an IMAGE of drawings: the drawings are
then made here in exactly the style the networks were trained on (1-px lines, pupils as 6×6 red squares — a resized
or filtered drawing is out of distribution), always at the portrait's pixel grid, and lazily, one window's frames
at a time, instead of a float32 IMAGE of every drawing held in the graph. Align's ``images`` output shows them.
"""

from __future__ import annotations

from ..emoji_model.errors import InputImageError
from ..emoji_model.landmarks.draw import Drawings
from ..emoji_model.reference import VAE_SCALE_FACTOR
from ..emoji_model.sampling import animate
from ..emoji_model.sampling.context import MAX_WINDOW, WEIGHTS
from ..emoji_model.sampling.schedule import SUGGESTED_STEPS, scheduler_names
from .convert import to_latent
from .models import clip_encoder, networks, vae_encoder
from .progress import sampling_callback

CATEGORY = "FollowYourEmoji/animation"
DEFAULTS = animate.SamplingOptions()


class FYE_EncodeReference:
    """Encode the portrait once: its VAE latent, CLIP image tokens and ReferenceNet features."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("FYE_REFERENCE",)
    RETURN_NAMES = ("reference",)
    OUTPUT_TOOLTIPS = ("The encoded portrait, reused by every window of every sampling step.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {
                    "tooltip": "The portrait as the model sees it: Crop Portrait's portrait (the first image of a "
                               "batch). Its size is the video's; each side a multiple of 8.",
                }),
                "vae": ("VAE", {"tooltip": "The SD 1.x VAE (sd-vae-ft-mse) from Load VAE."}),
                "clip_vision": ("CLIP_VISION", {
                    "tooltip": "The CLIP ViT-L/14 image encoder (sd-image-variations-diffusers/image_encoder) from "
                               "Load CLIP Vision.",
                }),
                "model": ("FYE_MODEL", {"tooltip": "The Follow-Your-Emoji networks from its model loader."}),
            }
        }

    def encode(self, image, vae, clip_vision, model):
        height, width = image.shape[1:3]
        if width % VAE_SCALE_FACTOR or height % VAE_SCALE_FACTOR:
            raise InputImageError(
                f"The portrait is {width}×{height}; the model needs each side a multiple of {VAE_SCALE_FACTOR}. "
                "Connect Crop Portrait's portrait output (framing crop or fit gives its size × size).")
        latent, clip_states = animate.encode_portrait(
            image[0], vae_encode=vae_encoder(vae), clip_encode=clip_encoder(clip_vision), width=width, height=height,
        )  # first: loading the VAE and the CLIP may offload the networks
        return (animate.reference_features(networks(model), latent, clip_states),)


class FYE_Sample:
    """Sample the animation: the portrait follows the retargeted landmarks, in context windows of ≤ 32 frames."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("One latent per motion frame (SD 1.x VAE latents): decode with VAE Decode and the same VAE.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("FYE_MODEL", {"tooltip": "The Follow-Your-Emoji networks."}),
                "reference": ("FYE_REFERENCE", {"tooltip": "The portrait, from Encode Portrait."}),
                "motion": (
                    "FYE_MOTION",
                    {
                        "tooltip": "The retargeted landmarks from Align Landmarks: one "
                        "output frame per motion frame, drawn at the portrait's size."
                    },
                ),
                "steps": (
                    "INT",
                    {"default": DEFAULTS.steps, "min": 1, "max": 1000, "tooltip": "DDIM steps (official: 30)."},
                ),
                "cfg": (
                    "FLOAT",
                    {
                        "default": DEFAULTS.cfg,
                        "min": 1.0,
                        "max": 20.0,
                        "step": 0.1,
                        "round": 0.01,
                        "tooltip": "Guidance towards the portrait (official: 3.5). 1 = no guidance: one "
                        "pass per window, twice as fast.",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": DEFAULTS.seed,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                        "tooltip": "Seed of the initial noise (official: 12580, drawn as the official draws it).",
                    },
                ),
                "windows": (
                    list(animate.WINDOW_MODES),
                    {
                        "default": DEFAULTS.windows,
                        "tooltip": "overlap: overlapping windows that shift every step, blended (no fixed seams). "
                        "official: side by side, the last one wrapping to the start (the official pipeline). "
                        "progressive: keyframes first, then the frames between them (the paper's strategy "
                        "for long videos).",
                    },
                ),
                "window_length": (
                    "INT",
                    {
                        "default": DEFAULTS.window_length,
                        "min": 1,
                        "max": MAX_WINDOW,
                        "tooltip": f"Frames per window; at most {MAX_WINDOW}, the motion module's "
                        "positional encoding (official: 24).",
                    },
                ),
                "overlap": (
                    "INT",
                    {
                        "default": DEFAULTS.overlap,
                        "min": 0,
                        "max": MAX_WINDOW - 1,
                        "tooltip": "Frames shared by neighbouring windows (overlap, progressive); less "
                        "than window_length.",
                    },
                ),
                "fusion": (
                    list(WEIGHTS),
                    {
                        "default": DEFAULTS.fusion,
                        "tooltip": "How overlapping windows are blended: pyramid (middle frames "
                        "count more), flat (plain average), linear (ramps over the "
                        "overlap).",
                    },
                ),
                "loop": (
                    "BOOLEAN",
                    {
                        "default": DEFAULTS.loop,
                        "tooltip": "overlap: let windows wrap from the end to the start, for a driving "
                        "video that loops.",
                    },
                ),
                "keyframe_stride": (
                    "INT",
                    {
                        "default": DEFAULTS.keyframe_stride,
                        "min": 1,
                        "max": 64,
                        "tooltip": "progressive: every k-th frame (and the last) is a keyframe.",
                    },
                ),
            },
            "optional": {  # optional: graphs saved before these existed stay valid
                "scheduler": (
                    list(scheduler_names()),
                    {
                        "default": DEFAULTS.scheduler,
                        "tooltip": "The solver: ddim is the official one. "
                        + ", ".join(f"{name} ≈ {n} steps" for name, n in SUGGESTED_STEPS.items())
                        + " reach DDIM-30's accuracy on a closed-form test (bench/steps.py): fewer steps, "
                        "fewer UNet calls.",
                    },
                ),
                "compile": (
                    "BOOLEAN",
                    {
                        "default": DEFAULTS.compile,
                        "tooltip": "Run the UNet through torch.compile: slow first step (compiling), faster after; "
                        "if compiling fails it runs as usual, with one warning in the console.",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, window_length):  # one input: ComfyUI repeats the message for each input named here
        return check_window_length(window_length) or True

    def sample(
        self, model, reference, motion, steps, cfg, seed, windows, window_length, overlap, fusion, loop, keyframe_stride,
        scheduler=DEFAULTS.scheduler, compile=DEFAULTS.compile,
    ):
        check_same_size(reference, motion)
        options = animate.SamplingOptions(
            steps=steps,
            cfg=cfg,
            seed=seed,
            windows=windows,
            window_length=window_length,
            overlap=overlap,
            fusion=fusion,
            loop=loop,
            keyframe_stride=keyframe_stride,
            scheduler=scheduler,
            compile=compile,
        )
        drawings = Drawings(motion)  # lazy: each window's frames are drawn when the sampler reads them
        latents = animate.sample(networks(model), reference, drawings, options, callback=sampling_callback())
        return (to_latent(latents),)


def check_window_length(window_length) -> str | None:
    """The graph check: the library's message for a window longer than the motion module knows (None when fine or
    linked). The overlap, which only some window modes use, is checked with the mode when the node runs."""
    if window_length is None:
        return None
    try:
        animate.check_options(animate.SamplingOptions(window_length=window_length, overlap=0))
    except ValueError as exc:
        return str(exc)
    return None


def check_same_size(reference: animate.Reference, motion) -> None:
    """``InputImageError`` saying how to fix it when the motion's drawings would not match the encoded portrait."""
    if (motion.width, motion.height) == (reference.width, reference.height):
        return
    raise InputImageError(
        f"The motion is drawn at {motion.width}×{motion.height} (the portrait its landmarks came from) but the "
        f"reference was encoded at {reference.width}×{reference.height}. Give Encode Portrait and Align Landmarks "
        "the same portrait: Crop Portrait's portrait and landmarks outputs."
    )


NODE_CLASS_MAPPINGS = {
    "FYE_EncodeReference": FYE_EncodeReference,
    "FYE_Sample": FYE_Sample,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FYE_EncodeReference": "Follow-Your-Emoji Encode Portrait",
    "FYE_Sample": "Follow-Your-Emoji Sampler",
}

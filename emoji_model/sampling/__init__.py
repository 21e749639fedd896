"""Sampling without a model: the official DDIM schedule (``schedule``), context windows and their fusion
(``context``), the progressive keyframes-first plan (``progressive``) and window samplers taking the denoiser as
an opaque callable (``sampler``). No ComfyUI, no network, no weights."""

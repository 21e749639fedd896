"""Sampling: the official DDIM schedule (``schedule``), context windows and their fusion (``context``), the
progressive keyframes-first plan (``progressive``) and window samplers taking the denoiser as an opaque callable
(``sampler``) — these know no model — plus the Follow-Your-Emoji denoiser with guidance (``denoiser``) and the
host-facing composition ``encode_reference`` / ``sample`` / ``decode`` (``animate``). No ComfyUI, no file loading."""

"""Weight files → networks (emoji_model.checkpoints, checkpoint_formats, model_files): every supported format is written here from tiny networks,
loaded through the public functions and compared with what was written; every bad input gets its clear error."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from emoji_model.checkpoint_formats import (
    CONVERTERS,
    detect_format,
    is_motion_key,
    is_positional_encoding,
    read_state_dict,
)
from emoji_model.checkpoints import (
    load_follow_your_emoji,
    load_guider,
    load_referencenet,
    load_unet3d,
    load_weights,
)
from emoji_model.errors import ModelFileError
from emoji_model.model_files import find_model_files
from emoji_model.networks import (
    FULL,
    GuiderConfig,
    MotionModuleConfig,
    NetworkConfigs,
    UNet3DConfig,
    UNetConfig,
    build_guider,
    build_referencenet,
    build_unet3d,
    sinusoid_table,
)

# Small enough to build in a blink, yet every official key (the SD-1.x block layout is fixed); no ../shared needed.
_UNET = UNetConfig(block_out_channels=(32, 32, 32, 64), num_attention_heads=4, norm_num_groups=16,
                   cross_attention_dim=32, clip_dim=16)
TINY = NetworkConfigs(
    referencenet=_UNET,
    unet3d=UNet3DConfig(unet=_UNET, motion=MotionModuleConfig(num_attention_heads=4)),
    guider=GuiderConfig(block_out_channels=(8, 16, 24, 32), conditioning_embedding_channels=32),
)


@pytest.fixture(scope="module")
def weights() -> dict[str, dict[str, torch.Tensor]]:
    """Random fp32 weights of the three tiny networks, exactly representable in fp16 (``pe``: the sinusoid)."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, module in (("referencenet", build_referencenet(TINY.referencenet)),
                         ("unet", build_unet3d(TINY.unet3d)), ("guider", build_guider(TINY.guider))):
        out[name] = {k: v if is_positional_encoding(k) else (0.02 * torch.randn(v.shape, generator=g)).half().float()
                     for k, v in module.state_dict().items()}
    return out


def save(sd: dict, path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path


def assert_loaded(module, written: dict, dtype=torch.float32) -> None:
    loaded = module.state_dict()
    assert set(loaded) == set(written)
    for key, value in written.items():
        assert loaded[key].dtype == dtype and loaded[key].device.type == "cpu", key
        assert torch.equal(loaded[key], value.to(dtype)), key
    assert not any(p.requires_grad or p.is_meta for p in module.parameters()) and not module.training


def without_motion(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if not is_motion_key(k)}


def only_motion(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if is_motion_key(k)}


def base_unet(sd: dict) -> dict:
    """A diffusers-layout SD UNet (the sd-image-variations ``unet/``) from a UNet3D state dict, with other values."""
    return {k: torch.full_like(v, 0.5) for k, v in without_motion(sd).items() if not k.startswith("clip_fc.")}


# ---- every format, loaded and compared ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_official_files_load_exactly(tmp_path, weights, suffix):
    unet = load_unet3d(save(weights["unet"], tmp_path / f"unet{suffix}"), config=TINY.unet3d)
    referencenet = load_referencenet(save(weights["referencenet"], tmp_path / f"referencenet{suffix}"),
                                     config=TINY.referencenet)
    guider = load_guider(save(weights["guider"], tmp_path / f"lmk_guider{suffix}"))  # sizes read from the file
    assert_loaded(unet, weights["unet"])
    assert_loaded(referencenet, weights["referencenet"])
    assert_loaded(guider, weights["guider"])
    assert guider.config == TINY.guider


def test_official_folder(tmp_path, weights):
    for name, stem in (("referencenet", "referencenet"), ("unet", "unet"), ("guider", "lmk_guider")):
        save(weights[name], tmp_path / "follow-your-emoji" / f"{stem}.pth")
    networks = load_follow_your_emoji(tmp_path, configs=TINY)
    assert networks.files.layout == "official" and networks.files.motion_module is None
    assert_loaded(networks.unet, weights["unet"])
    assert_loaded(networks.referencenet, weights["referencenet"])
    assert_loaded(networks.guider, weights["guider"])


@pytest.mark.parametrize("dtype", [torch.float32, "fp16", "bf16"])
def test_community_fp16_folder(tmp_path, weights, dtype):
    """kijai's re-export: the official keys, unprefixed, every tensor fp16; fp16 into an fp32 model is upcast."""
    half = {name: {k: v.half() for k, v in sd.items()} for name, sd in weights.items()}
    save(half["referencenet"], tmp_path / "FYE_referencenet-fp16.safetensors")
    save(half["unet"], tmp_path / "FYE_unet-fp16.safetensors")
    save(half["guider"], tmp_path / "FYE_lmk_guider.safetensors")
    save({"weight": half["unet"]["clip_fc.weight"], "bias": half["unet"]["clip_fc.bias"]},
         tmp_path / "FYE_clip_fc.safetensors")  # present in the community folder, not needed
    networks = load_follow_your_emoji(tmp_path, configs=TINY, dtype=dtype)
    expected = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype, dtype)
    assert networks.files.layout == "community"
    assert_loaded(networks.unet, half["unet"], expected)
    assert_loaded(networks.referencenet, half["referencenet"], expected)
    assert_loaded(networks.guider, half["guider"], expected)


def test_base_unet_then_motion_module_then_fye(tmp_path, weights):
    """The official order: base SD UNet, AnimateDiff on top, the FYE file last; only what the FYE file lacks (the
    motion modules) comes from the AnimateDiff file, and the base values are all overridden."""
    unet, ref = weights["unet"], weights["referencenet"]
    base = save(base_unet(unet), tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    motion = save({"state_dict": only_motion(unet), "global_step": 1}, tmp_path / "mm_sd_v15_v2.ckpt")
    fye = save(without_motion(unet), tmp_path / "unet.pth")
    assert_loaded(load_unet3d(fye, base=base, motion_module=motion, config=TINY.unet3d), unet)
    # The base holds conv_out and the whole last transformer block, which a ReferenceNet lacks: set aside by name.
    assert_loaded(load_referencenet(save(ref, tmp_path / "referencenet.pth"), base=base, config=TINY.referencenet), ref)


def test_fye_file_wins_over_motion_module(tmp_path, weights):
    unet = weights["unet"]
    motion = save({k: torch.zeros_like(v) for k, v in only_motion(unet).items()}, tmp_path / "mm.safetensors")
    assert_loaded(load_unet3d(save(unet, tmp_path / "unet.pth"), motion_module=motion, config=TINY.unet3d), unet)


def test_diffusers_motion_adapter(tmp_path, weights):
    """A MotionAdapter-layout file, made with diffusers' own AnimateDiff converter (which drops the ``pe`` tables)."""
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    unet = weights["unet"]
    adapter = save(convert_animatediff_checkpoint_to_diffusers(only_motion(unet)), tmp_path / "adapter.safetensors")
    assert_loaded(load_unet3d(save(without_motion(unet), tmp_path / "unet.pth"), motion_module=adapter,
                              config=TINY.unet3d), unet)


def test_missing_positional_tables_are_computed(tmp_path, weights):
    unet = weights["unet"]
    no_pe = {k: v for k, v in unet.items() if not is_positional_encoding(k)}
    loaded = load_unet3d(save(no_pe, tmp_path / "unet.safetensors"), config=TINY.unet3d).state_dict()
    tables = [k for k in unet if is_positional_encoding(k)]
    assert len(tables) == 42
    for key in tables:
        assert torch.equal(loaded[key], sinusoid_table(32, unet[key].shape[-1])), key


@pytest.mark.parametrize("wrap", ["state_dict", "module_prefix", "legacy_pickle"])
def test_wrapped_files(tmp_path, weights, wrap):
    guider = weights["guider"]
    path = tmp_path / "lmk_guider.pth"
    if wrap == "state_dict":
        torch.save({"state_dict": guider, "epoch": 3}, path)
    elif wrap == "module_prefix":
        torch.save({f"module.{k}": v for k, v in guider.items()}, path)
    else:
        torch.save(guider, path, _use_new_zipfile_serialization=False)
    assert_loaded(load_guider(path), guider)


def test_converters_do_not_mutate_their_input(weights):
    for name, convert in CONVERTERS.items():
        sd = dict(weights["unet"])
        before = list(sd.items())
        convert(sd)
        assert list(sd.items()) == before, name


# ---- full-size key sets, on the meta device -------------------------------------------------------------------------


def test_full_size_base_unet_fills_both_networks():
    """diffusers' own SD-1.x UNet2DConditionModel keys (sd-image-variations) name every non-motion UNet3D weight
    but ``clip_fc``, and every ReferenceNet weight but ``clip_fc`` once the unused ones are set aside."""
    from diffusers import UNet2DConditionModel

    from emoji_model.checkpoint_formats import UNUSED_BY_REFERENCENET

    with torch.device("meta"):
        base = CONVERTERS["diffusers_unet"](UNet2DConditionModel(cross_attention_dim=768).state_dict())
        unet, ref = build_unet3d(FULL.unet3d).state_dict(), build_referencenet(FULL.referencenet).state_dict()
    assert detect_format(base) == "diffusers_unet"
    assert set(base) == {k for k in unet if not is_motion_key(k)} - {"clip_fc.weight", "clip_fc.bias"}
    assert all(base[k].shape == unet[k].shape for k in base)
    unused = {k for k in base if k.startswith(UNUSED_BY_REFERENCENET) and k not in ref}
    assert set(base) - unused == set(ref) - {"clip_fc.weight", "clip_fc.bias"}
    assert len(unused) == 22  # conv_norm_out, conv_out (4) and 18 keys of the last transformer block


def test_full_size_motion_adapter_matches_animatediff_keys(shared_dir):
    """diffusers' MotionAdapter (v1-5-2 layout) converts to exactly the keys and shapes of mm_sd_v15_v2.ckpt."""
    import json

    from diffusers import MotionAdapter

    with torch.device("meta"):
        adapter = MotionAdapter(motion_max_seq_length=32).state_dict()
    assert detect_format(adapter) == "motion_adapter"
    ours = CONVERTERS["motion_adapter"](adapter)
    manifest = json.loads((shared_dir / "spec" / "manifests" / "manifest_motion_module_subset.json").read_text())
    assert {k: list(v.shape) for k, v in ours.items()} == manifest["keys"]


# ---- bad inputs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(tmp_path, weights, suffix):
    path = save(weights["guider"], tmp_path / f"lmk_guider{suffix}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match=r"lmk_guider.* is truncated or"):
        load_guider(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_with_code_is_refused_not_run(tmp_path, weights, writer):
    marker, path = tmp_path / "code-was-run", tmp_path / "lmk_guider.pth"
    payload = {"payload": _RunsCode(marker), **weights["guider"]}  # the code comes first
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)  # a plain pickle: torch's legacy (non-zip) path
    with pytest.raises(ModelFileError, match=r"lmk_guider.pth is a pickle that wants to run code .*system.* refused"):
        load_guider(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_unreadable_file_is_reported_as_such_not_as_a_bad_download(tmp_path, weights, suffix, monkeypatch):
    """A permission (or disk) error names the system's reason; safetensors alone would call it "not found"."""
    import builtins

    path = save(weights["guider"], tmp_path / f"lmk_guider{suffix}")
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(ModelFileError, match=rf"Cannot read .*lmk_guider{suffix}: Permission denied$") as error:
        load_guider(path)
    assert "truncated" not in str(error.value) and "download" not in str(error.value)


def _vae_file(path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",))
    return save(vae.state_dict(), path)


def _clip_file(path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                                          num_attention_heads=2, image_size=16, patch_size=8))
    return save(clip.state_dict(), path)


@pytest.mark.parametrize(("slot", "make", "message"), [
    ("unet", lambda w, p: _vae_file(p), "looks like a VAE, not a UNet3D file"),
    ("referencenet", lambda w, p: _clip_file(p), "looks like a CLIP image encoder, not a ReferenceNet file"),
    ("unet", lambda w, p: save({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, p),
     "looks like a whole Stable Diffusion checkpoint in the original \\(ldm\\) layout, not a UNet3D"),
    ("referencenet", lambda w, p: save(w["unet"], p), "looks like a Follow-Your-Emoji denoising UNet"),
    ("unet", lambda w, p: save(w["guider"], p), "looks like a Follow-Your-Emoji landmark guider"),
    ("guider", lambda w, p: save({"weight": torch.zeros(32, 16), "bias": torch.zeros(32)}, p), "lone clip_fc"),
    ("guider", lambda w, p: save({"foo.weight": torch.zeros(1)}, p), "no format this pack knows.*foo.weight"),
])
def test_wrong_file_for_the_slot(tmp_path, weights, slot, make, message):
    path = make(weights, tmp_path / "file.safetensors")
    load = {"unet": lambda: load_unet3d(path, config=TINY.unet3d),
            "referencenet": lambda: load_referencenet(path, config=TINY.referencenet),
            "guider": lambda: load_guider(path, config=TINY.guider)}[slot]
    with pytest.raises(ModelFileError, match=message):
        load()


def test_unet_without_motion_modules_needs_a_motion_module(tmp_path, weights):
    path = save(without_motion(weights["unet"]), tmp_path / "unet.pth")
    with pytest.raises(ModelFileError) as error:
        load_unet3d(path, config=TINY.unet3d)
    message = str(error.value)
    assert "unet.pth has no motion-module weights" in message and "mm_sd_v15_v2.ckpt" in message
    assert "546 missing" in message  # 588 motion-module keys, of which 42 are computable tables


def test_animatediff_v1_module_is_named(tmp_path, weights):
    """mm_sd_v15.ckpt (v1): 24 positions and no mid-block module."""
    v1 = {k: v[:, :24] if is_positional_encoding(k) else v for k, v in only_motion(weights["unet"]).items()
          if not k.startswith("mid_block.")}
    motion = save(v1, tmp_path / "mm_sd_v15.ckpt")
    with pytest.raises(ModelFileError, match=r"(?s)v1 has no mid-block module.*missing.*mid_block.*mis-shaped.*24"):
        load_unet3d(save(without_motion(weights["unet"]), tmp_path / "unet.pth"), motion_module=motion,
                    config=TINY.unet3d)


def test_misshaped_key(tmp_path, weights):
    sd = {**weights["guider"], "conv_in.bias": torch.zeros(9)}
    with pytest.raises(ModelFileError, match=r"(?s)1 mis-shaped key.*conv_in.bias: \(9,\) .* in lmk_guider.pth, "
                                             r"the model has \(8,\)"):
        load_guider(save(sd, tmp_path / "lmk_guider.pth"), config=TINY.guider)


def test_unexpected_and_missing_keys_in_one_error(tmp_path, weights):
    sd = dict(weights["referencenet"])
    sd["down_blocks.0.extra.weight"] = torch.zeros(3)
    del sd["mid_block.resnets.0.conv1.weight"]
    with pytest.raises(ModelFileError) as error:
        load_referencenet(save(sd, tmp_path / "referencenet.safetensors"), config=TINY.referencenet)
    message = str(error.value)
    assert message.startswith("Cannot load the ReferenceNet from referencenet.safetensors: 1 missing, 1 unexpected")
    assert "mid_block.resnets.0.conv1.weight" in message
    assert "down_blocks.0.extra.weight [referencenet.safetensors]" in message


def test_folder_errors(tmp_path, weights):
    with pytest.raises(ModelFileError, match="holds no Follow-Your-Emoji weights; expected the official"):
        find_model_files(tmp_path)
    save(weights["unet"], tmp_path / "follow-your-emoji" / "unet.pth")
    with pytest.raises(ModelFileError, match="lacks the referencenet, guider weights"):
        find_model_files(tmp_path)
    with pytest.raises(ModelFileError, match="Model file not found"):
        load_guider(tmp_path / "absent.pth")


def test_unknown_dtype(tmp_path, weights):
    with pytest.raises(ValueError, match="Unknown dtype 'fp8'"):
        load_guider(save(weights["guider"], tmp_path / "g.pth"), dtype="fp8")


# ---- stand-in modules: the loader needs nothing from the networks but a state dict ------------------------------


def test_load_weights_into_any_module(tmp_path):
    class StandIn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_in, self.conv_out = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 3)
            self.blocks = torch.nn.ModuleList([torch.nn.Conv2d(4, 4, 3)])

    written = {k: torch.randn(v.shape).half() for k, v in StandIn().state_dict().items()}
    module = load_weights(StandIn, "guider", [save(written, tmp_path / "g.safetensors")], dtype=torch.float32)
    assert_loaded(module, {k: v.float() for k, v in written.items()})


def test_buffers_no_file_holds_are_materialised(tmp_path):
    """A non-persistent positional table (built on meta, in no file) gets its computed values after loading."""

    class WithTable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_in, self.conv_out = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 3)
            self.blocks = torch.nn.ModuleList([torch.nn.Conv2d(4, 4, 3)])
            self.pos_encoder = torch.nn.Module()
            self.pos_encoder.register_buffer("pe", sinusoid_table(32, 8), persistent=False)

    written = {k: torch.randn(v.shape) for k, v in WithTable().state_dict().items()}
    module = load_weights(WithTable, "guider", [save(written, tmp_path / "g.pth")], dtype="bf16")
    assert torch.equal(module.pos_encoder.pe, sinusoid_table(32, 8).bfloat16())


# ---- the golden tiny official models ----------------------------------------------------------------------------


def test_golden_folder_end_to_end(tiny_models_dir, tiny_network_configs, module_golden):
    networks = load_follow_your_emoji(tiny_models_dir, configs=tiny_network_configs)
    for name, module in (("referencenet", networks.referencenet), ("unet", networks.unet),
                         ("lmk_guider", networks.guider)):
        written = read_state_dict(tiny_models_dir / "follow-your-emoji" / f"{name}.pth")
        assert_loaded(module, {k: v.float() for k, v in written.items()})
    golden = module_golden("guider")
    out = networks.guider(golden["in_random"])
    torch.testing.assert_close(out, golden["out_random"], atol=1e-5, rtol=1e-5)


def test_golden_folder_sizes_from_its_config_json(tiny_models_dir):
    """Without ``configs`` the UNets take their sizes from sd-image-variations-diffusers/unet/config.json and the
    guider from its file (the motion-module head count, 4 in the tiny models, is not recorded in the folder)."""
    networks = load_follow_your_emoji(tiny_models_dir, dtype="fp16")
    assert networks.unet.state_dict()["conv_in.weight"].shape == (32, 4, 3, 3)
    assert networks.guider.config.block_out_channels == (8, 16, 24, 32)
    assert networks.referencenet.conv_in.weight.dtype == torch.float16


def test_golden_tables_absent_from_the_file_are_computed(tmp_path, tiny_models_dir, tiny_network_configs):
    """Within float32 rounding of the official formula, as test_networks_parity bounds it (exp and sin round
    differently per CPU: 0 on one, 9.5e-7 on another)."""
    stored = read_state_dict(tiny_models_dir / "follow-your-emoji" / "unet.safetensors")
    path = save({k: v for k, v in stored.items() if not is_positional_encoding(k)}, tmp_path / "unet.safetensors")
    loaded = load_unet3d(path, config=tiny_network_configs.unet3d).state_dict()
    for key in (k for k in stored if is_positional_encoding(k)):
        assert loaded[key].shape == stored[key].shape, key
        assert (loaded[key] - stored[key]).abs().max() <= stored[key].shape[1] * 2**-22, key

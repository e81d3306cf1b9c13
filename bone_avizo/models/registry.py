"""Architecture x encoder registry over segmentation-models-pytorch (smp).

``build_model(arch, encoder, in_channels=, num_classes=)`` returns a 2-D segmentation network
that maps a (B, in_channels, H, W) float tensor to (B, num_classes, H, W) logits. H and W must be
multiples of the encoder's output stride (``modelfile.input_multiple``: 32, 16 for DeepLabV3+,
8 for PSPNet/DeepLabV3; smp 0.6's U-Net takes any size); multiples of 32 always work.

Names are matched case-insensitively and BONe's spellings are accepted ("Unet", "UnetPlusPlus",
"DeepLabV3Plus", "MAnet", "UPerNet", "Segformer", "unet++", "deeplabv3+").
Encoders are smp's built-in encoders (``list_encoders()``) and timm models through smp's
``tu-<timm name>`` prefix.
"""
from __future__ import annotations

import difflib
import inspect
import logging
from typing import Any

import torch

from bone_avizo.errors import ConfigError, ModelError
from bone_avizo.models.metadata import SMP_CLASS_NAMES, architecture_key

log = logging.getLogger(__name__)


def _load_architectures() -> dict[str, type]:
    import segmentation_models_pytorch as smp

    return {name: getattr(smp, cls) for name, cls in SMP_CLASS_NAMES.items() if hasattr(smp, cls)}


ARCHITECTURES: dict[str, type] = _load_architectures()

# smp "weights" names accepted by build_model besides None
IMAGENET = "imagenet"


def list_architectures() -> list[str]:
    """Our architecture names, e.g. ['unet', 'unetplusplus', 'fpn', ...]."""
    return list(ARCHITECTURES)


def list_encoders() -> list[str]:
    """smp's built-in encoder names (timm models are also accepted as ``tu-<timm name>``)."""
    from segmentation_models_pytorch.encoders import encoders

    return list(encoders)


def canonical_arch(name: str) -> str:
    """Our name for architecture ``name`` (any case, BONe or smp spelling); ConfigError if unknown or
    not in the installed segmentation-models-pytorch."""
    return architecture_key(name, ARCHITECTURES)


def canonical_encoder(name: str) -> str:
    """smp's spelling of encoder ``name`` (case-insensitive); ConfigError with close matches if unknown."""
    text = str(name).strip()
    known = list_encoders()
    if text in known:
        return text
    by_lower = {e.lower(): e for e in known}
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    if text.lower().startswith("tu-"):
        return "tu-" + _check_timm_name(text[3:])
    close = difflib.get_close_matches(text.lower(), list(by_lower), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(by_lower[c] for c in close)}? " if close else ""
    raise ConfigError(f"unknown encoder {name!r}; {hint}see all {len(known)} encoders with "
                      "`python -m bone_avizo.standalone info --encoders` (timm models: 'tu-<timm name>')")


def _check_timm_name(name: str) -> str:
    import timm

    base = name.split(".")[0]
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.7)
        hint = f" did you mean {', '.join('tu-' + c for c in close)}?" if close else ""
        raise ConfigError(f"unknown timm encoder 'tu-{name}'; timm has no model {base!r}.{hint} "
                          "See timm.list_models()")
    return name


def build_model(arch: str, encoder: str, *, in_channels: int, num_classes: int, weights: str | None = None,
                **options: Any) -> torch.nn.Module:
    """A new smp network ``arch`` with encoder ``encoder`` in training mode.

    Input (B, in_channels, H, W) float32 -> output (B, num_classes, H, W) logits.
    ``weights``: None (random initialisation) or an smp weights name such as "imagenet" (must be in
    the local Hugging Face cache or downloadable). ``options`` go to the smp class
    (e.g. ``encoder_depth=4, decoder_channels=(128, 64, 32, 16)``).
    """
    arch_key = canonical_arch(arch)
    encoder_name = canonical_encoder(encoder)
    _check_count(in_channels, "in_channels")
    _check_count(num_classes, "num_classes")
    cls = ARCHITECTURES[arch_key]
    _check_options(arch_key, cls, encoder_name, options)
    smp_weights = _resolve_weights(encoder_name, weights)
    try:
        return cls(encoder_name=encoder_name, encoder_weights=smp_weights, in_channels=int(in_channels),
                   classes=int(num_classes), **options)
    except TypeError as exc:
        raise ConfigError(f"{arch_key}: invalid architecture option(s) {sorted(options)}: {exc}") from None
    except (ValueError, KeyError, RuntimeError, AssertionError, AttributeError, IndexError) as exc:
        if smp_weights is not None and _looks_like_download_error(exc):
            raise _offline_error(encoder_name, weights, exc) from None
        raise ConfigError(f"architecture {arch_key!r} cannot be built with encoder {encoder_name!r} "
                          f"{options or ''}: {_one_line(exc)}; choose another encoder (resnet18 works "
                          "with every architecture except dpt, which needs a 'tu-' ViT encoder)") from None
    except OSError as exc:  # network / cache failures of the weight download
        if smp_weights is None:
            raise
        raise _offline_error(encoder_name, weights, exc) from None


def _check_options(arch: str, cls: type, encoder: str, options: dict[str, Any]) -> None:
    """smp passes unknown keywords silently to timm encoders only; refuse them for the others."""
    params = inspect.signature(cls.__init__).parameters
    fixed = {"self", "encoder_name", "encoder_weights", "in_channels", "classes"}
    valid = [n for n, p in params.items() if n not in fixed and p.kind != p.VAR_KEYWORD]
    unknown = sorted(set(options) - set(valid) - fixed)
    if unknown and not encoder.startswith("tu-"):
        raise ConfigError(f"{arch}: invalid architecture option(s) {', '.join(unknown)}; valid options: "
                          f"{', '.join(valid)}")


def _check_count(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# ------------------------------------------------------------------------------------------
# pretrained weights
def _resolve_weights(encoder: str, weights: str | None) -> Any:
    """The ``encoder_weights`` value for smp; refuses early when the weights cannot be had offline."""
    if weights is None or str(weights).lower() in ("none", "random", ""):
        return None
    weights = str(weights)
    if encoder.startswith("tu-"):
        return True  # timm universal encoders take True; the variant is part of the name
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders[encoder]["pretrained_settings"]
    if weights not in settings:
        raise ConfigError(f"encoder {encoder!r} has no pretrained weights {weights!r}; available: "
                          f"{', '.join(settings) or 'none'} (or None for random initialisation)")
    if not weights_cached(encoder, weights):
        import huggingface_hub.constants as hf

        if hf.is_offline_mode():
            raise _offline_error(encoder, weights, "not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
        log.info("downloading %s weights for encoder %s from the Hugging Face hub", weights, encoder)
    return weights


def weights_cached(encoder: str, weights: str = IMAGENET) -> bool:
    """True when smp's pretrained ``weights`` for ``encoder`` are in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache
    from segmentation_models_pytorch.encoders import encoders

    setting = encoders.get(encoder, {}).get("pretrained_settings", {}).get(weights)
    if not setting:
        return False
    found = [try_to_load_from_cache(setting["repo_id"], filename, revision=setting.get("revision"))
             for filename in ("config.json", "model.safetensors")]
    return all(isinstance(f, str) for f in found)


def _looks_like_download_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("hub", "connection", "offline", "download", "resolve", "cache"))


def _offline_error(encoder: str, weights: Any, reason: Any) -> ModelError:
    reason = reason if isinstance(reason, str) else _one_line(reason)
    return ModelError(f"ImageNet weights for encoder {encoder} are not available offline ({weights}: {reason}); "
                      "use weights=None (random) or a previous model file")


# ------------------------------------------------------------------------------------------
# size and cost
def count_parameters(model: torch.nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def estimate_gflops(model: torch.nn.Module, in_channels: int, patch_size: int | tuple[int, int]) -> float:
    """GFLOPs of one forward pass on one (1, in_channels, H, W) patch, counted by
    ``torch.utils.flop_counter.FlopCounterMode``.

    Convention: 1 multiply-accumulate = 2 FLOPs (GFLOPs = 2 x GMACs); only convolutions and matrix
    products are counted (normalisation, activations and resampling are not). U-Net/resnet18,
    1 channel, 3 classes, 256 x 256 gives 10.63 GFLOPs. The model's train/eval mode is preserved.
    """
    from torch.utils.flop_counter import FlopCounterMode

    height, width = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros(1, int(in_channels), int(height), int(width), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9

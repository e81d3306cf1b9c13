"""The network a run trains: a new one from the registry, or one from a previous model file.

``weights``: 'random' (seeded initialisation), 'imagenet' (the encoder's ImageNet weights, which
must be in the local cache when offline: a clear ModelError otherwise), or the path of a model
file (fine-tuning: its architecture, encoder and weights are used; its channels and classes must
match the run's).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from bone_avizo.errors import ConfigError
from bone_avizo.models import build_model, load_model
from bone_avizo.models.registry import canonical_arch, canonical_encoder

log = logging.getLogger(__name__)

DECODER_DEPTH_ARCHS = ("unet", "unetplusplus", "manet")  # take one decoder channel count per stage
DEFAULT_DECODER = (256, 128, 64, 32, 16)
PROBE_SIZE = 64


@dataclass
class Network:
    module: torch.nn.Module
    arch: str
    encoder: str
    arch_options: dict
    weights: str


def arch_options(config, arch: str) -> dict:
    """smp keyword options from encoder_depth and decoder_channels."""
    options: dict = {}
    if config.encoder_depth != 5:
        options["encoder_depth"] = config.encoder_depth
    if config.decoder_channels:
        options["decoder_channels"] = list(config.decoder_channels)
    elif config.encoder_depth != 5 and arch in DECODER_DEPTH_ARCHS:
        options["decoder_channels"] = list(DEFAULT_DECODER[-config.encoder_depth:])
    return options


def _from_file(path: Path, config, num_classes: int) -> Network:
    loaded = load_model(path)
    meta = loaded.metadata
    if meta.in_channels != config.in_channels or meta.num_classes != num_classes:
        raise ConfigError(f"model file {path} takes {meta.in_channels} channel(s) and {meta.num_classes} classes, "
                          f"but this run has in_channels={config.in_channels} and {num_classes} classes; "
                          "fine-tune a model made for the same inputs and classes")
    log.info("fine-tuning %s (%s/%s)", path, meta.arch, meta.encoder)
    return Network(loaded.module.train(), meta.arch, meta.encoder, dict(meta.arch_options), str(path))


def freeze_unused(module: torch.nn.Module, in_channels: int) -> int:
    """Stop training parameters that never receive a gradient (e.g. the deep encoder stages an
    encoder_depth < 5 network does not run); returns how many tensors were frozen. One forward and
    backward pass of a zero image in eval mode (running statistics untouched, RNG state kept)."""
    was_training = module.training
    module.eval()
    with torch.random.fork_rng(devices=[]):
        device = next(module.parameters()).device
        out = module(torch.zeros(1, in_channels, PROBE_SIZE, PROBE_SIZE, device=device))
        out.float().sum().backward()
    unused = [p for p in module.parameters() if p.requires_grad and p.grad is None]
    for p in module.parameters():
        p.grad = None
    for p in unused:
        p.requires_grad_(False)
    module.train(was_training)
    return len(unused)


def _is_random_or_imagenet(weights: str) -> bool:
    return weights.lower() in ("random", "none", "imagenet", "")


def check_architecture(config) -> None:
    """ConfigError for an unknown architecture or encoder, or a missing weights file (fast, no data read)."""
    weights = str(config.weights)
    if _is_random_or_imagenet(weights):
        canonical_arch(config.arch)
        canonical_encoder(config.encoder)
    elif not Path(weights).is_file():
        raise ConfigError(f"weights (--weights): {weights!r} is neither random, imagenet nor an existing "
                          "model file")


def build_network(config, *, num_classes: int, device: torch.device) -> Network:
    """The network of a run, on ``device``, with unused parameters frozen."""
    check_architecture(config)
    weights = str(config.weights)
    if _is_random_or_imagenet(weights):
        arch, encoder = canonical_arch(config.arch), canonical_encoder(config.encoder)
        options = arch_options(config, arch)
        module = build_model(arch, encoder, in_channels=config.in_channels, num_classes=num_classes,
                             weights="imagenet" if weights.lower() == "imagenet" else None, **options)
        net = Network(module.train(), arch, encoder, options, weights.lower() or "random")
    else:
        net = _from_file(Path(weights), config, num_classes)
    net.module.to(device)
    frozen = freeze_unused(net.module, config.in_channels)
    if frozen:
        log.info("%d parameter tensors receive no gradient and are not trained", frozen)
    return net

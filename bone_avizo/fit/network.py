"""The network a run trains: a new one from the registry, or one from a previous model file.

``weights``: 'random' (seeded initialisation), 'imagenet' (the encoder's ImageNet weights, which
must be in the local cache when offline: a clear ModelError otherwise), or the path of a model
file (fine-tuning: its architecture, encoder and weights are used; its input channels must match
the run's, except that a 2D model can seed a 2.5D run: :func:`widen_to_stack`; when the run has
another number of classes the network gets a new, freshly initialised segmentation head for them
and keeps its encoder and decoder: :func:`_replace_head`).
"""
from __future__ import annotations

import copy
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
    from bone_avizo.models.onnx_model import refuse_training

    refuse_training(path)
    loaded = load_model(path)
    meta = loaded.metadata
    module = loaded.module
    if meta.in_channels == 1 < config.in_channels:
        log.info("fine-tuning %s (%s/%s), widened from 2D to %d slices", path, meta.arch, meta.encoder,
                 config.in_channels)
        module = widen_to_stack(module, config.in_channels, source=path)
    elif meta.in_channels != config.in_channels:
        raise ConfigError(f"model file {path} takes {meta.in_channels} channel(s) but this run has "
                          f"in_channels={config.in_channels}; leave out --in-channels (the file's count is "
                          f"used), or give --in-channels {meta.in_channels}")
    else:
        log.info("fine-tuning %s (%s/%s)", path, meta.arch, meta.encoder)
    if meta.num_classes != num_classes:
        with torch.random.fork_rng(devices=[]):  # the new head is seeded; the run's RNG is untouched
            torch.manual_seed(config.seed)
            module = _replace_head(module, meta.num_classes, num_classes, source=path)
        if meta.num_classes == 1 and num_classes == 2:
            log.info("%s is a binary model (one sigmoid output): fine-tuned as 2 classes, its head giving "
                     "(0, its logit), which predicts the same labels", path)
        else:
            log.info("%s predicts %d classes, the labels have %d: a new segmentation head for %d classes (its "
                     "encoder and decoder are kept)", path, meta.num_classes, num_classes, num_classes)
    return Network(module.train(), meta.arch, meta.encoder, dict(meta.arch_options), str(path))


def _replace_head(module: torch.nn.Module, old_classes: int, num_classes: int, *, source: Path) -> torch.nn.Module:
    """``module`` with its last convolution (the one producing the ``old_classes`` outputs) replaced by a
    freshly initialised one producing ``num_classes``; everything before it is kept. ConfigError when
    no such convolution is found or the output does not then have ``num_classes`` channels."""
    parent, name, conv = None, None, None
    for owner in module.modules():
        for child_name, child in owner.named_children():
            if isinstance(child, torch.nn.Conv2d) and child.out_channels == old_classes:
                parent, name, conv = owner, child_name, child  # the last one wins
    if conv is None:
        raise ConfigError(f"model file {source}: no final convolution with {old_classes} outputs to replace; "
                          f"fine-tune with --num-classes {old_classes}, or start from random/imagenet weights")
    head = torch.nn.Conv2d(conv.in_channels, num_classes, conv.kernel_size, stride=conv.stride,
                           padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                           padding_mode=conv.padding_mode).to(conv.weight.device, conv.weight.dtype)
    if old_classes == 1 and num_classes == 2:
        _binary_as_two_classes(conv, head)
    setattr(parent, name, head)
    if _output_channels(module, _first_conv(module)[2].in_channels) != num_classes:
        raise ConfigError(f"model file {source}: replacing its last {old_classes}-output convolution did not "
                          f"give {num_classes} output classes; fine-tune with --num-classes {old_classes}")
    return module


def _binary_as_two_classes(conv: torch.nn.Conv2d, head: torch.nn.Conv2d) -> None:
    """A binary model's head (one logit z) as 2-class ``head`` giving logits (0, z): its softmax is
    (1 - sigmoid(z), sigmoid(z)), so before fine-tuning the network predicts what the binary one did."""
    with torch.no_grad():
        head.weight.zero_()
        head.weight[1:] = conv.weight
        if head.bias is not None:
            head.bias.zero_()
            head.bias[1:] = conv.bias


def _output_channels(module: torch.nn.Module, in_channels: int) -> int:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            device = next(module.parameters()).device
            return int(module(torch.zeros(1, in_channels, PROBE_SIZE, PROBE_SIZE, device=device)).shape[1])
    finally:
        module.train(was_training)


def widen_to_stack(module: torch.nn.Module, channels: int, *, source: Path) -> torch.nn.Module:
    """A 2D network (1 input channel) as a 2.5D one taking ``channels`` neighbouring slices.

    The first convolution gets ``channels`` inputs: the centre slice keeps the trained weights, the
    neighbours start at zero, so before fine-tuning the network predicts exactly what the 2D one did
    on the centre slice. ConfigError when the network has no such convolution."""
    parent, name, conv = _first_conv(module)
    if conv is None or conv.in_channels != 1 or conv.groups != 1:
        raise ConfigError(f"model file {source}: cannot widen its first convolution to {channels} slices; "
                          "fine-tune with --in-channels 1 or start from random/imagenet weights")
    wide = torch.nn.Conv2d(channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                           padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                           padding_mode=conv.padding_mode).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, channels // 2] = conv.weight[:, 0]
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    original = copy.deepcopy(module)
    setattr(parent, name, wide)
    if not _same_on_centre(original, module, channels):
        raise ConfigError(f"model file {source}: its first registered convolution is not the one that reads "
                          "the image, so it cannot be widened to slices; fine-tune with --in-channels 1")
    return module


def _same_on_centre(flat: torch.nn.Module, wide: torch.nn.Module, channels: int) -> bool:
    """Whether ``wide`` on a stack predicts what ``flat`` predicts on its centre slice (eval mode)."""
    modes = flat.training, wide.training
    flat.eval(), wide.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            device = next(wide.parameters()).device
            stack = torch.randn(1, channels, PROBE_SIZE, PROBE_SIZE, device=device)
            expected = flat(stack[:, channels // 2:channels // 2 + 1])
            return bool(torch.allclose(wide(stack), expected, rtol=1e-4, atol=1e-5))
    finally:
        flat.train(modes[0]), wide.train(modes[1])


def _first_conv(module: torch.nn.Module):
    """(parent, attribute name, layer) of the first Conv2d the module holds, or (None, None, None)."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.Conv2d):
                return parent, name, child
            if any(isinstance(m, torch.nn.Conv2d) for m in child.modules()):
                break  # the first conv lies below this child: descend into it next
    return None, None, None


def _freeze_unused(module: torch.nn.Module, in_channels: int) -> int:
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
    else:
        from bone_avizo.models.onnx_model import refuse_training

        refuse_training(Path(weights))


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
    frozen = _freeze_unused(net.module, config.in_channels)
    if frozen:
        log.info("%d parameter tensors receive no gradient and are not trained", frozen)
    return net

"""Optimisers (Adam, AdamW, SGD) and the learning-rate schedule (cosine annealing per epoch)."""
from __future__ import annotations

import torch


def build_optimizer(params, config) -> torch.optim.Optimizer:
    """The optimiser FitConfig names, at lr ``config.lr``."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config):
    """Cosine annealing from lr to min_lr over the epochs (stepped once per epoch), or constant."""
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.min_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

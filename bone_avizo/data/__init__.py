"""bone_avizo.data: scans, normalisation statistics, 2.5D context stacks, datasets, splits, sampling and
augmentation for training. Internal: scripts use them through :mod:`bone_avizo.fit` (``ScanSpec``,
``pair_specs``, ``discover_scan_folders``) and :mod:`bone_avizo.io`."""

__all__: list[str] = []

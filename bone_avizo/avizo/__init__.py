"""The Avizo/Amira face: the thin adapter between Avizo objects and the core.

Nothing here imports Avizo: every function works on any object with Avizo's Python API (the real
one inside Avizo, or the mock in ``tests/fake_hx``). Avizo's injected globals are passed in or
found through the scripted module (:func:`bone_avizo.avizo.hx.hx_global`).

What an Avizo script may use (this package's ``__all__``, docs/api.md):

- fields <-> volumes: :func:`field_to_volume`, :func:`volume_to_field` ((x, y, z) <-> (z, y, x)),
  :func:`is_label_field`, :func:`describe_volume`;
- parameter spec <-> ports: :func:`spec_to_ports`, :func:`ports_to_config`, :func:`config_to_ports`;
- progress: :func:`avizo_progress` (a core progress callback over ``hx_progress``);
- errors: :func:`run_safely` (one-line messages, half-made objects removed);
- :func:`environment_report` (what BONeInfo shows).

The shipped modules' own plumbing lives in the submodules, imported from there by the ``.pyscro``
files: module inputs (:mod:`~bone_avizo.avizo.inputs`: connected fields, chosen files, the model
cache), outputs (:mod:`~bone_avizo.avizo.outputs`: results replaced run after run, spreadsheets;
:mod:`~bone_avizo.avizo.tables`: IoU tables), training (:mod:`~bone_avizo.avizo.training`: connected
pairs, files, folders, fields staged as files), the installer (:mod:`bone_avizo.avizo.install`, ``python
-m bone_avizo.avizo``) and the self-check (:mod:`bone_avizo.avizo.doctor`).
"""
from bone_avizo.avizo.env import environment_report, format_report
from bone_avizo.avizo.fields import (avizo_dtype, describe_volume, field_to_volume, is_label_field,
                                     volume_to_field, xyz_to_zyx, zyx_to_xyz)
from bone_avizo.avizo.hx import hx_global
from bone_avizo.avizo.ports import config_to_ports, ports_to_config, spec_to_ports
from bone_avizo.avizo.progress import AvizoProgress, avizo_progress
from bone_avizo.avizo.safety import run_safely

__all__ = ["field_to_volume", "volume_to_field", "xyz_to_zyx", "zyx_to_xyz", "avizo_dtype", "is_label_field",
           "describe_volume", "spec_to_ports", "ports_to_config", "config_to_ports", "AvizoProgress",
           "avizo_progress", "run_safely", "hx_global", "environment_report", "format_report"]

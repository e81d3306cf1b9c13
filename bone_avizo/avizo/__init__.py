"""The Avizo/Amira face: the thin adapter between Avizo objects and the core.

Nothing here imports Avizo: every function works on any object with Avizo's Python API (the real
one inside Avizo, or the mock in ``tests/fake_hx``). Avizo's injected globals are passed in or
found through the scripted module (:func:`bone_avizo.avizo.hx.hx_global`).

- fields <-> volumes: :func:`field_to_volume`, :func:`volume_to_field` ((x, y, z) <-> (z, y, x));
- parameter spec <-> ports: :func:`spec_to_ports`, :func:`ports_to_config`, :func:`config_to_ports`;
- progress: :func:`avizo_progress` (a core progress callback over ``hx_progress``);
- errors: :func:`run_safely` (one-line messages, half-made objects removed);
- module inputs: :func:`connected_field`, :func:`chosen_file`, :func:`required_file`,
  :func:`field_or_file`, :class:`ModelCache`, :func:`model_info_text`;
- module outputs: :class:`ModuleResults` (results replaced run after run), :func:`write_spreadsheet`,
  :func:`iou_tables`, :func:`iou_summary`, :func:`derived_name`;
- training (BONeDLFit): :func:`training_inputs` (connected pairs, files, folders), :class:`FitStaging`
  (fields staged as files, the model put in place only when training completes),
  :func:`history_tables`, :func:`history_text`;
- installer: :mod:`bone_avizo.avizo.install` and ``python -m bone_avizo.avizo``;
- self-check: :mod:`bone_avizo.avizo.doctor` (the BONeDoctor module, ``python -m bone_avizo.avizo doctor``).
"""
from bone_avizo.avizo.env import environment_report, format_report
from bone_avizo.avizo.fields import (avizo_dtype, describe_volume, field_to_volume, is_label_field,
                                     volume_to_field, xyz_to_zyx, zyx_to_xyz)
from bone_avizo.avizo.hx import hx_global
from bone_avizo.avizo.inputs import (MissingInputError, ModelCache, chosen_file, connected_field, derived_name,
                                     describe_model, field_or_file, model_info_text, required_file, volume_stem)
from bone_avizo.avizo.outputs import ModuleResults, write_spreadsheet
from bone_avizo.avizo.ports import config_to_ports, port_kind, ports_to_config, spec_to_ports, toggle_checked
from bone_avizo.avizo.progress import AvizoProgress, avizo_progress
from bone_avizo.avizo.safety import run_safely
from bone_avizo.avizo.tables import iou_summary, iou_tables
from bone_avizo.avizo.training import (FitStaging, TrainingInputs, connected_pairs, file_pairs, folder_pairs,
                                       history_name, history_tables, history_text, output_file, show_pairs,
                                       training_inputs)

__all__ = ["field_to_volume", "volume_to_field", "xyz_to_zyx", "zyx_to_xyz", "avizo_dtype", "is_label_field",
           "describe_volume", "spec_to_ports", "ports_to_config", "config_to_ports", "port_kind",
           "AvizoProgress", "avizo_progress", "run_safely", "hx_global", "environment_report",
           "format_report", "MissingInputError", "ModelCache", "chosen_file", "connected_field", "derived_name",
           "describe_model", "field_or_file", "model_info_text", "required_file", "ModuleResults",
           "write_spreadsheet", "iou_summary", "iou_tables", "volume_stem", "toggle_checked", "FitStaging",
           "TrainingInputs", "connected_pairs", "file_pairs", "folder_pairs", "history_name", "history_tables",
           "history_text", "output_file", "show_pairs", "training_inputs"]

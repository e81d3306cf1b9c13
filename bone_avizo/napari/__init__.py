"""The napari face: the three tasks as dock widgets, and napari reading and writing the core's formats.

Installed with the ``napari`` extra (``pip install "bone-avizo[napari]"``), napari finds this plugin
through its manifest (``napari.yaml``, entry point ``napari.manifest``):

- dock widgets :class:`~bone_avizo.napari.predict.PredictWidget`, :class:`~bone_avizo.napari.fit.FitWidget`
  and :class:`~bone_avizo.napari.iou.IoUWidget`, whose options are built from the tasks' parameter spec
  (:mod:`bone_avizo.napari.options`) and which run the core in a background thread
  (:mod:`bone_avizo.napari.jobs`: progress bar, ETA, Cancel, errors as one-line notifications);
- a reader (:func:`~bone_avizo.napari.files.get_reader`) for every format the core reads, voxel size
  as the layer scale, and a label-layer writer (:func:`~bone_avizo.napari.files.write_labels`).

Like the Avizo adapter it only translates: layers <-> volumes (:mod:`bone_avizo.napari.layers`),
widgets <-> config. Nothing here is imported by the core.
"""
from bone_avizo._lazy import lazy_exports

# imported on first use (PEP 562): napari reads the manifest and imports the reader without Qt widgets
__getattr__, __dir__ = lazy_exports(__name__, {
    "bone_avizo.napari.predict": ("PredictWidget",),
    "bone_avizo.napari.fit": ("FitWidget",),
    "bone_avizo.napari.iou": ("IoUWidget",),
    "bone_avizo.napari.files": ("get_reader", "read_layers", "write_labels"),
})

__all__ = ["PredictWidget", "FitWidget", "IoUWidget", "get_reader", "read_layers", "write_labels"]

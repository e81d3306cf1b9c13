"""bone_avizo.metrics: streaming confusion matrices -> IoU / Dice per class, per slice, per scan.

``compute_iou(prediction, reference, config, roi=, progress=)`` scores two label volumes
(z, y, x) read slab by slab; ``pool_results`` pools several scans; ``bone_avizo.metrics.report``
writes JSON / CSV / a printed table; ``bone_avizo.metrics.plot`` the per-slice IoU PNG.
"""
from bone_avizo.metrics.confusion import count_slices, stream_confusion
from bone_avizo.metrics.iou import (UNDEFINED_POLICY, IoUResult, compute_iou, mean_defined, pool_results,
                                    scores_from_confusion)
from bone_avizo.metrics.report import (format_table, result_to_dict, to_csv, to_json, write_csv, write_json,
                                       write_slice_csv)

__all__ = ["IoUResult", "UNDEFINED_POLICY", "compute_iou", "count_slices", "format_table", "mean_defined",
           "pool_results", "result_to_dict", "scores_from_confusion", "stream_confusion", "to_csv", "to_json",
           "write_csv", "write_json", "write_slice_csv"]

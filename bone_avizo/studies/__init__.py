"""Studies over many trainings: scan-level k-fold cross-validation (:func:`run_cv`) and the
architecture x encoder x patch-size benchmark (:func:`run_bench`).

Both run their tasks (folds, cells) in sequence, or spread over torchrun ranks (task i on rank
i % WORLD_SIZE), resume task by task, and merge the task results into CSV/JSON tables and PNG
figures. See docs/studies.md.
"""
from bone_avizo.studies.bench import (BENCH_SPEC, BenchConfig, BenchGrid, Cell, load_grid, merge_bench,
                                      probe_cell, run_bench, summarise_bench)
from bone_avizo.studies.cv import CV_SPEC, CVConfig, merge_cv, run_cv, summarise_cv
from bone_avizo.studies.selection import Selection
from bone_avizo.studies.study import StudyResult
from bone_avizo.studies.tasks import StudyIncompleteError

__all__ = ["BENCH_SPEC", "BenchConfig", "BenchGrid", "Cell", "load_grid", "merge_bench", "probe_cell", "run_bench",
           "summarise_bench", "CV_SPEC", "CVConfig", "Selection", "StudyIncompleteError", "StudyResult", "merge_cv", "run_cv",
           "summarise_cv"]

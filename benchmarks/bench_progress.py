"""ETA accuracy of DLPred's progress on the real scans in ../shared/data.

For each scan: predict with the shipped model at the default settings, record every progress report,
and compare the ETA the core states in its message (", ETA 12 s": what the CLI bar, the log and Avizo
show) at the first report past 10 %, 25 % and 50 % of the work that states one with the time that was
really left ("reported_at" says where that was). No such report (a scan of one or two forward passes
never states an ETA) counts as null.

  python benchmarks/bench_progress.py [--model MODEL] [--json OUT]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import emit, machine  # noqa: E402

from bone_avizo.config import PredictConfig  # noqa: E402
from bone_avizo.io import open_volume  # noqa: E402
from bone_avizo.models import load_model  # noqa: E402
from bone_avizo.predict import predict_volume  # noqa: E402
from bone_avizo.progress import eta_in_message  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def eta_errors(path: Path, model, fractions=(0.1, 0.25, 0.5)) -> dict:
    marks = []
    start = time.perf_counter()
    with open_volume(path) as source:
        result = predict_volume(source, model, PredictConfig(),
                                progress=lambda d, t, m: marks.append((time.perf_counter(), d, t, m)))
    end = time.perf_counter()
    rows = {}
    for fraction in fractions:
        shown = [m for m in marks if m[1] >= fraction * m[2] and eta_in_message(m[3]) is not None]
        if not shown:
            rows[f"{fraction:.0%}"] = None
            continue
        at, done, total, message = shown[0]
        eta = eta_in_message(message)
        left = end - at
        rows[f"{fraction:.0%}"] = {"reported_at": round(done / total, 3), "eta_s": round(eta, 2),
                                   "actual_left_s": round(left, 2), "error": round(eta / left - 1, 3) if left else None}
    return {"shape": result.labels.shape if result.labels is not None else None, "seconds": round(end - start, 2),
            "reports": len(marks), "backend": result.backend, "device": result.device, "eta": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "bone-bp-unet-resnet18.safetensors"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    scans = sorted(DATA.glob("*.tif"))
    if not scans:
        print(f"no scans in {DATA}; this benchmark needs the shared real scans", file=sys.stderr)
        return 2
    model = load_model(args.model)
    result = {"benchmark": "predict-progress-eta", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "model": Path(args.model).name, "scans": {p.name: eta_errors(p, model) for p in scans}}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CUDA correctness: labels predicted on CUDA (fp32, fp16, bf16) against CPU fp32, same model and scan."""
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import machine, synthetic_scan, unet_resnet18  # noqa: E402

from bone_avizo.config import PredictConfig  # noqa: E402
from bone_avizo.predict import predict_volume  # noqa: E402


def main() -> None:
    volume = synthetic_scan((8, 512, 512))
    loaded = unet_resnet18()
    cpu = predict_volume(volume, loaded, PredictConfig(device="cpu", backend="torch")).labels.array
    result = {"benchmark": "cuda-agreement", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "shape": volume.shape, "identical_to_cpu_fp32": {}}
    for precision in ("fp32", "fp16", "bf16"):
        for planes in (("xy",), ("xy", "xz", "yz")):
            cfg = PredictConfig(device="cuda", backend="torch", precision=precision, planes=planes)
            ref = cpu if planes == ("xy",) else predict_volume(
                volume, loaded, PredictConfig(device="cpu", backend="torch", planes=planes)).labels.array
            labels = predict_volume(volume, loaded, cfg).labels.array
            result["identical_to_cpu_fp32"][f"{precision} {'+'.join(planes)}"] = float((labels == ref).mean())
    print(json.dumps(result))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()

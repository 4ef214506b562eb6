"""A benchmark measured on a device by the Android example's benchmark screen
(``examples/android``, format ``edgeopt-device-bench`` version 1), read back beside the
bundle it was measured on so that ``edgeopt report BUNDLE --device-bench FILE`` shows it
with the compile's own figures. The JSON names the sha256 of the model it timed; one
measured on another build of the model is refused."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from edgeopt.errors import DataError
from edgeopt.report_data import BundleReport

FORMAT = "edgeopt-device-bench"
VERSION = 1
DEVICE_BENCH_KEY = "device_bench"  # where the readings go in the report data pages read


def load_device_bench(path: str | Path, bundle: str | Path) -> dict[str, Any]:
    """The device benchmark at ``path``, checked to be of ``bundle``'s model."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"device benchmark {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"device benchmark {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{path} is not an {FORMAT} file (the Android example's benchmark screen "
                        "writes one)")
    if data.get("version") != VERSION:
        raise DataError(f"{path} is {FORMAT} version {data.get('version')}; this edgeopt reads "
                        f"version {VERSION}")
    try:
        lat = {k: float(data["latency_ms"][k]) for k in ("p50", "p90", "p99")}
        samples = [float(s) for s in data.get("samples_ms") or ()]
        model_sha = str(data["bundle"]["model_sha256"])
        device = data.get("device") or {}
        reading = {"device": str(device.get("model") or "device"), "abi": device.get("abi"),
                   "sdk": device.get("sdk"), "provider": str(data["provider"]),
                   "threads": int(data["threads"]), "sequence": data.get("sequence"),
                   "latency_ms": lat, "samples_ms": samples,
                   "providers_skipped": list(data.get("providers_skipped") or ()),
                   "file": path.name}
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"device benchmark {path} is malformed ({err!r} missing or wrong)") from None
    if not all(math.isfinite(v) and v >= 0 for v in [*lat.values(), *samples]):
        raise DataError(f"device benchmark {path} has a latency that is negative or not a number")
    want = _model_sha256(Path(bundle))
    if model_sha != want:
        raise DataError(f"device benchmark {path} timed another model (sha256 {model_sha[:12]}…, "
                        f"the bundle's model.onnx is {str(want)[:12]}…): rerun it on this bundle")
    return reading


def with_device_bench(report: BundleReport, readings: list[dict[str, Any]]) -> BundleReport:
    """``report`` with the device readings added (the bundle itself is not changed)."""
    return dataclasses.replace(report, data={**report.data, DEVICE_BENCH_KEY: readings})


def _model_sha256(bundle: Path) -> str | None:
    manifest = bundle / "manifest.json"
    if not manifest.is_file():
        raise DataError(f"{bundle} has no manifest.json: a device benchmark belongs to a bundle "
                        "that ships a model")
    data = json.loads(manifest.read_text(encoding="utf-8"))
    model = data.get("model", "model.onnx")
    return ((data.get("files") or {}).get(model) or {}).get("sha256")

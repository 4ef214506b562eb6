"""What the variants load, built once and cached: edgeopt bundles, the genai INT4 model
and the requantized GGUFs.

Each artifact lands in ``$EDGEOPT_CACHE/bench-peers/<name>-<key>``, where the key hashes
everything the build reads (source paths and sizes, recipe, options), built in a sibling
temporary folder and renamed into place, so an interrupted build is never reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PEERS_DIR = Path(__file__).resolve().parent
REPO = PEERS_DIR.parents[1]
GENAI_ACCURACY_LEVEL = 4  # int8 activations in MatMulNBits: genai's fast CPU path, as arm64-int4 uses


class PeersEnvMissing(RuntimeError):
    """``.venv-peers`` (or a part of it) is not there; ``make peers-env`` builds it."""


@dataclasses.dataclass(frozen=True)
class PeersEnv:
    """The separate environment of the peer runtimes (``make peers-env``)."""

    root: Path = REPO / ".venv-peers"

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def node_dir(self) -> Path:
        return self.root / "node"

    def libllama(self) -> Path:
        """node-llama-cpp's prebuilt CPU libllama for this machine."""
        bins = self.node_dir / "node_modules" / "@node-llama-cpp" / "linux-x64" / "bins" / "linux-x64"
        found = sorted(bins.glob("libllama.*so"))
        if not found:
            raise PeersEnvMissing(f"no libllama under {bins}; run `make peers-env` (x86-64 Linux only)")
        return found[0]

    def check(self) -> None:
        """Raise :class:`PeersEnvMissing` unless the Python and node sides are installed."""
        if not (self.root / ".installed").is_file():
            raise PeersEnvMissing(f"{self.root} is not built; run `make peers-env` (needs python3 and npm)")
        self.libllama()


def cache_root() -> Path:
    from edgeopt.zoo import cache_dir

    return cache_dir() / "bench-peers"


def fingerprint(*parts: Any) -> str:
    """A short hash of ``parts``; paths count by name, size and modification time."""
    def norm(p: Any) -> Any:
        if isinstance(p, Path):
            files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
            return [str(p)] + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
        return p

    blob = json.dumps([norm(p) for p in parts], sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cached(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """``cache_root()/name-key``, running ``build(tmp)`` into a sibling first when absent."""
    dest = cache_root() / f"{name}-{key}"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        build(tmp)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def edgeopt_bundle(model: Path, target: str | Path, text: Path, eval_config: Any,
                   log: Callable[[str], None]) -> Path:
    """The shipped ``target`` (or a recipe file) compiled from ``model`` (eval and
    calibration text ``text``).

    The compile's own benchmark is cut to a token run (it does not change the bundle):
    this harness times the bundle itself. Parity failures are reported, not raised.
    """
    import edgeopt
    from edgeopt.recipe import BenchConfig
    from edgeopt.recipe_yaml import load_recipe_file
    from edgeopt.targets import load_target

    base = load_recipe_file(target) if isinstance(target, Path) else load_target(target)
    recipe = dataclasses.replace(base, bench=BenchConfig(
        seq_len=8, warmup=0, repeats=3, decode_tokens=2, torch_baseline=False))
    target = base.name

    def build(tmp: Path) -> None:
        log(f"compiling {model.name} for {target} (once; cached)")
        report = edgeopt.compile(model, out=tmp / "bundle", recipe=recipe, eval_data=text,
                                 decoder_eval=eval_config, fail_on_parity=False)
        (tmp / "compile.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))

    key = fingerprint(model, text, repr(recipe), repr(eval_config), target)
    return cached(f"edgeopt-{target}", key, build) / "bundle"


def genai_int4(model: Path, env: PeersEnv, log: Callable[[str], None]) -> Path:
    """onnxruntime-genai's model builder: INT4 (MatMulNBits) for the CPU, accuracy level 4."""
    def build(tmp: Path) -> None:
        log(f"building the onnxruntime-genai INT4 model of {model.name} (once; cached)")
        out = tmp / "model"
        argv = [str(env.python), "-m", "onnxruntime_genai.models.builder", "-i", str(model), "-o",
                str(out), "-p", "int4", "-e", "cpu", "-c", str(tmp / "hf-cache"),
                "--extra_options", f"accuracy_level={GENAI_ACCURACY_LEVEL}"]
        _run_logged(argv, _log_path("genai-int4"))
        shutil.rmtree(tmp / "hf-cache", ignore_errors=True)

    # A rebuilt peers env (another genai release) touches .installed: a new key.
    key = fingerprint(model, GENAI_ACCURACY_LEVEL, env.root / ".installed")
    return cached("genai-int4", key, build) / "model"


def llama_gguf(source: Path, ftype: str, env: PeersEnv, log: Callable[[str], None]) -> Path:
    """``source`` dequantized to float32 and requantized to ``ftype`` by llama.cpp."""
    lib = env.libllama()

    def build(tmp: Path) -> None:
        log(f"requantizing {source.name} to {ftype} with llama.cpp (once; cached)")
        argv = [sys.executable, str(PEERS_DIR / "quantize_gguf.py"), str(source),
                str(tmp / "model.gguf"), ftype, "--lib", str(lib)]
        _run_logged(argv, _log_path(f"gguf-{ftype}"))

    return cached(f"gguf-{ftype}", fingerprint(source, ftype, lib), build) / "model.gguf"


def _log_path(name: str) -> Path:
    # Outside the temporary build folder, so a failed build's log survives its cleanup.
    path = cache_root() / "logs" / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _run_logged(argv: list[str], log: Path) -> None:
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} failed: {' | '.join(tail)} ({log})")

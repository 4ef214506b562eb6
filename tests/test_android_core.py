"""The Android example's plain-Kotlin core (examples/android/core), compiled with kotlinc
and its JUnit tests run on the JVM against bundles compiled here, with what Python
computes (token ids, labels, probabilities, pooled vectors) written for them to match.
The bench JSON the Kotlin side writes must then be readable by `edgeopt report`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import REPO, SHARED, fast_recipe

import edgeopt
from edgeopt.cli import cli

ANDROID = REPO / "examples" / "android"
CORE = ANDROID / "core"
KOTLIN_HOME = ANDROID / "tools" / "node_modules" / "kotlin-compiler"
JUNIT = [Path("/usr/share/java/junit4.jar"), Path("/usr/share/java/hamcrest-core.jar")]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeopt" / "android-core"

# Text that trips ports of BERT's tokenizer: accents, emoji, CJK, a very long word, control
# and no-break spaces, punctuation runs, and the empty string.
TRICKY = ["", "Café naïve résumé ÉCOLE", "so good 😀👍🏽!!", "日本語のテキスト and 中文",
          "supercalifragilisticexpialidocious" * 4, "a\u00a0b\u2003c\td\u200be\x00f",
          "it's \"great\"... (really) -- 100% $5.99 #1 @home", "İstanbul ǅemal Straße ﬁne",
          "x" * 120, "a\u0301 e\u0308 n\u0303", "ÅNGSTRÖM: the end?!"]


def _kotlin() -> tuple[Path, Path]:
    kotlinc = KOTLIN_HOME / "bin" / "kotlinc"
    if not kotlinc.is_file():
        pytest.skip("kotlinc is not installed (cd examples/android/tools && npm ci; .ci/run does)")
    if shutil.which("java") is None:
        pytest.skip("java is not installed (apt-get install default-jre-headless)")
    if not all(j.is_file() for j in JUNIT):
        pytest.skip("JUnit 4 is not installed (apt-get install junit4; .ci/run does)")
    return kotlinc, KOTLIN_HOME / "lib"


def _compiled_jar() -> tuple[Path, list[Path]]:
    """The core and its tests as one jar, cached by the hash of the sources and compiler
    (kotlinc takes a minute or two)."""
    kotlinc, lib = _kotlin()
    libs = [lib / "kotlin-stdlib.jar", lib / "kotlin-test.jar", lib / "kotlin-test-junit.jar", *JUNIT]
    digest = hashlib.sha256((KOTLIN_HOME / "build.txt").read_bytes())
    for src in sorted(CORE.rglob("*.kt")):
        digest.update(src.relative_to(CORE).as_posix().encode() + b"\0" + src.read_bytes())
    jar = CACHE / f"core-{digest.hexdigest()[:16]}.jar"
    if not jar.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = jar.with_suffix(f".tmp-{os.getpid()}.jar")
        proc = subprocess.run([str(kotlinc), str(CORE / "src" / "main" / "kotlin"),
                               str(CORE / "src" / "test" / "kotlin"), "-nowarn",
                               "-cp", os.pathsep.join(map(str, libs[1:])), "-d", str(tmp)],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        os.replace(tmp, jar)
        for old in CACHE.glob("core-*.jar"):  # jars of earlier sources
            if old != jar:
                old.unlink(missing_ok=True)
    return jar, libs


@pytest.fixture(scope="module")
def embedder_bundle(tiny_embedder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("android-embedder") / "bundle"
    edgeopt.compile(str(tiny_embedder), recipe=fast_recipe("x86-fp32"), out=out)
    return out


def _tokenizer_cases(folder: Path, max_length: int, texts: list[str]) -> dict:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    cases = []
    for text in texts:
        enc = tok(text, truncation=True, max_length=max_length)
        cases.append({"text": text, "ids": enc["input_ids"], "type_ids": enc["token_type_ids"]})
    return {"tokenizer_json": str(folder / "tokenizer.json"), "max_length": max_length,
            "cases": cases}


def _fixtures(classifier: Path, embedder: Path, tmp: Path) -> dict:
    rng = np.random.default_rng(0)
    labels = json.loads((classifier / "manifest.json").read_text())["label_names"]
    tiny = ["a good movie", "the plot was not very great , and it was long !", *TRICKY]
    cases = [_tokenizer_cases(classifier, 512, tiny), _tokenizer_cases(classifier, 6, tiny)]
    real = SHARED / "models" / "minilm-sst2"
    if (real / "tokenizer.json").is_file():  # the real vocabulary: word pieces, accents, CJK
        dev = (SHARED / "data" / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:41]
        rows = [line.split("\t")[0] for line in dev]
        cases += [_tokenizer_cases(real, 512, rows + TRICKY), _tokenizer_cases(real, 8, TRICKY)]
    logits = rng.normal(0, 3, (16, len(labels))).astype(np.float32)
    e = np.exp(logits - logits.max(1, keepdims=True))
    states = rng.normal(0, 1, (1, 6, 8)).astype(np.float32)
    mask = np.array([1, 1, 1, 1, 0, 0])
    pooled = (states[0] * mask[:, None]).sum(0) / mask.sum()
    return {"classifier_bundle": str(classifier), "embedder_bundle": str(embedder),
            "label_names": labels, "tokenizer_cases": cases,
            "logits": {"rows": logits.tolist(), "labels": [labels[i] for i in logits.argmax(1)],
                       "probabilities": (e / e.sum(1, keepdims=True)).tolist()},
            "hidden": {"states": states.ravel().tolist(), "shape": list(states.shape),
                       "mask": mask.tolist(), "expected": (pooled / np.linalg.norm(pooled)).tolist()},
            "bench_out": str(tmp / "device-bench.json")}


def test_kotlin_core_unit_tests_pass_on_compiled_bundles(tiny_report_bundles, embedder_bundle,
                                                         tmp_path):
    jar, libs = _compiled_jar()
    classifier = tiny_report_bundles["x86-fp32"]
    fixtures = tmp_path / "fixtures.json"
    data = _fixtures(classifier, embedder_bundle, tmp_path)
    fixtures.write_text(json.dumps(data), encoding="utf-8")
    proc = subprocess.run(["java", f"-Dedgeopt.fixtures={fixtures}", "-cp",
                           os.pathsep.join(map(str, [jar, *libs])), "org.junit.runner.JUnitCore",
                           "dev.edgeopt.core.CoreTest"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    ran = re.search(r"OK \((\d+) tests?\)", proc.stdout)
    assert ran and int(ran.group(1)) >= 10, proc.stdout[-2000:]
    took = re.search(r"^Time: ([\d.,]+)", proc.stdout, re.M)
    print(f"Kotlin core: {ran.group(1)} JUnit tests passed in {took and took.group(1)} s; "
          f"{sum(len(c['cases']) for c in data['tokenizer_cases'])} tokenizer cases")

    # The benchmark JSON the app's benchmark screen writes, read by `edgeopt report`.
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(classifier), "--device-bench",
                                      data["bench_out"], "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "JVM test" in page and "XnnpackExecutionProvider: not on this device" in page

"""Bundle I/O: atomic staging, --force replacement, and refusing paths outside the bundle."""

from __future__ import annotations

import json

import pytest

from edgeopt.bundle import StagedBundle, bundle_file, check_output, read_manifest, write_manifest
from edgeopt.errors import BundleError, OutputExistsError, UsageError


def _bundle(tmp_path, name="b", content="x"):
    stage = StagedBundle(tmp_path / name)
    stage.write_text("model.onnx", content)
    write_manifest(stage, {"task": "t"})
    return stage


def test_commit_is_atomic_and_leaves_no_staging(tmp_path):
    stage = _bundle(tmp_path)
    assert not (tmp_path / "b").exists()  # nothing visible until commit
    stage.commit(force=False)
    assert read_manifest(tmp_path / "b")["files"]["model.onnx"]["bytes"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_force_replaces_and_no_force_refuses(tmp_path):
    _bundle(tmp_path).commit(force=False)
    with pytest.raises(OutputExistsError):
        _bundle(tmp_path, content="yy").commit(force=False)
    _bundle(tmp_path, content="zzz").commit(force=True)
    assert (tmp_path / "b" / "model.onnx").read_text() == "zzz"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".b.tmp")) == ["b"]


def test_check_output_refuses_overlap_with_source(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    with pytest.raises(UsageError, match="overlaps the source"):
        check_output(src / "out", force=True, source=src)
    with pytest.raises(UsageError, match="does not exist"):
        check_output(tmp_path / "a" / "b" / "c", force=False)


def test_manifest_paths_cannot_leave_the_bundle(tmp_path):
    _bundle(tmp_path).commit(force=False)
    (tmp_path / "secret.txt").write_text("s")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["files"]["../secret.txt"] = {"sha256": "0" * 64}
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="outside the bundle"):
        read_manifest(tmp_path / "b")
    with pytest.raises(BundleError, match="outside the bundle"):
        bundle_file(tmp_path / "b", "/etc/passwd")


def test_tampered_file_is_detected(tmp_path):
    _bundle(tmp_path).commit(force=False)
    (tmp_path / "b" / "model.onnx").write_text("tampered")
    with pytest.raises(BundleError, match="sha256"):
        read_manifest(tmp_path / "b")

"""The bundle an app loads: model.onnx, tokenizer files, manifest.json and the report.

Bundles are built in a temporary folder beside the destination and renamed into place
only when complete, so a crash never leaves a half-written bundle. Reading a bundle
checks every manifest path stays inside it and every file matches its sha256.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgeopt.artifact import sha256_file
from edgeopt.errors import BundleError, OutputExistsError, UsageError

MANIFEST_VERSION = 1
MANIFEST = "manifest.json"


def check_output(out: Path, force: bool, source: Path | None = None) -> None:
    """Refuse an existing output without ``force``, and any output inside the source."""
    out = out.expanduser()
    if out.exists() and not force:
        raise OutputExistsError(f"output {out} already exists; pass --force to replace it "
                                "or choose another -o")
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} is a file; -o names a folder to create")
    if source is not None:
        src, dest = source.resolve(), out.resolve()
        if dest == src or src in dest.parents or dest in src.parents:
            raise UsageError(f"output {out} overlaps the source model folder {source}; the "
                             "source is never written to: choose another -o")
    parent = out.resolve().parent
    if not parent.exists():
        raise UsageError(f"parent folder {parent} of the output does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write in {parent}; choose another -o")


class StagedBundle:
    """A bundle folder under construction; :meth:`commit` renames it to ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out.expanduser()
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.resolve().parent))

    def path(self, name: str) -> Path:
        return self.dir / name

    def write_text(self, name: str, text: str) -> Path:
        p = self.dir / name
        p.write_text(text, encoding="utf-8")
        return p

    def file_hashes(self, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, dict[str, Any]]:
        files = {}
        for p in sorted(self.dir.rglob("*")):
            rel = p.relative_to(self.dir).as_posix()
            if p.is_file() and rel not in exclude:
                files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        return files

    def commit(self, force: bool) -> Path:
        """Move the finished bundle into place (replacing ``out`` only with ``force``)."""
        backup = None
        if self.out.exists():
            if not force:
                raise OutputExistsError(f"output {self.out} appeared during the compile; "
                                        "pass --force to replace it")
            backup = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            self.out.rename(backup)
        try:
            self.dir.rename(self.out)
        except BaseException:
            if backup is not None:
                backup.rename(self.out)
            raise
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        return self.out

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def write_manifest(stage: StagedBundle, manifest: dict[str, Any]) -> None:
    """Write manifest.json with the sha256 of every other file in the bundle."""
    data = {"manifest_version": MANIFEST_VERSION, **manifest, "files": stage.file_hashes()}
    stage.write_text(MANIFEST, json.dumps(data, indent=2) + "\n")


def bundle_file(bundle: Path, rel: str) -> Path:
    """Resolve a manifest path, refusing anything that leaves the bundle."""
    root = bundle.resolve()
    target = (root / rel).resolve()
    if Path(rel).is_absolute() or root not in target.parents:
        raise BundleError(f"{bundle}/{MANIFEST} points outside the bundle ({rel!r}); refusing it")
    return target


def read_manifest(bundle: Path, verify: bool = True) -> dict[str, Any]:
    """Load and check a bundle's manifest (paths inside the bundle, hashes match)."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} is not an edgeopt bundle (no {MANIFEST}); pass the -o "
                          "folder of a compile")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON ({err}); recompile the bundle") from None
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{path} has no file list; recompile the bundle")
    for rel, info in files.items():
        file = bundle_file(bundle, rel)
        if not file.is_file():
            raise BundleError(f"bundle file {rel} listed in {MANIFEST} is missing")
        if verify and sha256_file(file) != info.get("sha256"):
            raise BundleError(f"bundle file {rel} does not match its sha256 in {MANIFEST}: "
                              "the bundle was modified or is corrupt")
    return manifest


def replace_files(bundle: Path, texts: dict[str, str]) -> None:
    """Rewrite text files a finished bundle lists (its report) and their manifest hashes.

    The bundle is verified first; each file, then the manifest, is written beside its
    destination and renamed over it, so a reader sees the old file or the new one.
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    for name, text in texts.items():
        if name == MANIFEST or name not in manifest["files"]:
            raise BundleError(f"{name} is not a file {bundle}/{MANIFEST} lists; it cannot be replaced")
        target = bundle_file(bundle, name)
        _replace_text(target, text)
        manifest["files"][name] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
    _replace_text(bundle / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _replace_text(target: Path, text: str) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)

"""The one driver: runs load, the recipe's prepare stages, then the family's stages, in
order, each inside its journal record, in a temporary work folder."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgeopt.artifact import Journal, LoadedModel
from edgeopt.compiler.request import CompileRequest
from edgeopt.compiler.stage import Family, Stage, describe_config
from edgeopt.report import Report


def stage_list(family: Family, request: CompileRequest) -> list[Stage]:
    """``load -> prepare stages (from the recipe) -> the family's stages``."""
    return [family.load, *(prepare_stage(c) for c in request.recipe.prepare), *family.stages]


def prepare_stage(config: Any) -> Stage:
    """The stage that runs one entry of the recipe's ``prepare:`` section."""
    from edgeopt.prepare import runner_for

    return Stage(f"prepare:{config.stage}", runner_for(config), config=lambda _recipe: config)


def run_compile(family: Family, request: CompileRequest, journal: Journal) -> Report:
    """Run every stage of ``family`` for ``request``; the last stage writes the bundle."""
    with tempfile.TemporaryDirectory(prefix="edgeopt-") as tmp:
        ctx = family.context(request=request, journal=journal, workdir=Path(tmp))
        artifact = None
        for stage in stage_list(family, request):
            if not stage.when(ctx):
                continue
            config = stage.config(request.recipe)
            with journal.stage(stage.name, describe_config(config)) as record:
                ctx.record = record
                out = stage.run(artifact, config, ctx.workdir, ctx)
                if out is not artifact:
                    record.finish(artifact, out)
                if stage is family.load and isinstance(out, LoadedModel):
                    ctx.teacher = out
            artifact = out
    if ctx.report is None:
        raise RuntimeError(f"the {family.name} family has no stage that writes the bundle")
    return ctx.report

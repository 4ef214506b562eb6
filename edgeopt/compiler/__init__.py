"""The compile core, shared by every model family.

:mod:`~edgeopt.compiler.stage` says what a stage and a family are;
:mod:`~edgeopt.compiler.driver` runs ``load -> prepare stages -> the family's stages``
in order, each leaving a record; :mod:`~edgeopt.compiler.reporting` builds the report
from those records and :mod:`~edgeopt.compiler.writer` writes the bundle. Families
(:mod:`edgeopt.encoder`, :mod:`edgeopt.decoder`) build on this and never on each other.
"""

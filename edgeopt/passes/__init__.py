"""Compile passes: one module each, artifact in, typed config, work dir, artifact out."""

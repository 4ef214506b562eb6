"""Other platforms' onnxruntime builds, run from this machine (arm64 under qemu-user).

:mod:`edgeopt.platforms.worker` is the script the emulated python runs; it imports
nothing from edgeopt.
"""

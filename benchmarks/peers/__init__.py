"""edgeopt against peer runtimes (issue 19): one worker process per runtime.

Workers speak JSON lines on stdin/stdout (``wire.py`` for Python workers,
``llama_worker.mjs`` for llama.cpp), so each runtime's dependencies stay in its own
environment and its peak RSS is its own process's. ``bench_peers.py`` drives them.
"""

"""``edgeopt verify BUNDLE --platform arm64``: a bundle on another platform's onnxruntime
against the x86 run and PyTorch (:mod:`edgeopt.verify.run`), on the rows
:mod:`edgeopt.verify.feeds` builds, judged by :mod:`edgeopt.verify.compare`."""

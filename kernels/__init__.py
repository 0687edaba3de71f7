"""Triton kernels of tempattn, shipped as ``tempattn.kernels``.

The tiled online-softmax core lives in ``common/`` and each operator's score
modifier in its own folder. (Never import this as a top-level ``kernels``
package: an unrelated PyPI project owns that name.)
"""

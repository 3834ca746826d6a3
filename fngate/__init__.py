"""fngate: a self-hosted, NVCF-compatible serverless invocation platform for GPU inference.

The import packages live under this one name: `fngate.proxy` (the data plane),
`fngate.control` (management API, stores, lifecycle, CLI), `fngate.backends`,
`fngate.loadtests` and `fngate.bench`; their folders sit at the repository's top level.
"""

from fngate import pure_python

__version__ = "0.2.0"

# before any fngate.proxy module loads: FNGATE_PURE_PYTHON=1 runs the data plane from its .py files
pure_python.install()

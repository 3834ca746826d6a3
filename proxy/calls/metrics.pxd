# Cython declarations for metrics.py (pure-Python mode; metrics.py stays plain Python).
# Compiled, Metrics is an extension type: observe (every request) updates C counters and
# calls into NvcfMetrics (cimported, a typed field) with C calls. Every __slots__ name is
# declared here (tests/proxy/test_compiled_declarations.py).

from fngate.proxy.calls.nvcf_metrics cimport Histogram, NvcfMetrics

cimport cython


cdef class Metrics:
    cdef public Py_ssize_t client_disconnects
    cdef public list extra
    cdef public Py_ssize_t in_flight
    cdef public dict latency
    cdef public dict limited
    cdef public NvcfMetrics nvcf
    cdef public object on_drained
    cdef public dict requests
    cdef public Py_ssize_t retries
    cdef public Py_ssize_t sse_open
    cdef public dict upstream_errors

    @cython.locals(hist=Histogram)
    cpdef observe(self, object function_id, object status, double seconds, object method=*, object endpoint=*)
    cpdef rate_limited(self, object function_id)
    cpdef upstream_error(self, object kind)

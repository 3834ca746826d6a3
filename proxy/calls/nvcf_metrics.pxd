# Cython declarations for nvcf_metrics.py (pure-Python mode; the .py stays plain Python).
# Compiled, the histogram and NvcfMetrics are extension types: a request's updates are C
# calls over C fields (the sum and count as C numbers), not Python method calls on
# __slots__ objects. Every __slots__ name is declared here
# (tests/proxy/test_compiled_declarations.py); metrics.pxd cimports NvcfMetrics.

cimport cython


cdef class Histogram:
    cdef public tuple bounds
    cdef public list counts
    cdef public double total
    cdef public Py_ssize_t n

    @cython.locals(i=Py_ssize_t, bound=double)
    cpdef observe(self, double value)


cdef class NvcfMetrics:
    cdef public dict errors
    cdef public dict http_latency
    cdef public dict latency
    cdef public dict started

    cpdef invocation(self, object function_id, object version_id, object nca_id)
    # the histogram taken from its dict is typed: its observe is a C call
    @cython.locals(hist=Histogram)
    cpdef invocation_ended(self, object function_id, object version_id, double seconds)
    cpdef app_error(self, object status, object function_id=*)
    @cython.locals(hist=Histogram)
    cpdef http_request(self, object method, object endpoint, object status, double seconds)

# Cython declarations for deadlines.py (pure-Python mode; deadlines.py stays plain Python).
# Compiled, Deadlines is an extension type, and the call (call.pxd cimports it) adds and
# removes its deadline with C calls. Every __slots__ name is declared here
# (tests/proxy/test_compiled_declarations.py).

cimport cython


cdef class Deadlines:
    cdef public object loop
    cdef public double tick
    cdef public dict buckets
    cdef public Py_ssize_t _done
    cdef public object _timer

    @cython.locals(bucket=set)
    cpdef Py_ssize_t add(self, double when, object item) except? -1
    @cython.locals(bucket=set)
    cpdef remove(self, Py_ssize_t key, object item)
    cpdef _fire(self)
    cpdef close(self)

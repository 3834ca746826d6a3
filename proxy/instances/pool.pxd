# Cython declarations for pool.py (pure-Python mode; pool.py stays plain Python). Compiled,
# H1Pool is an extension type: taking an idle connection and putting it back (twice per
# request) read C fields of the pool and of the connection (an H1Upstream, cimported) and
# call its methods as C calls. Every __slots__ name is declared here
# (tests/proxy/test_compiled_declarations.py).

cimport cython

from fngate.proxy.instances.h1 cimport H1Upstream


cdef class H1Pool:
    cdef public object _sweeper
    cdef public double connect_timeout
    cdef public dict idle
    cdef public double keepalive
    cdef public Py_ssize_t max_idle
    cdef public Py_ssize_t opened

    @cython.locals(stack=list, conn=H1Upstream)
    cpdef take_idle(self, host, port)
    @cython.locals(stack=list)
    cpdef release(self, H1Upstream conn)
    cpdef _sweep(self)
    cpdef close(self)

# Cython declarations for h1.py (pure-Python mode; h1.py stays plain Python). Compiled,
# H1Upstream is an extension type: its fields are C struct members and its own helpers
# are C calls. Every __slots__ name is declared here (tests/proxy/test_compiled_declarations.py).

cdef class H1Upstream:
    cdef public object transport
    cdef public object parser
    cdef public object key
    cdef public double idle_since
    cdef public bint closed
    cdef public object flow
    cdef public Py_ssize_t _status
    cdef public bint _complete
    cdef public bint _no_body
    cdef public bint _any_byte
    cdef public bint reusable_body
    cdef public bint _keep_alive
    cdef public object sink
    cdef public bytes _raw
    cdef public Py_ssize_t _raw_pos
    cdef public bytes _block

    cpdef _lost(self, msg)
    cpdef bint _framed(self)
    cpdef bint reusable(self)
    cpdef reset_for_pool(self)
    cpdef close(self)
    cpdef abort(self)

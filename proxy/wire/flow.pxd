# Cython declarations for flow.py (pure-Python mode; flow.py stays plain Python). Compiled,
# WriteFlow is an extension type: a driver that declares its flow (h2.pxd, stream_flow.pxd)
# reads `paused` as a C field and calls its methods as C calls. Every __slots__ name is
# declared here (tests/proxy/test_compiled_declarations.py).

cdef class WriteFlow:
    cdef public list _waiting
    cdef public bint paused

    cpdef pause_writing(self)
    cpdef resume_writing(self)
    cpdef when_writable(self, callback)
    cpdef take_waiting(self)
    cpdef connection_lost(self)
    cpdef _run(self)

# Cython declarations for stream_flow.py (pure-Python mode; stream_flow.py stays plain
# Python). Compiled, StreamFlow is an extension type: the HTTP/2 driver (h2.pxd cimports it)
# queues and checks a stream's bytes with C calls. Every __slots__ name is declared here
# (tests/proxy/test_compiled_declarations.py).

from fngate.proxy.wire.flow cimport WriteFlow


cdef class StreamFlow:
    cdef public dict _waiting
    cdef public WriteFlow flow
    cdef public object h2
    cdef public object loop
    cdef public bint soon

    cpdef queue(self, sid, data, end_stream)
    cpdef backlogged(self, sid)
    cpdef when_writable(self, sid, callback)
    cpdef wake(self, sid)
    cpdef wake_ready(self)
    cpdef wake_all(self)
    cpdef _run(self, cbs)

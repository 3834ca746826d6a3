# Cython declarations for h2.py (pure-Python mode; h2.py stays plain Python). Compiled,
# H2Server is an extension type: its fields are C struct members and the calls between
# its own methods (a batch's dispatch, the flushes) are C calls. Every __slots__ name is
# declared here (tests/proxy/test_compiled_declarations.py). Methods the exchanges and
# the gRPC relay call (send_headers, queue_data, reset, ack, ...) stay callable from
# Python, as cpdef.

from fngate.proxy.wire.flow cimport WriteFlow
from fngate.proxy.wire.stream_flow cimport StreamFlow


cdef class H2Server:
    cdef object __weakref__
    cdef public bint _flush_pending
    cdef public object _good_authority
    cdef public object _idle
    cdef public double _idle_since
    cdef public object _loop
    cdef public object _stall
    cdef public dict _stall_seen
    cdef public list _starts
    cdef public list _stop_after_answer
    cdef public object client_addr
    cdef public bint closed
    cdef public object config
    cdef public object connections
    cdef public bint draining
    cdef public WriteFlow flow
    cdef public object grpc
    cdef public object h2
    cdef public object handler
    cdef public StreamFlow out
    cdef public object scheme
    cdef public dict streams
    cdef public object transport

    cpdef _dispatch(self, events)
    cpdef _on_request(self, e)
    cpdef _refuse(self, sid, grpc, ended, err)
    cpdef _on_data(self, e)
    cpdef _on_trailers(self, e)
    cpdef _on_closed(self, sid, code)
    cpdef _gone(self, s, code)
    cpdef _fatal(self, exc)
    cpdef send_headers(self, sid, headers, end_stream)
    cpdef queue_data(self, sid, data, end_stream)
    cpdef backlogged(self, sid)
    cpdef when_writable(self, sid, callback)
    cpdef reset(self, sid, code)
    cpdef ack(self, sid, n)
    cpdef _stream_done(self)
    cpdef _arm_idle(self)
    cpdef _idle_close(self)
    cpdef _flush(self)
    cpdef _arm_stall(self)
    cpdef _stop_answered(self, answered)
    cpdef flush_soon(self)
    cpdef close(self)

# Cython declarations for call.py (pure-Python mode: call.py stays plain Python and runs
# uncompiled with FNGATE_PURE_PYTHON=1). Compiled, Engine and Call are extension types:
# their fields are C struct members and the calls between Call's own methods are C calls.
#
# Every name in a class's __slots__ must be declared here (an extension type has no
# __dict__: an undeclared attribute fails at run time, compiled only);
# tests/proxy/test_compiled_declarations.py checks the two lists agree.
# Methods a subclass overrides (RelayCall, proxy/calls/siblings.py) are cpdef, so the
# override still wins; callbacks other modules call stay def.

cimport cython

from fngate.proxy.calls.deadlines cimport Deadlines
from fngate.proxy.calls.metrics cimport Metrics
from fngate.proxy.instances.h1 cimport H1Upstream
from fngate.proxy.instances.pool cimport H1Pool
from fngate.proxy.routing.limiter cimport Lease
from fngate.proxy.routing.lookup cimport KeyChecker


cdef class Shared:
    cdef public Deadlines deadlines
    cdef public object holder
    cdef public object limiter
    cdef public Metrics metrics
    cdef public object pool


cdef class Engine(Shared):
    cdef public object config
    cdef public double header_grace
    cdef public double idle_timeout
    cdef public double sse_keepalive
    cdef public object poll_default
    cdef public KeyChecker keys
    cdef public object observers
    cdef public object rate_limits
    cdef public object route_headers


# the admission path an HTTP Call and a gRPC call (proxy/grpc/relay.py) share; `engine` is a
# Shared for gRPC, an Engine for Call; `deadline` None for a gRPC call without a limit
cdef class Routed:
    cdef public object engine
    cdef public object route
    cdef public object request_id
    cdef public object deadline
    cdef public object owner
    cdef public object loop
    cdef public object lease
    cdef public object task
    cdef public object exclude
    cdef public object pin
    cdef public Py_ssize_t due_key
    cdef public bint retried
    cdef public bint closed
    cdef public object obs

    cpdef _take_slot(self)
    cpdef _address(self)
    cpdef _retry(self)
    cpdef _send(self, conn)
    cpdef _connect_error(self, detail)
    cpdef _fail(self, err)


cdef class Call(Routed):
    cdef public object ex
    cdef public object grant
    cdef public double started
    cdef public object target
    cdef public bint host_routed
    cdef public bint tracked
    cdef public object endpoint
    cdef public object conn
    cdef public object rate_guard
    cdef public object ka_timer
    cdef public Py_ssize_t status
    cdef public double due_at
    cdef public double last
    cdef public Py_ssize_t unacked
    cdef public bint sent
    cdef public bint streamed
    cdef public bint chunked
    cdef public bint streaming
    cdef public bint sse
    cdef public bint ended
    cdef public bint ka_started

    # the engine (and its metrics) taken into a typed local: its fields are C fields, the
    # deadlines' and metrics' methods C calls
    @cython.locals(engine=Engine)
    cpdef run(self)
    @cython.locals(engine=Engine)
    cpdef _request_head(self, body_line)
    cpdef _guard_body_rate(self)
    cpdef _due(self, when)
    cpdef _timeout_error(self)
    cpdef _app_error(self, status)
    # an HTTP call's connection is an H1Upstream from the engine's H1Pool, its slot a Lease
    @cython.locals(engine=Engine, metrics=Metrics, conn=H1Upstream, pool=H1Pool, lease=Lease)
    cpdef _finish(self, status)

# Cython declarations for limiter.py (pure-Python mode; limiter.py stays plain Python).
# Compiled, the limiter's per-request objects are extension types: a lease's release is a
# C call into its limiter, the slot accounting reads C struct fields. Every __slots__
# name is declared here (tests/proxy/test_compiled_declarations.py).

cdef class Lease:
    cdef public object endpoint
    cdef public VersionState state
    cdef public Limiter limiter
    cdef public double started
    cdef public bint released
    cdef public object share

    cpdef release(self)


cdef class _Waiter:
    cdef public object future
    cdef public object request_id
    cdef public object exclude
    cdef public object pinned
    cdef public object timer


cdef class ConnectionShare:
    cdef public object owner
    cdef public Py_ssize_t held
    cdef public object waiters


cdef class VersionState:
    cdef public object function_id
    cdef public object version_id
    cdef public object queue
    cdef public Py_ssize_t in_flight
    cdef public double busy_seconds
    cdef public Py_ssize_t requests
    cdef public double last_request_at
    cdef public Py_ssize_t pinned
    cdef public object endpoints


cdef class Limiter:
    cdef public object holder
    cdef public dict in_flight
    cdef public dict versions
    cdef public object _task
    cdef public Py_ssize_t per_connection
    cdef public dict _shares

    cpdef VersionState _state(self, route)
    cpdef _pick(self, route, exclude)
    cpdef Lease _grant(self, endpoint, VersionState st)
    cpdef try_acquire(self, route, exclude=*, owner=*)
    cpdef _leave(self, ConnectionShare share)
    cpdef _release(self, Lease lease)
    cpdef _dispatch(self, VersionState st, table)
    cpdef _dispatch_pinned(self, VersionState st, route)

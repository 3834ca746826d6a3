# Cython declarations for h1.py (pure-Python mode; h1.py stays plain Python). Compiled,
# H1Server is an extension type: its fields are C struct members and its own helpers are
# C calls. Every __slots__ name is declared here (tests/proxy/test_compiled_declarations.py).
# H1Exchange stays a Python class (Exchange, its base, is an ABC).

cdef class H1Server:
    cdef public object config
    cdef public object handler
    cdef public object connections
    cdef public object transport
    cdef public object parser
    cdef public object client_addr
    cdef public bint closed
    cdef public object flow
    cdef public bytes _url
    cdef public list _headers
    cdef public Py_ssize_t _head_bytes
    cdef public Py_ssize_t _max_head
    cdef public double _header_timeout
    cdef public double _keepalive_timeout
    cdef public double _body_timeout
    cdef public bint _in_head
    cdef public bytes _good_host
    cdef public object _parsing
    cdef public object _pending
    cdef public object _current
    cdef public object _timer
    cdef public double _timer_at
    cdef public double _deadline
    cdef public object _loop
    cdef public bint _read_paused
    cdef public bint _feeding
    cdef public object _ready
    cdef public bint http11
    cdef public object scheme
    cdef public bint draining

    cpdef _hand_over(self, ex)
    cpdef _start(self, ex)
    cpdef exchange_done(self, ex)
    cpdef body_consumed(self, n)
    cpdef _pause_reading(self)
    cpdef _resume_reading(self)
    cpdef _reject(self, err)
    cpdef _arm(self, delay)
    cpdef _disarm(self)
    cpdef _check_deadline(self)
    cpdef _timed_out(self)
    cpdef shutdown(self)
    cpdef abort(self)
    cpdef close(self)

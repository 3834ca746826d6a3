# Cython declarations for lookup.py (pure-Python mode; lookup.py stays plain Python).
# Compiled, KeyChecker is an extension type: the per-request path (the cached check of
# one snapshot) reads C struct fields. Every __slots__ name is declared here
# (tests/proxy/test_compiled_declarations.py).

cdef class KeyChecker:
    cdef dict _digests
    cdef dict _passed
    cdef object _passed_table
    cdef public Py_ssize_t limit

    cpdef digest(self, object token)
    cpdef check(self, object table, object authorization, object function_id, object version_id=*)
    cdef _check(self, object table, object authorization, object function_id, object version_id)

/* functions.core._raw_gate: the compiled form of functions/core/raw_gate.py's `may_matter`.
 *
 * The connector reads every relay frame, and most cannot change a call. Deciding that from the
 * raw bytes in Python costs about as much as parsing the frame (a regex search and a few byte
 * finds, each a Python call); here it is one call. raw_gate.py holds the reference version,
 * the rules, and the reasons; this file must give the same answer for every input
 * (tests/unit/test_raw_gate.py compares the two on built and random frames).
 *
 * Only reads its arguments, allocates nothing but the event name, holds no state.
 */
#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Python's bytes `\s` and bytes.strip() whitespace: space, \t, \n, \r, \v, \f */
static inline int
is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static inline int
is_letter(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* The first match of rb'"Event"\s*:\s*"([A-Za-z]+)"': sets the group's offset and length. */
static int
event_name(const char *s, Py_ssize_t n, Py_ssize_t *at, Py_ssize_t *len)
{
    const char *end = s + n;
    const char *p = s;
    while (p < end && (p = memmem(p, (size_t)(end - p), "\"Event\"", 7)) != NULL) {
        const char *q = p + 7;
        while (q < end && is_space((unsigned char)*q)) q++;
        if (q < end && *q == ':') {
            q++;
            while (q < end && is_space((unsigned char)*q)) q++;
            if (q < end && *q == '"') {
                const char *a = ++q;
                while (q < end && is_letter((unsigned char)*q)) q++;
                if (q > a && q < end && *q == '"') {
                    *at = a - s;
                    *len = q - a;
                    return 1;
                }
            }
        }
        p++; /* the search tries every later position; a match starts only at "Event" */
    }
    return 0;
}

/* Whether `"<key>"` occurs in [start, end), its opening quote included: found by its first
 * letter (memchr, the fastest scan; memmem of the quoted key cost 0.1 us a frame). */
static int
has_key_after(const char *start, const char *end, const char *key)
{
    size_t size = strlen(key);
    const char *p = start;
    while (p < end && (p = memchr(p, key[0], (size_t)(end - p))) != NULL) {
        if ((size_t)(end - p) < size + 1) return 0; /* no room for the key and its quote */
        if (p > start && p[-1] == '"' && memcmp(p, key, size) == 0 && p[size] == '"') return 1;
        p++;
    }
    return 0;
}

/* raw_gate.has_spelling_escape: a backslash followed by `u` (memchr: far cheaper than memmem
 * of a two-byte needle, measured 0.33 us a frame) */
static int
has_spelling_escape(const char *s, Py_ssize_t n)
{
    const char *end = s + n;
    const char *p = s;
    while (p < end && (p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        if (p + 1 < end && p[1] == 'u') return 1;
        p++;
    }
    return 0;
}

/* raw_gate.may_start_a_call */
static int
may_start_a_call(const char *s, Py_ssize_t n, PyObject *prefixes)
{
    const char *end = s + n;
    const char *at = memmem(s, (size_t)n, "Context\":", 9);
    if (at == NULL || at == s || at[-1] != '"') return 1;
    const char *after = at + 9;
    if (memmem(after, (size_t)(end - after), "\"Context\"", 9) != NULL) return 1;
    const char *quote = memchr(after, '"', (size_t)(end - after));
    if (quote == NULL) return 1;
    for (const char *c = after; c < quote; c++) {
        if (!is_space((unsigned char)*c)) return 1;
    }
    const char *value = quote + 1;
    Py_ssize_t left = end - value;
    Py_ssize_t count = PyTuple_GET_SIZE(prefixes);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *prefix = PyTuple_GET_ITEM(prefixes, i);
        Py_ssize_t size = PyBytes_GET_SIZE(prefix);
        if (size <= left && memcmp(value, PyBytes_AS_STRING(prefix), (size_t)size) == 0) return 1;
    }
    return 0;
}

/* raw_gate.may_name_a_call */
static int
may_name_a_call(const char *s, Py_ssize_t n, PyObject *ids)
{
    if (ids == Py_None) return 1;
    Py_ssize_t count = PyTuple_GET_SIZE(ids);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *id = PyTuple_GET_ITEM(ids, i);
        Py_ssize_t size = PyBytes_GET_SIZE(id);
        if (size == 0 || (size <= n && memmem(s, (size_t)n, PyBytes_AS_STRING(id), (size_t)size)))
            return 1;
    }
    return 0;
}

static int
all_bytes(PyObject *tuple)
{
    Py_ssize_t count = PyTuple_GET_SIZE(tuple);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(tuple, i))) return 0;
    }
    return 1;
}

PyDoc_STRVAR(may_matter_doc,
             "may_matter(payload, wanted, ids, prefixes) -> bool\n\n"
             "functions.core.raw_gate.may_matter, compiled.");

static PyObject *
may_matter(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "may_matter takes 4 arguments");
        return NULL;
    }
    PyObject *payload = args[0], *wanted = args[1], *ids = args[2], *prefixes = args[3];
    if (!PyBytes_Check(payload) || !PyAnySet_Check(wanted) || !PyTuple_Check(prefixes) ||
        !(ids == Py_None || PyTuple_Check(ids))) {
        PyErr_SetString(PyExc_TypeError,
                        "may_matter(bytes, frozenset, tuple | None, tuple) expected");
        return NULL;
    }
    if (!all_bytes(prefixes) || (ids != Py_None && !all_bytes(ids))) {
        PyErr_SetString(PyExc_TypeError, "ids and prefixes must be bytes");
        return NULL;
    }
    const char *s = PyBytes_AS_STRING(payload);
    Py_ssize_t n = PyBytes_GET_SIZE(payload);
    Py_ssize_t at, len;
    if (!event_name(s, n, &at, &len)) Py_RETURN_TRUE; /* no name: parsed and reported */
    if (has_key_after(s + at + len + 1, s + n, "Event")) Py_RETURN_TRUE; /* a repeated key */
    if (has_spelling_escape(s, n)) Py_RETURN_TRUE;
    PyObject *name = PyBytes_FromStringAndSize(s + at, len);
    if (name == NULL) return NULL;
    int found = PySet_Contains(wanted, name);
    Py_DECREF(name);
    if (found < 0) return NULL;
    if (!found) Py_RETURN_FALSE;
    int matters = (len == 10 && memcmp(s + at, "Newchannel", 10) == 0)
                      ? may_start_a_call(s, n, prefixes)
                      : may_name_a_call(s, n, ids);
    return PyBool_FromLong(matters);
}

static PyMethodDef methods[] = {
    {"may_matter", (PyCFunction)(void (*)(void))may_matter, METH_FASTCALL, may_matter_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_raw_gate",
    .m_doc = "Compiled functions.core.raw_gate.may_matter.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__raw_gate(void)
{
    return PyModule_Create(&module);
}

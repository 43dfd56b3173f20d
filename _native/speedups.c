/* janus_utils._speedups: the common log call, encoded and pushed in C.
 *
 * A log call that is all plain data (a str template, printf arguments, fields
 * whose values are str/int/float/bool/None) is formatted, encoded and pushed
 * here without leaving C and without giving up the GIL.  The bytes are exactly
 * what marshal.dumps(record, 2) writes for the same record, so the flusher
 * cannot tell which path a record took.  Anything else (odd arguments, nested
 * or foreign field values, a suspect, oversize or non-UTF-8 record, a full
 * ring) goes back to the Python path in janus_utils/logger.py, which stays the
 * reference behaviour.
 *
 * The ring lives in the cffi module janus_utils._ring_cffi; this module only
 * calls it, through function pointers that module hands out (Ring.native()).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "ring.h"

typedef int (*push_fn)(jr_ring *, const uint8_t *, size_t, int, int64_t);
typedef int (*suspect_fn)(const jr_ring *, const uint8_t *, size_t);

/* Records larger than this take the Python path; a log line rarely is. */
#define STACK_BUF 4096

/* marshal's type codes (Python/marshal.c), version 2: no references. */
#define M_NULL '0'
#define M_NONE 'N'
#define M_FALSE 'F'
#define M_TRUE 'T'
#define M_INT 'i'
#define M_LONG 'l'
#define M_FLOAT 'g'
#define M_UNICODE 'u'
#define M_TUPLE '('
#define M_DICT '{'

/* The record: (format, ts, level, logger, message, fields, exception, pid,
 * thread).  logger.py uses this module only while its _FORMAT is FORMAT. */
#define RECORD_FORMAT 1
#define RECORD_ITEMS 9

static PyObject *thread_key;  /* per-thread cache of the thread's name */
static PyObject *special_keys[3];

/* ------------------------------------------------------------------------ */
/* the encoder                                                               */

typedef struct {
    uint8_t *p;
    uint8_t *end;
} wbuf;

/* Each writer returns 0, or -1 when the buffer is too small or the value is
 * not one this encoder writes (the caller then takes the Python path). */

static inline int put(wbuf *b, const void *src, size_t n) {
    if ((size_t)(b->end - b->p) < n)
        return -1;
    memcpy(b->p, src, n);
    b->p += n;
    return 0;
}

static inline int put_byte(wbuf *b, uint8_t c) {
    if (b->p == b->end)
        return -1;
    *b->p++ = c;
    return 0;
}

static inline int put_u32(wbuf *b, uint32_t v) {
    uint8_t t[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return put(b, t, 4);
}

static int put_int(wbuf *b, long long x) {
    if (x >= INT32_MIN && x <= INT32_MAX) {
        if (put_byte(b, M_INT))
            return -1;
        return put_u32(b, (uint32_t)(int32_t)x);
    }
    /* As marshal's w_PyLong: a signed count of 15-bit digits, least
     * significant first, the top one non-zero. */
    uint64_t m = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
    uint8_t digits[2 * 5];
    int32_t n = 0;
    while (m) {
        digits[2 * n] = (uint8_t)(m & 0xff);
        digits[2 * n + 1] = (uint8_t)((m >> 8) & 0x7f);
        m >>= 15;
        n++;
    }
    if (put_byte(b, M_LONG) || put_u32(b, (uint32_t)(x < 0 ? -n : n)))
        return -1;
    return put(b, digits, (size_t)(2 * n));
}

static int put_str(wbuf *b, PyObject *s) {
    Py_ssize_t n;
    const char *u;
    if (PyUnicode_IS_ASCII(s)) {
        u = (const char *)PyUnicode_DATA(s);
        n = PyUnicode_GET_LENGTH(s);
    } else {
        u = PyUnicode_AsUTF8AndSize(s, &n);
        if (u == NULL) { /* a lone surrogate: marshal's surrogatepass is Python's job */
            PyErr_Clear();
            return -1;
        }
    }
    if (n > INT32_MAX || put_byte(b, M_UNICODE) || put_u32(b, (uint32_t)n))
        return -1;
    return put(b, u, (size_t)n);
}

/* The value kinds a record written here may hold, exact types only (a str or
 * int subclass is not plain: marshal refuses it, and so does this). */
static inline int is_plain(PyObject *v) {
    return v == Py_None || v == Py_True || v == Py_False || PyUnicode_CheckExact(v) ||
           PyLong_CheckExact(v) || PyFloat_CheckExact(v);
}

static int put_value(wbuf *b, PyObject *v) {
    if (v == Py_None)
        return put_byte(b, M_NONE);
    if (v == Py_True)
        return put_byte(b, M_TRUE);
    if (v == Py_False)
        return put_byte(b, M_FALSE);
    if (PyUnicode_CheckExact(v))
        return put_str(b, v);
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow)
            return -1;
        return put_int(b, x);
    }
    if (PyFloat_CheckExact(v)) {
        uint8_t t[8];
        if (put_byte(b, M_FLOAT))
            return -1;
        PyFloat_Pack8(PyFloat_AS_DOUBLE(v), (char *)t, 1);
        return put(b, t, 8);
    }
    return -1;
}

static int put_items(wbuf *b, PyObject *d) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v))
        if (put_str(b, k) || put_value(b, v))
            return -1;
    return 0;
}

/* True if every key of d is a str and every value plain. */
static int plain_dict(PyObject *d) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v))
        if (!PyUnicode_CheckExact(k) || !is_plain(v))
            return 0;
    return 1;
}

/* encode(obj) -> bytes: marshal.dumps(obj, 2) for the subset this module
 * writes (tuples and dicts of plain values).  For tests and tools. */
static PyObject *put_any(wbuf *b, PyObject *obj, int depth);

static PyObject *py_encode(PyObject *module, PyObject *obj) {
    (void)module;
    uint8_t buf[STACK_BUF];
    wbuf b = {buf, buf + sizeof buf};
    if (put_any(&b, obj, 0) == NULL)
        return NULL;
    return PyBytes_FromStringAndSize((const char *)buf, b.p - buf);
}

static PyObject *put_any(wbuf *b, PyObject *obj, int depth) {
    int rc;
    if (PyTuple_CheckExact(obj) && depth == 0) {
        Py_ssize_t n = PyTuple_GET_SIZE(obj);
        rc = put_byte(b, M_TUPLE) || put_u32(b, (uint32_t)n);
        for (Py_ssize_t i = 0; !rc && i < n; i++)
            if (put_any(b, PyTuple_GET_ITEM(obj, i), depth + 1) == NULL)
                return NULL;
    } else if (PyDict_CheckExact(obj) && depth <= 1) {
        rc = !plain_dict(obj) || put_byte(b, M_DICT) || put_items(b, obj) || put_byte(b, M_NULL);
    } else if (is_plain(obj)) {
        rc = put_value(b, obj);
    } else {
        PyErr_Format(PyExc_TypeError, "encode: %.100s is not written by this encoder",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    if (rc) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "encode: too large, or not encodable here");
        return NULL;
    }
    return obj;
}

/* ------------------------------------------------------------------------ */
/* the Emitter                                                               */

typedef struct {
    PyObject_HEAD
    jr_ring *ring;
    push_fn push;
    suspect_fn suspect;
    int check;               /* run the secret prefilter */
    long pid;                /* written into records; logger.py resets it after fork */
    Py_ssize_t max_chars;    /* longer messages are truncated by the Python path */
    long console_level;      /* records at or above it are handed back for the console */
    PyObject *keepalive;     /* the Ring whose mapping `ring` points into */
    PyObject *listeners;     /* a list: when not empty, every record is handed back */
    PyObject *context;       /* the ContextVar of log_context() */
    PyObject *format_message; /* the Python path's formatter, for odd arguments */
    PyObject *thread_name;   /* () -> the calling thread's name */
} Emitter;

static int Emitter_init(Emitter *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"ring", "push", "suspect", "keepalive", "check", "pid", "max_chars",
                            "console_level", "listeners", "context", "format_message",
                            "thread_name", NULL};
    unsigned long long ring, push, suspect;
    PyObject *keepalive, *listeners, *context, *format_message, *thread_name;
    int check;
    long pid, console_level;
    Py_ssize_t max_chars;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KKKOplnlO!OOO:Emitter", names, &ring, &push,
                                     &suspect, &keepalive, &check, &pid, &max_chars,
                                     &console_level, &PyList_Type, &listeners, &context,
                                     &format_message, &thread_name))
        return -1;
    if (!ring || !push || !suspect) {
        PyErr_SetString(PyExc_ValueError, "Emitter: ring, push and suspect must not be NULL");
        return -1;
    }
    if (!PyContextVar_CheckExact(context) || !PyCallable_Check(format_message) ||
        !PyCallable_Check(thread_name)) {
        PyErr_SetString(PyExc_TypeError,
                        "Emitter: context must be a ContextVar, format_message and "
                        "thread_name callables");
        return -1;
    }
    self->ring = (jr_ring *)(uintptr_t)ring;
    self->push = (push_fn)(uintptr_t)push;
    self->suspect = (suspect_fn)(uintptr_t)suspect;
    self->check = check;
    self->pid = pid;
    self->max_chars = max_chars;
    self->console_level = console_level;
    Py_XSETREF(self->keepalive, Py_NewRef(keepalive));
    Py_XSETREF(self->listeners, Py_NewRef(listeners));
    Py_XSETREF(self->context, Py_NewRef(context));
    Py_XSETREF(self->format_message, Py_NewRef(format_message));
    Py_XSETREF(self->thread_name, Py_NewRef(thread_name));
    return 0;
}

static int Emitter_traverse(Emitter *self, visitproc visit, void *arg) {
    Py_VISIT(self->keepalive);
    Py_VISIT(self->listeners);
    Py_VISIT(self->context);
    Py_VISIT(self->format_message);
    Py_VISIT(self->thread_name);
    return 0;
}

static int Emitter_clear(Emitter *self) {
    Py_CLEAR(self->keepalive);
    Py_CLEAR(self->listeners);
    Py_CLEAR(self->context);
    Py_CLEAR(self->format_message);
    Py_CLEAR(self->thread_name);
    return 0;
}

static void Emitter_dealloc(Emitter *self) {
    PyObject_GC_UnTrack(self);
    Emitter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The calling thread's name, cached in the thread state as of its first call. */
static PyObject *thread_of(Emitter *self) {
    PyObject *tsd = PyThreadState_GetDict();
    if (tsd != NULL) {
        PyObject *name = PyDict_GetItemWithError(tsd, thread_key);
        if (name != NULL)
            return Py_NewRef(name);
        if (PyErr_Occurred())
            return NULL;
    }
    PyObject *name = PyObject_CallNoArgs(self->thread_name);
    if (name != NULL && tsd != NULL && PyDict_SetItem(tsd, thread_key, name) < 0)
        Py_CLEAR(name);
    return name;
}

static PyObject *format(Emitter *self, PyObject *msg, PyObject *args) {
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n == 0)
        return Py_NewRef(msg);
    if (!(n == 1 && PyDict_CheckExact(PyTuple_GET_ITEM(args, 0)))) {
        PyObject *message = PyUnicode_Format(msg, args);
        if (message != NULL || !PyErr_ExceptionMatches(PyExc_Exception))
            return message;
        PyErr_Clear();
    }
    /* "%(name)s" with a mapping, or arguments that do not fit: as the Python path. */
    PyObject *message = PyObject_CallFunctionObjArgs(self->format_message, msg, args, NULL);
    if (message != NULL && !PyUnicode_CheckExact(message)) {
        PyErr_SetString(PyExc_TypeError, "format_message must return a str");
        Py_CLEAR(message);
    }
    return message;
}

static PyObject *merged_fields(PyObject *ctx, PyObject *bound, PyObject *fields) {
    if (PyDict_GET_SIZE(ctx) == 0 && PyDict_GET_SIZE(bound) == 0)
        return Py_NewRef(PyDict_GET_SIZE(fields) ? fields : Py_None);
    PyObject *d = PyDict_Copy(ctx);
    if (d == NULL || PyDict_Update(d, bound) < 0 || PyDict_Update(d, fields) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    if (PyDict_GET_SIZE(d) == 0) {
        Py_DECREF(d);
        return Py_NewRef(Py_None);
    }
    return d;
}

/* push(level, name, bound, msg, args, fields)
 *   -> None: pushed, nothing left to do;
 *   -> (pushed, record): the Python path finishes (pushes it if not pushed,
 *      hands it to the console and listeners);
 *   -> NotImplemented: not plain data; the Python path does the whole call. */
static PyObject *Emitter_push(Emitter *self, PyObject *const *argv, Py_ssize_t argc) {
    if (argc != 6) {
        PyErr_SetString(PyExc_TypeError, "push(level, name, bound, msg, args, fields)");
        return NULL;
    }
    PyObject *name = argv[1], *bound = argv[2], *msg = argv[3], *args = argv[4], *fields = argv[5];
    int overflow = 0;
    long level = PyLong_CheckExact(argv[0]) ? PyLong_AsLongAndOverflow(argv[0], &overflow) : 0;
    if (level == -1 && PyErr_Occurred())
        return NULL;
    if (overflow || !PyLong_CheckExact(argv[0]) || !PyUnicode_CheckExact(msg) || !PyUnicode_CheckExact(name) || !PyDict_CheckExact(bound) ||
        !PyTuple_CheckExact(args) || !PyDict_CheckExact(fields))
        Py_RETURN_NOTIMPLEMENTED;
    if (PyDict_GET_SIZE(fields)) {
        for (int i = 0; i < 3; i++) {
            int has = PyDict_Contains(fields, special_keys[i]);
            if (has)
                return has < 0 ? NULL : Py_NewRef(Py_NotImplemented);
        }
    }
    PyObject *ctx;
    if (PyContextVar_Get(self->context, NULL, &ctx) < 0)
        return NULL;
    if (ctx == NULL || !PyDict_CheckExact(ctx) || !plain_dict(ctx) || !plain_dict(bound) ||
        !plain_dict(fields)) {
        Py_XDECREF(ctx);
        Py_RETURN_NOTIMPLEMENTED;
    }
    /* From here on the call has side effects (formatting runs __str__), so
     * every outcome returns the record rather than NotImplemented. */
    PyObject *message = format(self, msg, args);
    PyObject *thread = message ? thread_of(self) : NULL;
    if (thread == NULL) {
        Py_DECREF(ctx);
        Py_XDECREF(message);
        return NULL;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long ts = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;

    uint8_t buf[STACK_BUF];
    wbuf b = {buf, buf + sizeof buf};
    int have_fields = PyDict_GET_SIZE(ctx) || PyDict_GET_SIZE(bound) || PyDict_GET_SIZE(fields);
    /* Fields are written ctx, bound, call in turn: marshal.loads keeps the
     * last value of a repeated key, as {**ctx, **bound, **fields} does. */
    int pushed =
        PyUnicode_GET_LENGTH(message) <= self->max_chars && PyUnicode_CheckExact(thread) &&
        !(put_byte(&b, M_TUPLE) || put_u32(&b, RECORD_ITEMS) || put_int(&b, RECORD_FORMAT) ||
          put_int(&b, ts) || put_int(&b, level) || put_str(&b, name) || put_str(&b, message) ||
          (have_fields ? (put_byte(&b, M_DICT) || put_items(&b, ctx) || put_items(&b, bound) ||
                          put_items(&b, fields) || put_byte(&b, M_NULL))
                       : put_byte(&b, M_NONE)) ||
          put_byte(&b, M_NONE) || put_int(&b, self->pid) || put_str(&b, thread));
    size_t len = (size_t)(b.p - buf);
    if (pushed && self->check && self->suspect(self->ring, buf, len))
        pushed = 0;
    /* JR_POLICY_TRY: never wait here, with the GIL held; a full ring goes
     * back to the Python path, whose push waits with the GIL released. */
    if (pushed && self->push(self->ring, buf, len, JR_POLICY_TRY, 0) != JR_OK)
        pushed = 0;
    PyObject *result = Py_None;
    if (!pushed || level >= self->console_level || PyList_GET_SIZE(self->listeners)) {
        PyObject *merged = merged_fields(ctx, bound, fields);
        PyObject *record = merged ? Py_BuildValue("(iLlOONOlO)", RECORD_FORMAT, ts, level, name, message,
                                                  merged, Py_None, self->pid, thread)
                                  : NULL;
        result = record ? Py_BuildValue("(ON)", pushed ? Py_True : Py_False, record) : NULL;
    } else {
        Py_INCREF(result);
    }
    Py_DECREF(ctx);
    Py_DECREF(message);
    Py_DECREF(thread);
    return result;
}

static PyMethodDef Emitter_methods[] = {
    {"push", (PyCFunction)(void (*)(void))Emitter_push, METH_FASTCALL,
     "push(level, name, bound, msg, args, fields): log one call (see _speedups.c)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Emitter_members[] = {
    {"pid", T_LONG, offsetof(Emitter, pid), 0, "the pid written into records"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject EmitterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "janus_utils._speedups.Emitter",
    .tp_basicsize = sizeof(Emitter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The common log call, formatted, encoded and pushed into a ring in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Emitter_init,
    .tp_dealloc = (destructor)Emitter_dealloc,
    .tp_traverse = (traverseproc)Emitter_traverse,
    .tp_clear = (inquiry)Emitter_clear,
    .tp_methods = Emitter_methods,
    .tp_members = Emitter_members,
};

static PyMethodDef module_methods[] = {
    {"encode", py_encode, METH_O,
     "encode(obj) -> bytes: marshal.dumps(obj, 2), for the plain records this module writes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "janus_utils._speedups",
    "The log call's encoder in C; see _native/speedups.c.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    static const char *specials[3] = {"exc_info", "stack_info", "stacklevel"};
    if (PyType_Ready(&EmitterType) < 0)
        return NULL;
    thread_key = PyUnicode_InternFromString("janus_utils.thread_name");
    if (thread_key == NULL)
        return NULL;
    for (int i = 0; i < 3; i++)
        if ((special_keys[i] = PyUnicode_InternFromString(specials[i])) == NULL)
            return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Emitter", (PyObject *)&EmitterType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_RECORD", STACK_BUF) < 0 ||
        PyModule_AddIntConstant(m, "FORMAT", RECORD_FORMAT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

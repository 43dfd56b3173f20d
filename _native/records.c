/* janus_utils._records: the rows of a search as Records, in C.
 *
 * A search hands back up to thousands of rows, and building a frozen
 * dataclass from each in Python costs more than SQLite's whole work for it:
 * __init__ sets each of the 17 fields through object.__setattr__ (some
 * 3 µs a row).  build() makes the same Records by filling their slots
 * directly, for the rows that hold what the flusher writes (checked here as
 * store._well_typed does); any other row (a damaged one, text read as bytes)
 * goes to the Python function given, so every Record is what store._record
 * would make.
 *
 *   LAYOUT: where the checked columns sit (id, ts, level, pid, fields)
 *   slot_offsets(cls, names) -> tuple of ints
 *       where each named slot of cls lies in its instances (member
 *       descriptors of a class with __slots__, e.g. a dataclass(slots=True)).
 *   build(rows, cls, offsets, parse_fields, fallback, with_snippet) -> list
 *       one instance of cls per row.  A row holds len(offsets) - 1 values
 *       (the Record's fields but the snippet) and, with with_snippet, the
 *       snippet last.  Slot FIELDS_AT gets parse_fields(value); the last slot
 *       the snippet (or None).  A row that fails the checks becomes
 *       fallback(values, snippet).
 *
 * The checks (store._well_typed): ts an int within SQLite's int64, level an
 * int, pid None or an int, every other column but fields a str or None, the
 * snippet a str or None; exact types, as the rows of apsw are.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* Where the columns sit in a row (store._RECORD_COLUMNS): id, ts, level,
 * logger, message, user_id, agent_id, request_id, trace_id, span_id, pid,
 * thread, exception, fields, service, host. */
#define TS_AT 1
#define LEVEL_AT 2
#define PID_AT 10
#define FIELDS_AT 13
#define ID_AT 0

static PyObject *slot_offsets(PyObject *self, PyObject *args) {
    PyObject *cls, *names;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &cls, &PyTuple_Type, &names))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    PyObject *out = PyTuple_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *descr = PyObject_GetAttr(cls, PyTuple_GET_ITEM(names, i));
        if (descr == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "%R is not an object slot of %R", PyTuple_GET_ITEM(names, i), cls);
            Py_DECREF(descr);
            Py_DECREF(out);
            return NULL;
        }
        PyObject *offset = PyLong_FromSsize_t(((PyMemberDescrObject *)descr)->d_member->offset);
        Py_DECREF(descr);
        if (offset == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, offset);
    }
    return out;
}

static int is_int(PyObject *v) { return PyLong_CheckExact(v); }
static int is_text(PyObject *v) { return v == Py_None || PyUnicode_CheckExact(v); }

/* Whether the row's values (n of them) are what the flusher writes. */
static int well_typed(PyObject *row, Py_ssize_t n) {
    PyObject *ts = PyTuple_GET_ITEM(row, TS_AT);
    if (!is_int(ts))
        return 0;
    int overflow = 0;
    (void)PyLong_AsLongLongAndOverflow(ts, &overflow);
    if (overflow)
        return 0;
    if (!is_int(PyTuple_GET_ITEM(row, LEVEL_AT)))
        return 0;
    PyObject *pid = PyTuple_GET_ITEM(row, PID_AT);
    if (pid != Py_None && !is_int(pid))
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i == ID_AT || i == TS_AT || i == LEVEL_AT || i == PID_AT || i == FIELDS_AT)
            continue;
        if (!is_text(PyTuple_GET_ITEM(row, i)))
            return 0;
    }
    return 1;
}

static PyObject *build(PyObject *self, PyObject *args) {
    PyObject *rows, *offsets_obj, *parse_fields, *fallback;
    PyTypeObject *cls;
    int with_snippet;
    if (!PyArg_ParseTuple(args, "O!O!O!OOp", &PyList_Type, &rows, &PyType_Type, &cls, &PyTuple_Type, &offsets_obj,
                          &parse_fields, &fallback, &with_snippet))
        return NULL;
    Py_ssize_t slots = PyTuple_GET_SIZE(offsets_obj);
    Py_ssize_t n = slots - 1; /* the values of a row, the snippet left out */
    if (n <= FIELDS_AT || n <= PID_AT) {
        PyErr_SetString(PyExc_ValueError, "offsets: one per Record field, the snippet last");
        return NULL;
    }
    Py_ssize_t offsets[64];
    if (slots > 64) {
        PyErr_SetString(PyExc_ValueError, "offsets: at most 64");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < slots; i++) {
        offsets[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(offsets_obj, i));
        if (offsets[i] == -1 && PyErr_Occurred())
            return NULL;
        if (offsets[i] < (Py_ssize_t)sizeof(PyObject) || offsets[i] + (Py_ssize_t)sizeof(PyObject *) > cls->tp_basicsize) {
            PyErr_SetString(PyExc_ValueError, "offsets: not slots of this class");
            return NULL;
        }
    }
    Py_ssize_t count = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != n + (with_snippet ? 1 : 0)) {
            PyErr_Format(PyExc_ValueError, "row %zd: a tuple of %zd values expected", r, n + (with_snippet ? 1 : 0));
            goto fail;
        }
        PyObject *snippet = with_snippet ? PyTuple_GET_ITEM(row, n) : Py_None;
        PyObject *record;
        if (is_text(snippet) && well_typed(row, n)) {
            PyObject *fields = PyObject_CallOneArg(parse_fields, PyTuple_GET_ITEM(row, FIELDS_AT));
            if (fields == NULL)
                goto fail;
            record = cls->tp_alloc(cls, 0);
            if (record == NULL) {
                Py_DECREF(fields);
                goto fail;
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *value = i == FIELDS_AT ? fields : Py_NewRef(PyTuple_GET_ITEM(row, i));
                *(PyObject **)((char *)record + offsets[i]) = value;
            }
            *(PyObject **)((char *)record + offsets[n]) = Py_NewRef(snippet);
        } else {
            PyObject *values = with_snippet ? PyTuple_GetSlice(row, 0, n) : Py_NewRef(row);
            if (values == NULL)
                goto fail;
            record = PyObject_CallFunctionObjArgs(fallback, values, snippet, NULL);
            Py_DECREF(values);
            if (record == NULL)
                goto fail;
        }
        PyList_SET_ITEM(out, r, record);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"slot_offsets", slot_offsets, METH_VARARGS, "Where each named slot of cls lies in its instances."},
    {"build", build, METH_VARARGS, "One instance of cls per row (see the module comment)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "janus_utils._records", "The rows of a search as Records, in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__records(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    /* Where this build expects the checked columns: store.py uses it only if
     * its own columns sit there. */
    PyObject *layout = Py_BuildValue("(iiiii)", ID_AT, TS_AT, LEVEL_AT, PID_AT, FIELDS_AT);
    if (layout == NULL || PyModule_AddObject(m, "LAYOUT", layout) < 0) {
        Py_XDECREF(layout);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

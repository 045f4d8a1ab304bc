/*
 * sqlbastion._rowfast: masked result rows rewritten a received chunk at a time.
 *
 * The compiled twin of sqlbastion/masking/rowref.py, which states the
 * semantics; the two must give byte-identical output and counts (the unit
 * tests compare them on generated chunks). sqlbastion/masking/rows.py picks
 * one and documents the API.
 *
 * Strategy: one call walks every complete row message of a chunk the backend
 * sent and appends the rewritten messages to a bytearray. Pass-through
 * columns are copied as byte ranges, masked columns either get a built-in
 * ASCII operation done here (the AsciiOp kinds of masking/functions.py) or a
 * call to the column's Python masker. The walk stops, leaving the message
 * unconsumed, at the first message that is not a plain row, is incomplete,
 * too large, or malformed in any way: the caller's Python path then handles
 * it and raises its typed protocol error. Every length read from the chunk is
 * checked against the chunk before use, and each row is validated completely
 * before anything of it is written or any masker is called.
 *
 * Files: this one holds what the protocols share (the output buffer, the column
 * program, the ASCII operations, one call's state) and the module; _rowfast_pg.c
 * the PostgreSQL DataRow walk; _rowfast_mysql.c the MySQL text and binary row
 * walks; _rowfast.h the types between them. Each protocol file cites its formats.
 *
 * Errors: a masker's exception propagates; the output bytearray is then
 * restored to its length at the call and no count is added, so the caller's
 * state is exactly as before the call.
 */
#include "_rowfast.h"

int sink_reserve(Sink *s, Py_ssize_t need) {
    if (need < 0 || s->len > PY_SSIZE_T_MAX - need) {
        PyErr_SetString(PyExc_OverflowError, "row output too large");
        return -1;
    }
    Py_ssize_t want = s->len + need;
    if (want <= s->cap) {
        return 0;
    }
    Py_ssize_t cap = s->cap < PY_SSIZE_T_MAX / 2 ? s->cap * 2 : PY_SSIZE_T_MAX;
    if (cap < want + 4096) {
        cap = want <= PY_SSIZE_T_MAX - 4096 ? want + 4096 : want;
    }
    if (PyByteArray_Resize(s->out, cap) < 0) {
        return -1;
    }
    s->cap = cap;
    return 0;
}


int sink_write(Sink *s, const void *src, Py_ssize_t n) {
    if (n <= 0) {
        return 0;
    }
    if (sink_reserve(s, n) < 0) {
        return -1;
    }
    memcpy(sink_at(s), src, (size_t)n);
    s->len += n;
    return 0;
}

/* Cut the bytearray to what was written (success) or to its length at the call (failure). */
static int sink_finish(Sink *s, int ok) {
    Py_ssize_t size = ok ? s->len : s->start;
    if (PyByteArray_GET_SIZE(s->out) == size) {
        return 0;
    }
    if (ok) {
        return PyByteArray_Resize(s->out, size);
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyByteArray_Resize(s->out, size) < 0) {
        PyErr_Clear(); /* shrinking does not fail; the masker's error is the one to report */
    }
    PyErr_Restore(type, value, tb);
    return 0;
}

/* A Python masker must not touch the output buffer: the cached size would be wrong. */
int sink_check(Sink *s) {
    if (PyByteArray_GET_SIZE(s->out) != s->cap) {
        PyErr_SetString(PyExc_RuntimeError, "the row output buffer changed size during a masker call");
        return -1;
    }
    return 0;
}

/* --- column entries ------------------------------------------------------------------- */

/* Parse the columns tuple: None (pass through) or (code, first, last, masker, tally). */
static int parse_columns(PyObject *columns, Column *cols, Py_ssize_t n, Py_ssize_t *masked_per_row) {
    *masked_per_row = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyTuple_GET_ITEM(columns, i);
        Column *c = &cols[i];
        memset(c, 0, sizeof(*c));
        if (entry == Py_None) {
            c->code = OP_PASS;
            continue;
        }
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 5) {
            PyErr_Format(PyExc_TypeError, "column %zd: expected None or a 5-tuple", i);
            return -1;
        }
        long code = PyLong_AsLong(PyTuple_GET_ITEM(entry, 0));
        if (code == -1 && PyErr_Occurred()) {
            return -1;
        }
        Py_ssize_t first = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 1));
        if (first == -1 && PyErr_Occurred()) {
            return -1;
        }
        Py_ssize_t last = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
        if (last == -1 && PyErr_Occurred()) {
            return -1;
        }
        PyObject *masker = PyTuple_GET_ITEM(entry, 3);
        PyObject *tally = PyTuple_GET_ITEM(entry, 4);
        if (code < OP_CALL || code > OP_LAST) {
            PyErr_Format(PyExc_ValueError, "column %zd: unknown operation %ld", i, code);
            return -1;
        }
        if (first < 0 || last < 0 || first > MAX_KEEP || last > MAX_KEEP) {
            PyErr_Format(PyExc_ValueError, "column %zd: kept lengths out of range", i);
            return -1;
        }
        if (!PyCallable_Check(masker)) {
            PyErr_Format(PyExc_TypeError, "column %zd: the masker is not callable", i);
            return -1;
        }
        if (tally == Py_None) {
            tally = NULL;
        } else if (!PyList_Check(tally) || PyList_GET_SIZE(tally) < 1) {
            PyErr_Format(PyExc_TypeError, "column %zd: the tally must be None or a non-empty list", i);
            return -1;
        }
        c->code = (int)code;
        c->first = first;
        c->last = last;
        c->masker = masker;
        c->tally = tally;
        *masked_per_row += 1;
    }
    return 0;
}

/* Add what the built-in operations masked to each column's tally (tally[0] += done). */
static int add_tallies(Column *cols, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        Column *c = &cols[i];
        if (c->tally == NULL || c->done == 0) {
            continue;
        }
        if (PyList_GET_SIZE(c->tally) < 1) { /* a masker emptied it during the call */
            PyErr_SetString(PyExc_IndexError, "list index out of range");
            return -1;
        }
        PyObject *old = PyList_GET_ITEM(c->tally, 0);
        PyObject *inc = PyLong_FromSsize_t(c->done);
        if (inc == NULL) {
            return -1;
        }
        Py_INCREF(old); /* held across the addition, which may run Python code */
        PyObject *sum = PyNumber_Add(old, inc);
        Py_DECREF(old);
        Py_DECREF(inc);
        if (sum == NULL) {
            return -1;
        }
        if (PyList_SetItem(c->tally, 0, sum) < 0) { /* steals sum */
            return -1;
        }
        c->done = 0;
    }
    return 0;
}

/* --- the built-in ASCII operations (masking/functions.py AsciiOp) ----------------------- */



/* functions.email_ascii: local part's first character, "***@", the domain (after the last '@'). */
static Py_ssize_t email_op(const unsigned char *v, Py_ssize_t n, unsigned char *dst) {
    Py_ssize_t at = n - 1;
    while (at >= 0 && v[at] != '@') {
        at--;
    }
    /* no '@', an empty domain, or a local part shorter than two characters: the full mask */
    if (at < 2 || at == n - 1) {
        memcpy(dst, FULL_TEXT, FULL_LEN);
        return FULL_LEN;
    }
    Py_ssize_t domain = n - at - 1;
    dst[0] = v[0];
    memcpy(dst + 1, "***@", 4);
    memcpy(dst + 5, v + at + 1, (size_t)domain);
    return 5 + domain; /* at most n + 2: the local part has two characters or more */
}

/* The ASCII characters Python's str.strip() removes (str.isspace). */
static inline int ascii_space(unsigned char b) { return b == ' ' || (b >= 0x09 && b <= 0x0D) || (b >= 0x1C && b <= 0x1F); }

/* functions.name_ascii: stripped; the first character, then '*' for each one after it, spaces kept. */
static Py_ssize_t name_op(const unsigned char *v, Py_ssize_t n, unsigned char *dst) {
    Py_ssize_t a = 0, b = n;
    while (a < b && ascii_space(v[a])) {
        a++;
    }
    while (b > a && ascii_space(v[b - 1])) {
        b--;
    }
    if (b - a < 2) {
        memcpy(dst, FULL_TEXT, FULL_LEN);
        return FULL_LEN;
    }
    dst[0] = v[a];
    for (Py_ssize_t i = a + 1; i < b; i++) {
        dst[i - a] = v[i] == ' ' ? ' ' : '*';
    }
    return b - a;
}

/*
 * The masked value of an ASCII value when this column's operation does it in
 * place: writes it to dst (at most n + FULL_LEN bytes) and returns its length;
 * -1 when the column's masker must do it (the Python path of the same operation).
 */
Py_ssize_t ascii_op(const Column *c, const unsigned char *v, Py_ssize_t n, unsigned char *dst) {
    Py_ssize_t first = c->first, last = c->last;
    switch (c->code) {
    case OP_FULL:
        memcpy(dst, FULL_TEXT, FULL_LEN);
        return FULL_LEN;
    case OP_EMAIL:
        return email_op(v, n, dst);
    case OP_NAME:
        return name_op(v, n, dst);
    case OP_MOBILE:
        if (n != 11 || !all_digits(v, n)) {
            return -1;
        }
        first = 3;
        last = 4;
        break;
    case OP_KEEP_DIGITS:
        if (!all_digits(v, n)) {
            return -1;
        }
        break;
    case OP_KEEP:
        break;
    default:
        return -1;
    }
    /* keep(value, first, last): at least one character and a third of them hidden, or the full mask. */
    Py_ssize_t hidden = n - first - last;
    if (hidden < 1 || hidden * 3 < n) {
        memcpy(dst, FULL_TEXT, FULL_LEN);
        return FULL_LEN;
    }
    memcpy(dst, v, (size_t)first);
    memset(dst + first, '*', (size_t)hidden);
    memcpy(dst + first + hidden, v + n - last, (size_t)last);
    return n;
}

/*
 * The replacement of one value through the column's Python masker: a new
 * reference to bytes or bytearray, Py_None (borrowed semantics: returned with a
 * reference) for NULL, or NULL with an exception set.
 */
PyObject *call_masker(const Column *c, const unsigned char *v, Py_ssize_t n) {
    PyObject *arg;
    if (n < 0) {
        arg = Py_None;
        Py_INCREF(arg);
    } else {
        arg = PyBytes_FromStringAndSize((const char *)v, n);
        if (arg == NULL) {
            return NULL;
        }
    }
    PyObject *res = PyObject_CallOneArg(c->masker, arg);
    Py_DECREF(arg);
    if (res == NULL) {
        return NULL;
    }
    if (res != Py_None && !PyBytes_Check(res) && !PyByteArray_Check(res)) {
        PyErr_Format(PyExc_TypeError, "a masker returned %.100s, not bytes or None", Py_TYPE(res)->tp_name);
        Py_DECREF(res);
        return NULL;
    }
    return res;
}

/* --- one call's state ------------------------------------------------------------------- */

int call_begin(Call *k, PyObject *data, Py_ssize_t pos, Py_ssize_t end, PyObject *columns, PyObject *out) {
    memset(k, 0, sizeof(*k));
    if (!PyTuple_Check(columns)) {
        PyErr_SetString(PyExc_TypeError, "columns must be a tuple");
        return -1;
    }
    if (!PyByteArray_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "out must be a bytearray");
        return -1;
    }
    k->ncols = PyTuple_GET_SIZE(columns);
    if (k->ncols < 1 || k->ncols > MAX_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "a row program has 1 to 65535 columns");
        return -1;
    }
    if (PyObject_GetBuffer(data, &k->buf, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (pos < 0 || end < pos || end > k->buf.len) {
        PyBuffer_Release(&k->buf);
        PyErr_SetString(PyExc_ValueError, "pos and end must satisfy 0 <= pos <= end <= len(data)");
        return -1;
    }
    k->cols = PyMem_New(Column, (size_t)k->ncols);
    k->fields = PyMem_New(Field, (size_t)k->ncols);
    if (k->cols == NULL || k->fields == NULL) {
        PyMem_Free(k->cols);
        PyMem_Free(k->fields);
        PyBuffer_Release(&k->buf);
        PyErr_NoMemory();
        return -1;
    }
    if (parse_columns(columns, k->cols, k->ncols, &k->masked_per_row) < 0) {
        PyMem_Free(k->cols);
        PyMem_Free(k->fields);
        PyBuffer_Release(&k->buf);
        return -1;
    }
    k->sink.out = out;
    k->sink.start = k->sink.len = k->sink.cap = PyByteArray_GET_SIZE(out);
    /* Masked rows are usually no longer than the received ones: one allocation for the chunk. */
    if (end > pos && sink_reserve(&k->sink, end - pos + 64) < 0) {
        PyMem_Free(k->cols);
        PyMem_Free(k->fields);
        PyBuffer_Release(&k->buf);
        return -1;
    }
    return 0;
}

int call_end(Call *k, int ok) {
    if (ok && add_tallies(k->cols, k->ncols) < 0) {
        ok = 0;
    }
    if (sink_finish(&k->sink, ok) < 0) {
        ok = 0;
    }
    PyMem_Free(k->cols);
    PyMem_Free(k->fields);
    PyBuffer_Release(&k->buf);
    return ok ? 0 : -1;
}

/* --- MySQL int<lenenc> ------------------------------------------------------------------ */

/* int<lenenc> of n into dst (room for 9 bytes); returns its size (page_protocol_basic_dt_integers). */
Py_ssize_t put_lenenc(unsigned char *dst, uint64_t n) {
    Py_ssize_t width;
    if (n < 0xFB) {
        dst[0] = (unsigned char)n;
        return 1;
    }
    if (n < (1u << 16)) {
        dst[0] = 0xFC;
        width = 2;
    } else if (n < (1u << 24)) {
        dst[0] = 0xFD;
        width = 3;
    } else {
        dst[0] = 0xFE;
        width = 8;
    }
    for (Py_ssize_t j = 0; j < width; j++) {
        dst[1 + j] = (unsigned char)(n >> (8 * j));
    }
    return 1 + width;
}

PyDoc_STRVAR(pg_rewrite_doc,
             "pg_rewrite(data, pos, end, columns, limit, max_length, out) -> (pos, rows, masked)\n\n"
             "Rewrite the run of complete DataRow messages in data[pos:end], at most limit rows,\n"
             "appending them to the bytearray out. See sqlbastion.masking.rowref.pg_rewrite.");

PyDoc_STRVAR(mysql_rewrite_doc,
             "mysql_rewrite(data, pos, end, columns, limit, seq, eof_limit, out) -> (pos, rows, masked, seq)\n\n"
             "Rewrite the run of complete text-protocol row packets in data[pos:end], at most limit rows,\n"
             "appending them to the bytearray out. See sqlbastion.masking.rowref.mysql_rewrite.");

PyDoc_STRVAR(mysql_binary_rewrite_doc,
             "mysql_binary_rewrite(data, pos, end, columns, layout, limit, seq, eof_limit, out)\n"
             "-> (pos, rows, masked, seq)\n\n"
             "Rewrite the run of complete binary-protocol row packets in data[pos:end]. See\n"
             "sqlbastion.masking.rowref.mysql_binary_rewrite.");

/* --- the module ----------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"pg_rewrite", (PyCFunction)(void (*)(void))pg_rewrite, METH_FASTCALL, pg_rewrite_doc},
    {"mysql_rewrite", (PyCFunction)(void (*)(void))mysql_rewrite, METH_FASTCALL, mysql_rewrite_doc},
    {"mysql_binary_rewrite", (PyCFunction)(void (*)(void))mysql_binary_rewrite, METH_FASTCALL,
     mysql_binary_rewrite_doc},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *m) {
    if (PyModule_AddIntConstant(m, "OP_CALL", OP_CALL) < 0 || PyModule_AddIntConstant(m, "OP_FULL", OP_FULL) < 0 ||
        PyModule_AddIntConstant(m, "OP_KEEP", OP_KEEP) < 0 || PyModule_AddIntConstant(m, "OP_MOBILE", OP_MOBILE) < 0 ||
        PyModule_AddIntConstant(m, "OP_KEEP_DIGITS", OP_KEEP_DIGITS) < 0 ||
        PyModule_AddIntConstant(m, "OP_EMAIL", OP_EMAIL) < 0 || PyModule_AddIntConstant(m, "OP_NAME", OP_NAME) < 0 ||
        PyModule_AddIntConstant(m, "MAX_KEEP", MAX_KEEP) < 0 ||
        PyModule_AddIntConstant(m, "LAYOUT_TEMPORAL", LAYOUT_TEMPORAL) < 0 ||
        PyModule_AddIntConstant(m, "LAYOUT_LENENC", LAYOUT_LENENC) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sqlbastion._rowfast",
    .m_doc = "Masked result rows rewritten a received chunk at a time (see sqlbastion.masking.rows).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC PyInit__rowfast(void) { return PyModuleDef_Init(&module_def); }

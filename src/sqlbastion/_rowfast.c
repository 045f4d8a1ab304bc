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
 * Wire formats:
 *  - PostgreSQL DataRow (PostgreSQL 15 documentation, 55.7 "Message Formats"):
 *    Byte1('D'), Int32 length including itself, Int16 column count, then per
 *    column Int32 value length (-1 = NULL) and that many bytes. Big-endian.
 *  - MySQL text resultset row (page_protocol_basic_packets: int<3> payload
 *    length, int<1> sequence id; page_protocol_com_query_response_text_resultset_row:
 *    per column a string<lenenc>, or 0xFB for NULL; int<lenenc> is one byte
 *    below 0xFB, or 0xFC + int<2>, 0xFD + int<3>, 0xFE + int<8>).
 *
 * Errors: a masker's exception propagates; the output bytearray is then
 * restored to its length at the call and no count is added, so the caller's
 * state is exactly as before the call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Column operation codes; masking/rowref.py holds the same values (checked by a test). */
enum {
    OP_PASS = 0,        /* never in a column entry: the entry is None */
    OP_CALL = 1,        /* the Python masker for every value, NULL included */
    OP_FULL = 2,        /* AsciiOp "full" */
    OP_KEEP = 3,        /* AsciiOp "keep" */
    OP_MOBILE = 4,      /* AsciiOp "mobile" */
    OP_KEEP_DIGITS = 5, /* AsciiOp "keep_digits" */
    OP_EMAIL = 6,       /* AsciiOp "email" */
    OP_NAME = 7,        /* AsciiOp "name" (functions.chinese_name on an ASCII value) */
    OP_LAST = OP_NAME,
};

/* A kept prefix or suffix longer than this is refused in the column entry
 * (masking/spec.py bounds the parameters far lower). */
#define MAX_KEEP 4096
#define MAX_COLUMNS 65535 /* the Int16 column count of a DataRow; MySQL allows 4096 */
#define MYSQL_MAX_PIECE 0xFFFFFF

static const char FULL_TEXT[] = "****"; /* functions.FULL_TEXT */
#define FULL_LEN 4

typedef struct {
    int code;
    Py_ssize_t first, last;
    PyObject *masker; /* borrowed from the columns tuple */
    PyObject *tally;  /* borrowed: a list whose item 0 counts values, or NULL */
    Py_ssize_t done;  /* values this call masked in C (added to the tally at the end) */
} Column;

typedef struct {
    Py_ssize_t start; /* PostgreSQL: offset of the Int32 length; MySQL: of the lenenc header */
    Py_ssize_t value; /* offset of the value bytes */
    Py_ssize_t len;   /* value length, -1 for NULL */
} Field;

/* The output: the bytearray is grown ahead of the writes and cut to size at the end. */
typedef struct {
    PyObject *out;
    Py_ssize_t start; /* its length at the call */
    Py_ssize_t len;   /* bytes written so far (including start) */
    Py_ssize_t cap;   /* its current size */
} Sink;

static int sink_reserve(Sink *s, Py_ssize_t need) {
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

static inline char *sink_at(Sink *s) { return PyByteArray_AS_STRING(s->out) + s->len; }

static int sink_write(Sink *s, const void *src, Py_ssize_t n) {
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
static int sink_check(Sink *s) {
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

static inline int all_ascii(const unsigned char *v, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] & 0x80) {
            return 0;
        }
    }
    return 1;
}

static inline int all_digits(const unsigned char *v, Py_ssize_t n) {
    if (n == 0) {
        return 0; /* b"".isdigit() is False */
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return 0;
        }
    }
    return 1;
}

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
static Py_ssize_t ascii_op(const Column *c, const unsigned char *v, Py_ssize_t n, unsigned char *dst) {
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
static PyObject *call_masker(const Column *c, const unsigned char *v, Py_ssize_t n) {
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

static inline void res_data(PyObject *res, const char **data, Py_ssize_t *len) {
    if (PyBytes_Check(res)) {
        *data = PyBytes_AS_STRING(res);
        *len = PyBytes_GET_SIZE(res);
    } else {
        *data = PyByteArray_AS_STRING(res);
        *len = PyByteArray_GET_SIZE(res);
    }
}

/* --- PostgreSQL DataRow -------------------------------------------------------------- */

static inline uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Validate the DataRow body at data[body, end): column count and every field inside it. */
static int pg_fields(const unsigned char *data, Py_ssize_t body, Py_ssize_t end, Py_ssize_t ncols, Field *f) {
    if (end - body < 2 || (Py_ssize_t)((data[body] << 8) | data[body + 1]) != ncols) {
        return 0;
    }
    Py_ssize_t q = body + 2;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (end - q < 4) {
            return 0;
        }
        int32_t len = (int32_t)be32(data + q);
        f[i].start = q;
        f[i].value = q + 4;
        if (len == -1) {
            f[i].len = -1;
            q += 4;
            continue;
        }
        if (len < 0 || (Py_ssize_t)len > end - q - 4) {
            return 0;
        }
        f[i].len = len;
        q += 4 + (Py_ssize_t)len;
    }
    return q == end;
}

/* Append one masked value as Int32 length + bytes (or -1 for NULL). */
static int pg_value(Sink *s, Column *c, const unsigned char *data, const Field *f) {
    const unsigned char *v = data + f->value;
    Py_ssize_t n = f->len;
    if (n >= 0 && c->code != OP_CALL && all_ascii(v, n)) {
        if (sink_reserve(s, 4 + n + FULL_LEN) < 0) {
            return -1;
        }
        unsigned char *dst = (unsigned char *)sink_at(s);
        Py_ssize_t m = ascii_op(c, v, n, dst + 4);
        if (m >= 0) {
            put_be32(dst, (uint32_t)m);
            s->len += 4 + m;
            c->done++;
            return 0;
        }
    }
    if (n < 0 && c->code != OP_CALL) {
        return sink_write(s, "\xff\xff\xff\xff", 4); /* NULL stays NULL */
    }
    PyObject *res = call_masker(c, v, n);
    if (res == NULL || sink_check(s) < 0) {
        Py_XDECREF(res);
        return -1;
    }
    int rc;
    if (res == Py_None) {
        rc = sink_write(s, "\xff\xff\xff\xff", 4);
    } else {
        const char *d;
        Py_ssize_t len;
        res_data(res, &d, &len);
        if (len > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "a masked value is too long for a DataRow");
            rc = -1;
        } else {
            unsigned char head[4];
            put_be32(head, (uint32_t)len);
            rc = sink_write(s, head, 4);
            if (rc == 0) {
                res_data(res, &d, &len); /* the masker's object is unchanged; reread for clarity */
                rc = sink_write(s, d, len);
            }
        }
    }
    Py_DECREF(res);
    return rc;
}

typedef struct {
    Py_buffer buf;
    Sink sink;
    Column *cols;
    Field *fields;
    Py_ssize_t ncols;
    Py_ssize_t masked_per_row;
} Call;

static int call_begin(Call *k, PyObject *data, Py_ssize_t pos, Py_ssize_t end, PyObject *columns, PyObject *out) {
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

static int call_end(Call *k, int ok) {
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

PyDoc_STRVAR(pg_rewrite_doc,
             "pg_rewrite(data, pos, end, columns, limit, max_length, out) -> (pos, rows, masked)\n\n"
             "Rewrite the run of complete DataRow messages in data[pos:end], at most limit rows,\n"
             "appending them to the bytearray out. See sqlbastion.masking.rowref.pg_rewrite.");

static PyObject *pg_rewrite(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "pg_rewrite takes 7 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[4]);
    Py_ssize_t max_length = PyLong_AsSsize_t(args[5]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Call k;
    if (call_begin(&k, args[0], pos, end, args[3], args[6]) < 0) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)k.buf.buf;
    Py_ssize_t rows = 0;
    int ok = 1;
    while (rows < limit && end - pos >= 5 && data[pos] == 'D') {
        uint32_t length = be32(data + pos + 1);
        /* Int32 length counts itself: 4 + Int16 count at least. Longer than allowed or than the
         * chunk holds: not consumed (the caller raises, or waits for the rest). */
        if (length < 6 || (Py_ssize_t)length > max_length || (Py_ssize_t)length > end - pos - 1) {
            break;
        }
        Py_ssize_t msg_end = pos + 1 + (Py_ssize_t)length;
        if (!pg_fields(data, pos + 5, msg_end, k.ncols, k.fields)) {
            break;
        }
        Py_ssize_t row_start = k.sink.len;
        if (sink_reserve(&k.sink, 7) < 0) {
            ok = 0;
            break;
        }
        char *h = sink_at(&k.sink);
        h[0] = 'D';
        memcpy(h + 5, data + pos + 5, 2); /* the column count, as received */
        k.sink.len += 7;
        Py_ssize_t copy_from = pos + 7;
        for (Py_ssize_t i = 0; i < k.ncols && ok; i++) {
            Column *c = &k.cols[i];
            if (c->code == OP_PASS) {
                continue;
            }
            const Field *f = &k.fields[i];
            if (sink_write(&k.sink, data + copy_from, f->start - copy_from) < 0 ||
                pg_value(&k.sink, c, data, f) < 0) {
                ok = 0;
                break;
            }
            copy_from = f->value + (f->len > 0 ? f->len : 0);
        }
        if (!ok || sink_write(&k.sink, data + copy_from, msg_end - copy_from) < 0) {
            ok = 0;
            break;
        }
        Py_ssize_t new_length = k.sink.len - row_start - 1;
        if (new_length > INT32_MAX) {
            k.sink.len = row_start; /* too long to frame: the caller's path reports it */
            break;
        }
        put_be32((unsigned char *)PyByteArray_AS_STRING(k.sink.out) + row_start + 1, (uint32_t)new_length);
        rows++;
        pos = msg_end;
    }
    if (call_end(&k, ok) < 0) {
        return NULL;
    }
    return Py_BuildValue("(nnn)", pos, rows, rows * k.masked_per_row);
}

/* --- MySQL text rows ------------------------------------------------------------------ */

/* Validate the text row payload data[start, end): ncols values exactly filling it. */
static int mysql_fields(const unsigned char *data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t ncols, Field *f) {
    Py_ssize_t q = start;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (q >= end) {
            return 0;
        }
        unsigned char b = data[q];
        f[i].start = q;
        if (b == 0xFB) {
            f[i].value = q + 1;
            f[i].len = -1;
            q += 1;
            continue;
        }
        Py_ssize_t header;
        uint64_t len;
        if (b < 0xFB) {
            header = 1;
            len = b;
        } else {
            header = b == 0xFC ? 3 : b == 0xFD ? 4 : b == 0xFE ? 9 : 0;
            if (header == 0 || header > end - q) {
                return 0;
            }
            len = 0;
            for (Py_ssize_t j = header - 1; j >= 1; j--) {
                len = len << 8 | data[q + j];
            }
        }
        if (len > (uint64_t)(end - q - header)) {
            return 0;
        }
        f[i].value = q + header;
        f[i].len = (Py_ssize_t)len;
        q += header + (Py_ssize_t)len;
    }
    return q == end;
}

/* int<lenenc> of n into dst (room for 9 bytes); returns its size (page_protocol_basic_dt_integers). */
static Py_ssize_t put_lenenc(unsigned char *dst, uint64_t n) {
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

static int mysql_value(Sink *s, Column *c, const unsigned char *data, const Field *f) {
    const unsigned char *v = data + f->value;
    Py_ssize_t n = f->len;
    if (n >= 0 && c->code != OP_CALL && all_ascii(v, n)) {
        /* the masked value is at most n + FULL_LEN bytes: its length prefix at most 9 */
        if (sink_reserve(s, 9 + n + FULL_LEN) < 0) {
            return -1;
        }
        unsigned char tmp[9];
        unsigned char *dst = (unsigned char *)sink_at(s);
        /* Write the value after the widest prefix, then move it next to the actual one. */
        Py_ssize_t m = ascii_op(c, v, n, dst + 9);
        if (m >= 0) {
            Py_ssize_t h = put_lenenc(tmp, (uint64_t)m);
            memmove(dst + h, dst + 9, (size_t)m);
            memcpy(dst, tmp, (size_t)h);
            s->len += h + m;
            c->done++;
            return 0;
        }
    }
    if (n < 0 && c->code != OP_CALL) {
        return sink_write(s, "\xfb", 1); /* NULL stays NULL */
    }
    PyObject *res = call_masker(c, v, n);
    if (res == NULL || sink_check(s) < 0) {
        Py_XDECREF(res);
        return -1;
    }
    int rc;
    if (res == Py_None) {
        rc = sink_write(s, "\xfb", 1);
    } else {
        const char *d;
        Py_ssize_t len;
        res_data(res, &d, &len);
        unsigned char head[9];
        Py_ssize_t h = put_lenenc(head, (uint64_t)len);
        rc = sink_write(s, head, h);
        if (rc == 0) {
            rc = sink_write(s, d, len);
        }
    }
    Py_DECREF(res);
    return rc;
}

PyDoc_STRVAR(mysql_rewrite_doc,
             "mysql_rewrite(data, pos, end, columns, limit, seq, eof_limit, out) -> (pos, rows, masked, seq)\n\n"
             "Rewrite the run of complete text-protocol row packets in data[pos:end], at most limit rows,\n"
             "appending them to the bytearray out. See sqlbastion.masking.rowref.mysql_rewrite.");

static PyObject *mysql_rewrite(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "mysql_rewrite takes 8 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[4]);
    Py_ssize_t seq = PyLong_AsSsize_t(args[5]);
    Py_ssize_t eof_limit = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (seq < 0 || seq > 0xFF) {
        PyErr_SetString(PyExc_ValueError, "seq must be 0..255");
        return NULL;
    }
    Call k;
    if (call_begin(&k, args[0], pos, end, args[3], args[7]) < 0) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)k.buf.buf;
    Py_ssize_t rows = 0;
    int ok = 1;
    while (rows < limit && end - pos >= 4) {
        Py_ssize_t length = (Py_ssize_t)data[pos] | (Py_ssize_t)data[pos + 1] << 8 | (Py_ssize_t)data[pos + 2] << 16;
        /* A 0xFFFFFF-byte piece starts a packet of 16 MiB or more, an empty payload is no row,
         * another sequence id needs renumbering: all left to the caller's path. */
        if (length == MYSQL_MAX_PIECE || length == 0 || length > end - pos - 4 || data[pos + 3] != seq) {
            break;
        }
        Py_ssize_t start = pos + 4, msg_end = pos + 4 + length;
        unsigned char b0 = data[start];
        if (b0 == 0xFF || (b0 == 0xFE && length < eof_limit)) {
            break; /* ERR, or the EOF / OK that ends the rows (results.py ResponseRelay._on_row) */
        }
        if (!mysql_fields(data, start, msg_end, k.ncols, k.fields)) {
            break;
        }
        Py_ssize_t row_start = k.sink.len;
        if (sink_reserve(&k.sink, 4) < 0) {
            ok = 0;
            break;
        }
        sink_at(&k.sink)[3] = (char)seq;
        k.sink.len += 4;
        Py_ssize_t copy_from = start;
        for (Py_ssize_t i = 0; i < k.ncols && ok; i++) {
            Column *c = &k.cols[i];
            if (c->code == OP_PASS) {
                continue;
            }
            const Field *f = &k.fields[i];
            if (sink_write(&k.sink, data + copy_from, f->start - copy_from) < 0 ||
                mysql_value(&k.sink, c, data, f) < 0) {
                ok = 0;
                break;
            }
            copy_from = f->value + (f->len > 0 ? f->len : 0);
        }
        if (!ok || sink_write(&k.sink, data + copy_from, msg_end - copy_from) < 0) {
            ok = 0;
            break;
        }
        Py_ssize_t new_length = k.sink.len - row_start - 4;
        if (new_length >= MYSQL_MAX_PIECE) {
            k.sink.len = row_start; /* would need splitting into pieces: the caller's path frames it */
            break;
        }
        unsigned char *h = (unsigned char *)PyByteArray_AS_STRING(k.sink.out) + row_start;
        h[0] = (unsigned char)new_length;
        h[1] = (unsigned char)(new_length >> 8);
        h[2] = (unsigned char)(new_length >> 16);
        rows++;
        seq = (seq + 1) & 0xFF;
        pos = msg_end;
    }
    if (call_end(&k, ok) < 0) {
        return NULL;
    }
    return Py_BuildValue("(nnnn)", pos, rows, rows * k.masked_per_row, seq);
}

/* --- MySQL binary rows ---------------------------------------------------------------- */

/*
 * page_protocol_binary_resultset_row: 0x00, a NULL bitmap of (columns + 7 + 2) / 8
 * bytes (bit i + 2 for column i), then each non-NULL value in its binary form. A
 * column's layout (masking.rowref.binary_layout): >= 0 a fixed width, LAYOUT_TEMPORAL
 * one length byte (at most 12) and that many bytes, LAYOUT_LENENC a string<lenenc>.
 */
#define LAYOUT_TEMPORAL (-1)
#define LAYOUT_LENENC (-2)
#define MAX_TEMPORAL 12

static int binary_fields(const unsigned char *data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t ncols,
                         const Py_ssize_t *layout, Field *f) {
    Py_ssize_t nb = (ncols + 9) / 8;
    if (end - start < 1 + nb || data[start] != 0x00) {
        return 0;
    }
    const unsigned char *bitmap = data + start + 1;
    Py_ssize_t q = start + 1 + nb;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        Py_ssize_t bit = i + 2;
        f[i].start = q;
        if (bitmap[bit >> 3] & (1 << (bit & 7))) {
            f[i].value = q;
            f[i].len = -1;
            continue;
        }
        Py_ssize_t header;
        uint64_t len;
        if (layout[i] >= 0) {
            header = 0;
            len = (uint64_t)layout[i];
        } else if (layout[i] == LAYOUT_TEMPORAL) {
            if (q >= end || data[q] > MAX_TEMPORAL) {
                return 0;
            }
            header = 1;
            len = data[q];
        } else {
            if (q >= end) {
                return 0;
            }
            unsigned char b = data[q];
            if (b < 0xFB) {
                header = 1;
                len = b;
            } else {
                header = b == 0xFC ? 3 : b == 0xFD ? 4 : b == 0xFE ? 9 : 0;
                if (header == 0 || header > end - q) {
                    return 0;
                }
                len = 0;
                for (Py_ssize_t j = header - 1; j >= 1; j--) {
                    len = len << 8 | data[q + j];
                }
            }
        }
        if (len > (uint64_t)(end - q - header)) {
            return 0;
        }
        f[i].value = q + header;
        f[i].len = (Py_ssize_t)len;
        q += header + (Py_ssize_t)len;
    }
    return q == end;
}

/* The replacement of a binary value in its column's layout; 0 when it does not fit the layout
 * (a fixed-width value of another width, a temporal value over 12 bytes). */
static int binary_value_fits(Py_ssize_t layout, Py_ssize_t len) {
    if (layout >= 0) {
        return len == layout;
    }
    if (layout == LAYOUT_TEMPORAL) {
        return len <= MAX_TEMPORAL;
    }
    return 1;
}

static int binary_write(Sink *s, Py_ssize_t layout, const void *d, Py_ssize_t len) {
    unsigned char head[9];
    Py_ssize_t h = 0;
    if (layout == LAYOUT_TEMPORAL) {
        head[0] = (unsigned char)len;
        h = 1;
    } else if (layout == LAYOUT_LENENC) {
        h = put_lenenc(head, (uint64_t)len);
    }
    if (sink_write(s, head, h) < 0) {
        return -1;
    }
    return sink_write(s, d, len);
}

/*
 * One masked binary value (or NULL): 1 written, 0 when the replacement does not fit the
 * layout (nothing written: the caller's path refuses the result), -1 on error.
 * *null_after tells whether the value is NULL in the rewritten row.
 */
static int binary_value(Sink *s, Column *c, const unsigned char *data, const Field *f, Py_ssize_t layout,
                        int *null_after) {
    const unsigned char *v = data + f->value;
    Py_ssize_t n = f->len;
    *null_after = 0;
    if (n >= 0 && c->code != OP_CALL && layout == LAYOUT_LENENC && all_ascii(v, n)) {
        if (sink_reserve(s, 9 + n + FULL_LEN) < 0) {
            return -1;
        }
        unsigned char tmp[9];
        unsigned char *dst = (unsigned char *)sink_at(s);
        Py_ssize_t m = ascii_op(c, v, n, dst + 9);
        if (m >= 0) {
            Py_ssize_t h = put_lenenc(tmp, (uint64_t)m);
            memmove(dst + h, dst + 9, (size_t)m);
            memcpy(dst, tmp, (size_t)h);
            s->len += h + m;
            c->done++;
            return 1;
        }
    }
    if (n < 0 && c->code != OP_CALL) {
        *null_after = 1; /* NULL stays NULL */
        return 1;
    }
    PyObject *res = call_masker(c, v, n);
    if (res == NULL || sink_check(s) < 0) {
        Py_XDECREF(res);
        return -1;
    }
    int rc = 1;
    if (res == Py_None) {
        *null_after = 1;
    } else {
        const char *d;
        Py_ssize_t len;
        res_data(res, &d, &len);
        if (!binary_value_fits(layout, len)) {
            rc = 0;
        } else if (binary_write(s, layout, d, len) < 0) {
            rc = -1;
        }
    }
    Py_DECREF(res);
    return rc;
}

PyDoc_STRVAR(mysql_binary_rewrite_doc,
             "mysql_binary_rewrite(data, pos, end, columns, layout, limit, seq, eof_limit, out)\n"
             "-> (pos, rows, masked, seq)\n\n"
             "Rewrite the run of complete binary-protocol row packets in data[pos:end]. See\n"
             "sqlbastion.masking.rowref.mysql_binary_rewrite.");

static PyObject *mysql_binary_rewrite(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "mysql_binary_rewrite takes 9 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[5]);
    Py_ssize_t seq = PyLong_AsSsize_t(args[6]);
    Py_ssize_t eof_limit = PyLong_AsSsize_t(args[7]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (seq < 0 || seq > 0xFF) {
        PyErr_SetString(PyExc_ValueError, "seq must be 0..255");
        return NULL;
    }
    PyObject *layout_obj = args[4];
    if (!PyTuple_Check(layout_obj) || !PyTuple_Check(args[3]) ||
        PyTuple_GET_SIZE(layout_obj) != PyTuple_GET_SIZE(args[3])) {
        PyErr_SetString(PyExc_ValueError, "layout must be a tuple with one entry per column");
        return NULL;
    }
    Call k;
    if (call_begin(&k, args[0], pos, end, args[3], args[8]) < 0) {
        return NULL;
    }
    Py_ssize_t *layout = PyMem_New(Py_ssize_t, (size_t)k.ncols);
    if (layout == NULL) {
        PyErr_NoMemory();
        call_end(&k, 0);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < k.ncols; i++) {
        layout[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(layout_obj, i));
        if ((layout[i] == -1 && PyErr_Occurred()) || layout[i] < LAYOUT_LENENC || layout[i] > 8) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_ValueError, "column %zd: unknown layout", i);
            }
            PyMem_Free(layout);
            call_end(&k, 0);
            return NULL;
        }
    }
    const unsigned char *data = (const unsigned char *)k.buf.buf;
    Py_ssize_t nb = (k.ncols + 9) / 8;
    Py_ssize_t rows = 0;
    int ok = 1;
    while (rows < limit && end - pos >= 4) {
        Py_ssize_t length = (Py_ssize_t)data[pos] | (Py_ssize_t)data[pos + 1] << 8 | (Py_ssize_t)data[pos + 2] << 16;
        if (length == MYSQL_MAX_PIECE || length == 0 || length > end - pos - 4 || data[pos + 3] != seq) {
            break;
        }
        Py_ssize_t start = pos + 4, msg_end = pos + 4 + length;
        unsigned char b0 = data[start];
        if (b0 == 0xFF || (b0 == 0xFE && length < eof_limit)) {
            break;
        }
        if (!binary_fields(data, start, msg_end, k.ncols, layout, k.fields)) {
            break;
        }
        Py_ssize_t row_start = k.sink.len;
        if (sink_reserve(&k.sink, 5 + nb) < 0) {
            ok = 0;
            break;
        }
        char *h = sink_at(&k.sink);
        h[3] = (char)seq;
        memcpy(h + 4, data + start, (size_t)(1 + nb)); /* 0x00 and the NULL bitmap, updated below */
        Py_ssize_t bitmap_at = row_start + 5;
        k.sink.len += 5 + nb;
        Py_ssize_t copy_from = start + 1 + nb;
        int fits = 1;
        for (Py_ssize_t i = 0; i < k.ncols && ok && fits; i++) {
            Column *c = &k.cols[i];
            if (c->code == OP_PASS) {
                continue;
            }
            const Field *f = &k.fields[i];
            if (sink_write(&k.sink, data + copy_from, f->start - copy_from) < 0) {
                ok = 0;
                break;
            }
            int null_after = 0;
            int rc = binary_value(&k.sink, c, data, f, layout[i], &null_after);
            if (rc < 0) {
                ok = 0;
                break;
            }
            if (rc == 0) {
                fits = 0;
                break;
            }
            Py_ssize_t bit = i + 2;
            unsigned char *bm = (unsigned char *)PyByteArray_AS_STRING(k.sink.out) + bitmap_at;
            if (null_after) {
                bm[bit >> 3] |= (unsigned char)(1 << (bit & 7));
            } else {
                bm[bit >> 3] &= (unsigned char)~(1 << (bit & 7));
            }
            copy_from = f->value + (f->len > 0 ? f->len : 0);
        }
        if (!ok) {
            break;
        }
        if (!fits) {
            k.sink.len = row_start; /* the caller's path meets the value again and refuses the result */
            break;
        }
        if (sink_write(&k.sink, data + copy_from, msg_end - copy_from) < 0) {
            ok = 0;
            break;
        }
        Py_ssize_t new_length = k.sink.len - row_start - 4;
        if (new_length >= MYSQL_MAX_PIECE) {
            k.sink.len = row_start;
            break;
        }
        unsigned char *hh = (unsigned char *)PyByteArray_AS_STRING(k.sink.out) + row_start;
        hh[0] = (unsigned char)new_length;
        hh[1] = (unsigned char)(new_length >> 8);
        hh[2] = (unsigned char)(new_length >> 16);
        rows++;
        seq = (seq + 1) & 0xFF;
        pos = msg_end;
    }
    PyMem_Free(layout);
    if (call_end(&k, ok) < 0) {
        return NULL;
    }
    return Py_BuildValue("(nnnn)", pos, rows, rows * k.masked_per_row, seq);
}

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

/*
 * sqlbastion._rowfast: PostgreSQL DataRow messages (PostgreSQL 15 documentation, 55.7
 * "Message Formats"): Byte1('D'), Int32 length including itself, Int16 column count, then
 * per column Int32 value length (-1 = NULL) and that many bytes, big-endian.
 * Semantics: sqlbastion/masking/rowref.py pg_rewrite.
 */
#include "_rowfast.h"

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

PyObject *pg_rewrite(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
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

/* ecal_table.c: in-place reader of .ecal tables. See ecal_table.h and edgecal/formats/ecal.py. */
#include "ecal_table.h"

#include <string.h> /* memcpy only */

/* Entry field offsets (version 1); K is the name length at ENT_NAME_LEN. */
enum { ENT_SCALE = 2, ENT_ZP = 6, ENT_DTYPE = 10, ENT_SCHEME = 11, ENT_FLAGS = 12, ENT_AMAX = 14,
       ENT_NAME_LEN = 22 };
/* Offsets inside the tail that follows the name. */
enum { TAIL_COUNTERS = 0, TAIL_MIN = 48, TAIL_MAX = 56, TAIL_SCALE = 64, TAIL_JSON_LEN = 72 };

/* Little-endian readers, byte by byte: the fields are unaligned and the host may be big-endian. */
static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32);
}

static double f64_of(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Bitwise, without the link's 1 KiB table: validating a table once is not time-critical. */
uint32_t ect_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    int bit;
    crc = ~crc;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        for (bit = 0; bit < 8; bit++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

/* Strict UTF-8, as Python's decoder: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0, k;
    while (i < n) {
        uint8_t c = s[i];
        size_t more = c < 0x80 ? 0 : (c >= 0xC2 && c <= 0xDF) ? 1 : (c >= 0xE0 && c <= 0xEF) ? 2
                    : (c >= 0xF0 && c <= 0xF4) ? 3 : 4;
        uint8_t lo = 0x80, hi = 0xBF;
        if (more == 4 || more > n - i - 1) {
            return 0;
        }
        if (c == 0xE0) { lo = 0xA0; }
        if (c == 0xED) { hi = 0x9F; }
        if (c == 0xF0) { lo = 0x90; }
        if (c == 0xF4) { hi = 0x8F; }
        for (k = 1; k <= more; k++) {
            if (s[i + k] < lo || s[i + k] > hi) {
                return 0;
            }
            lo = 0x80;
            hi = 0xBF;
        }
        i += more + 1;
    }
    return 1;
}

/* Whether the float32 bits s32 are the float64 bits s64 rounded to nearest, ties to even (as
 * the writer rounds the exact scale), for a positive normal float32; integer arithmetic only,
 * so no soft-float code is linked in on cores without a double-precision FPU. */
static int rounds_to(uint64_t s64, uint32_t s32)
{
    uint32_t exp = (uint32_t)(s64 >> 52) & 0x7FFu, r;
    uint64_t dropped = s64 & 0x1FFFFFFFu, half = 0x10000000u; /* the 29 mantissa bits float32 lacks */
    if ((s64 >> 63) != 0 || exp < 1023u - 126u || exp > 1023u + 127u) {
        return 0;
    }
    r = ((exp - 1023u + 127u) << 23) | (uint32_t)((s64 >> 29) & 0x7FFFFFu);
    if (dropped > half || (dropped == half && (r & 1u))) {
        r++; /* a carry into the exponent is the right result */
    }
    return r == s32 && (r >> 23) != 0xFFu;
}

/* The float32 scale is the exact scale rounded, a positive normal float32; amax is a positive
 * finite double of float32 normal magnitude (below 2^128). */
static int values_ok(const uint8_t *e, const uint8_t *tail)
{
    uint64_t amax = le64(e + ENT_AMAX);
    uint32_t a_exp = (uint32_t)(amax >> 52) & 0x7FFu;
    return rounds_to(le64(tail + TAIL_SCALE), le32(e + ENT_SCALE)) && (amax >> 63) == 0 &&
           a_exp >= 1023u - 126u && a_exp <= 1023u + 127u;
}

/* Checks the entry at offset pos (its fields, not its place among the others); returns its
 * length through *len. */
static int check_entry(const uint8_t *d, size_t pos, size_t end, uint16_t *len)
{
    const uint8_t *e = d + pos;
    uint16_t l;
    uint8_t k;
    if (end - pos < ECT_ENTRY_FIXED) {
        return ECT_E_ENTRY;
    }
    l = le16(e);
    k = e[ENT_NAME_LEN];
    if (l < ECT_ENTRY_FIXED + k + ECT_ENTRY_TAIL || l > end - pos ||
        ECT_ENTRY_FIXED + k + ECT_ENTRY_TAIL + (size_t)le16(e + ECT_ENTRY_FIXED + k + TAIL_JSON_LEN) > l) {
        return ECT_E_ENTRY;
    }
    if (k == 0 || !utf8_valid(e + ECT_ENTRY_FIXED, k)) {
        return ECT_E_NAME;
    }
    if (e[ENT_DTYPE] < ECT_DTYPE_INT8 || e[ENT_DTYPE] > ECT_DTYPE_UINT8 || e[ENT_SCHEME] < ECT_SCHEME_SYMMETRIC ||
        e[ENT_SCHEME] > ECT_SCHEME_TFLITE || (le16(e + ENT_FLAGS) & ~ECT_FLAGS_KNOWN) != 0) {
        return ECT_E_CODE;
    }
    if (!values_ok(e, e + ECT_ENTRY_FIXED + k)) {
        return ECT_E_VALUE;
    }
    *len = l;
    return ECT_OK;
}

static int same_name(const ect_entry *a, const char *name, size_t len)
{
    const char *n = ect_name(a);
    size_t i;
    if (a->name_len != len) {
        return 0;
    }
    for (i = 0; i < len && n[i] == name[i]; i++) {
    }
    return i == len;
}

/* Names are unique (a lookup must not depend on order); quadratic, but run once per table. */
static int names_unique(ect_table *t)
{
    ect_cursor outer, inner;
    ect_entry a, b;
    ect_begin(t, &outer);
    while (ect_next(&outer, &a)) {
        inner = outer;
        while (ect_next(&inner, &b)) {
            if (same_name(&a, ect_name(&b), b.name_len)) {
                t->bad_entry = b.index;
                return 0;
            }
        }
    }
    return 1;
}

static int check_header(ect_table *t, const uint8_t *d, size_t end)
{
    uint32_t h = le16(d + 6), m = le32(d + 12);
    if (h < ECT_HEADER_SIZE || h > end || m > end - h) {
        return ECT_E_HEADER;
    }
    t->meta = d + h;
    t->meta_len = m;
    t->entries_at = (size_t)h + m;
    return ECT_OK;
}

static int check_entries(ect_table *t, const uint8_t *d, size_t end, uint32_t count)
{
    size_t pos = t->entries_at;
    uint32_t i;
    uint16_t len = 0;
    for (i = 0; i < count; i++) {
        int rc = check_entry(d, pos, end, &len);
        if (rc != ECT_OK) {
            t->bad_entry = i;
            return rc;
        }
        pos += len;
    }
    return pos == end ? ECT_OK : ECT_E_GAP;
}

int ect_open(ect_table *t, const uint8_t *data, size_t size)
{
    size_t end;
    int rc;
    if (t == NULL || (data == NULL && size != 0)) {
        return ECT_E_ARG;
    }
    t->data = NULL;
    t->size = 0;
    t->count = 0;
    t->meta = NULL;
    t->meta_len = 0;
    t->entries_at = 0;
    t->bad_entry = 0;
    if (size < ECT_MIN_SIZE) {
        return ECT_E_SHORT;
    }
    if (data[0] != 'E' || data[1] != 'C' || data[2] != 'A' || data[3] != 'L') {
        return ECT_E_MAGIC;
    }
    if (le16(data + 4) != ECT_VERSION) {
        return ECT_E_VERSION;
    }
    end = size - ECT_CRC_SIZE;
    if (ect_crc32(0, data, end) != le32(data + end)) {
        return ECT_E_CRC;
    }
    t->data = data;
    t->size = size;
    rc = check_header(t, data, end);
    if (rc == ECT_OK) {
        rc = check_entries(t, data, end, le32(data + 8));
    }
    if (rc == ECT_OK) {
        t->count = le32(data + 8);
        if (!names_unique(t)) {
            rc = ECT_E_NAME;
        }
    }
    if (rc != ECT_OK) {
        t->count = 0;
    }
    return rc;
}

void ect_begin(const ect_table *t, ect_cursor *c)
{
    c->table = t;
    c->offset = t->entries_at;
    c->index = 0;
}

int ect_next(ect_cursor *c, ect_entry *e)
{
    if (c->index >= c->table->count) {
        return 0;
    }
    e->at = c->table->data + c->offset;
    e->length = le16(e->at);
    e->name_len = e->at[ENT_NAME_LEN];
    e->index = c->index;
    c->offset += e->length;
    c->index++;
    return 1;
}

int ect_find(const ect_table *t, const char *name, size_t len, ect_entry *e)
{
    ect_cursor c;
    if (t == NULL || e == NULL || (name == NULL && len != 0)) {
        return ECT_E_ARG;
    }
    ect_begin(t, &c);
    while (ect_next(&c, e)) {
        if (same_name(e, name, len)) {
            return ECT_OK;
        }
    }
    return ECT_E_NOT_FOUND;
}

const char *ect_name(const ect_entry *e)
{
    return (const char *)(e->at + ECT_ENTRY_FIXED);
}

float ect_scale(const ect_entry *e)
{
    uint32_t bits = le32(e->at + ENT_SCALE);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

int32_t ect_zero_point(const ect_entry *e)
{
    uint32_t bits = le32(e->at + ENT_ZP);
    int32_t v;
    memcpy(&v, &bits, sizeof v); /* two's complement, without an implementation-defined conversion */
    return v;
}

uint8_t ect_dtype(const ect_entry *e)
{
    return e->at[ENT_DTYPE];
}

uint8_t ect_scheme(const ect_entry *e)
{
    return e->at[ENT_SCHEME];
}

uint16_t ect_flags(const ect_entry *e)
{
    return le16(e->at + ENT_FLAGS);
}

double ect_amax(const ect_entry *e)
{
    return f64_of(le64(e->at + ENT_AMAX));
}

static const uint8_t *tail(const ect_entry *e)
{
    return e->at + ECT_ENTRY_FIXED + e->name_len;
}

uint64_t ect_counter(const ect_entry *e, int which)
{
    if (which < ECT_SAMPLES || which > ECT_NEGINF) {
        return 0;
    }
    return le64(tail(e) + TAIL_COUNTERS + 8 * which);
}

double ect_min(const ect_entry *e)
{
    return f64_of(le64(tail(e) + TAIL_MIN));
}

double ect_max(const ect_entry *e)
{
    return f64_of(le64(tail(e) + TAIL_MAX));
}

double ect_scale_exact(const ect_entry *e)
{
    return f64_of(le64(tail(e) + TAIL_SCALE));
}

const char *ect_method_json(const ect_entry *e, uint16_t *len)
{
    *len = le16(tail(e) + TAIL_JSON_LEN);
    return (const char *)(tail(e) + ECT_ENTRY_TAIL);
}

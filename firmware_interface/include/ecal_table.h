/* ecal_table.h: read an edgecal .ecal calibration table in place, on the device.
 *
 * The format is documented in edgecal/formats/ecal.py (version 1): a 16-byte header,
 * JSON metadata, N entries that each start with their own length L, and a CRC-32.
 * ect_open() checks everything once (size, magic, version, CRC-32, that the header,
 * the metadata and every entry lie inside the buffer, that the entries end exactly at
 * the CRC, names 1..255 bytes of valid UTF-8 and unique, known dtype/scheme codes and
 * flag bits, a positive normal float32 scale that is the exact scale rounded, a positive
 * amax of float32 normal magnitude); after that the accessors read
 * fields straight from the buffer with memcpy (the fields are packed and unaligned),
 * so the table costs no RAM beyond the buffer holding it and a small ect_table.
 *
 * Entries are walked by their length L and the header by its size H, never by the
 * sizes of the fields this reader knows: fields appended by a later revision of
 * version 1 are skipped. C99, no heap, nothing from libc but memcpy; independent of
 * ecal_link (a table stored in flash can be read without the link).
 *
 *     ect_table t;
 *     ect_entry e;
 *     if (ect_open(&t, buf, len) == ECT_OK && ect_find(&t, "conv1", 5, &e) == ECT_OK) {
 *         float scale = ect_scale(&e);
 *         int32_t zp = ect_zero_point(&e);
 *     }
 */
#ifndef ECAL_TABLE_H
#define ECAL_TABLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ECT_VERSION 1u
#define ECT_HEADER_SIZE 16u   /* the version-1 header; a table may declare a larger one */
#define ECT_CRC_SIZE 4u
#define ECT_MIN_SIZE (ECT_HEADER_SIZE + ECT_CRC_SIZE)
#define ECT_ENTRY_FIXED 23u   /* length .. name length, before the name */
#define ECT_ENTRY_TAIL 74u    /* six u64 counters, three f64, the u16 JSON length */

/* dtype and scheme codes, flag bits (edgecal/formats/ecal.py). */
enum { ECT_DTYPE_INT8 = 1, ECT_DTYPE_UINT8 = 2 };
enum { ECT_SCHEME_SYMMETRIC = 1, ECT_SCHEME_TFLITE = 2 };
enum {
    ECT_FLAG_ALL_ZERO = 1,
    ECT_FLAG_CONSTANT = 2,
    ECT_FLAG_NONFINITE = 4,
    ECT_FLAG_FALLBACK = 8,
    ECT_FLAG_CLIPPED_HEAVY = 16
};
#define ECT_FLAGS_KNOWN 0x1Fu

/* The six u64 counters of an entry, in file order. */
enum { ECT_SAMPLES = 0, ECT_COUNT = 1, ECT_ZEROS = 2, ECT_NANS = 3, ECT_POSINF = 4, ECT_NEGINF = 5 };

/* Return codes: ECT_OK, or the first check that failed. */
enum {
    ECT_OK = 0,
    ECT_E_ARG = -1,        /* NULL pointer */
    ECT_E_SHORT = -2,      /* fewer than ECT_MIN_SIZE bytes */
    ECT_E_MAGIC = -3,      /* does not start with "ECAL" */
    ECT_E_VERSION = -4,    /* format version other than 1 */
    ECT_E_CRC = -5,        /* CRC-32 mismatch: truncated or corrupt */
    ECT_E_HEADER = -6,     /* header size below 16, or header + metadata overrun the entries */
    ECT_E_ENTRY = -7,      /* an entry's length is too small for its fields or overruns the table */
    ECT_E_NAME = -8,       /* a name of length 0, not valid UTF-8, or repeated */
    ECT_E_CODE = -9,       /* unknown dtype or scheme code, or unknown flag bits */
    ECT_E_VALUE = -10,     /* float32 scale not the exact scale rounded to a positive normal float32,
                              or amax not positive and of float32 normal magnitude */
    ECT_E_GAP = -11,       /* the entries do not end exactly where the CRC starts */
    ECT_E_NOT_FOUND = -12  /* ect_find: no entry of that name */
};

/* A validated table: pointers into the caller's buffer, which must outlive it. */
typedef struct {
    const uint8_t *data;
    size_t size;           /* bytes, CRC included */
    uint32_t count;        /* entries */
    const uint8_t *meta;   /* UTF-8 JSON metadata, not NUL-terminated */
    uint32_t meta_len;
    size_t entries_at;     /* offset of the first entry */
    uint32_t bad_entry;    /* after an ECT_E_ENTRY/NAME/CODE/VALUE: index of the offending entry */
} ect_table;

/* One entry, in place. */
typedef struct {
    const uint8_t *at;     /* first byte of the entry (its u16 length) */
    uint16_t length;       /* L, appended fields included */
    uint8_t name_len;      /* K */
    uint32_t index;
} ect_entry;

/* Iteration state: ect_begin, then ect_next until it returns 0. */
typedef struct {
    const ect_table *table;
    size_t offset;
    uint32_t index;
} ect_cursor;

/* Validates data[0..size) as a version-1 .ecal table and fills t; ECT_OK or an ECT_E_* code.
 * On failure t->count is 0, so iterating or looking up finds nothing. */
int ect_open(ect_table *t, const uint8_t *data, size_t size);
/* CRC-32 (zlib / IEEE 802.3): ect_crc32(0, "123456789", 9) == 0xCBF43926. */
uint32_t ect_crc32(uint32_t crc, const uint8_t *data, size_t len);

void ect_begin(const ect_table *t, ect_cursor *c);
/* Fills e with the next entry and returns 1, or returns 0 after the last one. */
int ect_next(ect_cursor *c, ect_entry *e);
/* The entry named name[0..len) (exact bytes; no NUL needed): ECT_OK or ECT_E_NOT_FOUND. */
int ect_find(const ect_table *t, const char *name, size_t len, ect_entry *e);

/* Field readers of a validated entry. */
const char *ect_name(const ect_entry *e); /* name_len bytes of UTF-8, NOT NUL-terminated */
float ect_scale(const ect_entry *e);      /* the float32 scale: real = scale * (q - zero point) */
double ect_scale_exact(const ect_entry *e);
int32_t ect_zero_point(const ect_entry *e);
uint8_t ect_dtype(const ect_entry *e);
uint8_t ect_scheme(const ect_entry *e);
uint16_t ect_flags(const ect_entry *e);
double ect_amax(const ect_entry *e);
uint64_t ect_counter(const ect_entry *e, int which); /* ECT_SAMPLES .. ECT_NEGINF; 0 if out of range */
double ect_min(const ect_entry *e);                  /* NaN when unknown */
double ect_max(const ect_entry *e);
/* The method JSON {"method": ..., "params": ...}: its bytes (not NUL-terminated) and length. */
const char *ect_method_json(const ect_entry *e, uint16_t *len);

#ifdef __cplusplus
}
#endif

#endif /* ECAL_TABLE_H */

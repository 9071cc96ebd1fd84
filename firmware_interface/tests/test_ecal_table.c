/* Tests of the .ecal reader (ecal_table.c) against the known-answer vectors of
 * vectors/ecal_tables.txt (written by vectors/make_ecal_vectors.py with edgecal's writer).
 *
 *     test_ecal_table vectors/ecal_tables.txt
 *
 * Every table is read from an exactly sized heap copy at offsets 0 and 1..3 (so ASan sees any
 * read past the table and UBSan any unaligned access); good tables must give every field of
 * the file, damaged ones the expected first failed check and entry; every truncation and every
 * single-bit flip of a good table must be rejected. Prints "T tables C checks F failed". */
#include "ecal_table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TABLE 65536
#define MAX_LINE (4 * MAX_TABLE)

static unsigned long checks, failures;
static char line[MAX_LINE];

#define CHECK(cond, what, name)                                                     \
    do {                                                                            \
        checks++;                                                                   \
        if (!(cond)) {                                                              \
            failures++;                                                             \
            printf("FAIL %s: %s (line %d)\n", (name), (what), __LINE__);             \
        }                                                                           \
    } while (0)

static const char *const results[] = {"ok", "arg", "short", "magic", "version", "crc", "header",
                                      "entry", "name", "code", "value", "gap", "not_found"};

static int result_code(const char *word)
{
    int i;
    for (i = 0; i < (int)(sizeof results / sizeof *results); i++) {
        if (strcmp(word, results[i]) == 0) {
            return -i;
        }
    }
    fprintf(stderr, "unknown result %s\n", word);
    exit(2);
}

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    unsigned byte;
    if (strcmp(hex, "-") == 0) {
        return 0;
    }
    while (hex[0] && hex[1] && n < cap && sscanf(hex, "%2x", &byte) == 1) {
        out[n++] = (uint8_t)byte;
        hex += 2;
    }
    return n;
}

static uint64_t bits_hex(const char *hex)
{
    return strtoull(hex, NULL, 16);
}

/* The current good table, kept for the entry and find lines that follow it. */
static uint8_t table_bytes[MAX_TABLE];
static size_t table_size;
static char table_name[128];
static ect_table current;

static uint8_t *copy_at(const uint8_t *src, size_t n, size_t offset)
{
    uint8_t *block = malloc(n + offset + 1);
    if (block == NULL) {
        exit(3);
    }
    memcpy(block + offset, src, n);
    return block;
}

/* Every truncation and every single-bit flip must be rejected, and never read out of bounds. */
static void check_damage_rejected(const char *name)
{
    size_t n, bit;
    int truncated_ok = 0, flipped_ok = 0;
    ect_table t;
    for (n = 0; n < table_size; n++) {
        uint8_t *block = copy_at(table_bytes, n, 0);
        truncated_ok += ect_open(&t, block, n) == ECT_OK;
        free(block);
    }
    CHECK(truncated_ok == 0, "a truncated table was accepted", name);
    for (bit = 0; bit < 8 * table_size; bit++) {
        uint8_t *block = copy_at(table_bytes, table_size, 0);
        block[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        flipped_ok += ect_open(&t, block, table_size) == ECT_OK;
        free(block);
    }
    CHECK(flipped_ok == 0, "a table with one bit flipped was accepted", name);
}

static void table_line(void)
{
    char name[128], result[16], bad[16], hex_first[2];
    unsigned long count;
    int rc, expect, at;
    char *hex;
    if (sscanf(line, "table %127s %15s %15s %lu %1s", name, result, bad, &count, hex_first) != 5) {
        fprintf(stderr, "bad table line\n");
        exit(2);
    }
    hex = strrchr(line, ' ') + 1;
    table_size = unhex(hex, table_bytes, sizeof table_bytes);
    expect = result_code(result);
    for (at = 0; at < 4; at++) {
        uint8_t *block = copy_at(table_bytes, table_size, (size_t)at);
        ect_table t;
        rc = ect_open(&t, block + at, table_size);
        CHECK(rc == expect, "result", name);
        CHECK(t.count == (rc == ECT_OK ? count : 0), "entry count", name);
        if (strcmp(bad, "-") != 0) {
            CHECK(t.bad_entry == strtoul(bad, NULL, 10), "index of the failed entry", name);
        }
        free(block);
    }
    /* keep the good table for its entry and find lines (aligned copy in static storage) */
    strcpy(table_name, name);
    rc = ect_open(&current, table_bytes, table_size);
    if (expect == ECT_OK) {
        check_damage_rejected(name);
    }
}

static int f32_bits_equal(float f, const char *hex)
{
    uint32_t bits, want = (uint32_t)bits_hex(hex);
    memcpy(&bits, &f, sizeof bits);
    return bits == want;
}

static int f64_bits_equal(double d, const char *hex)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return bits == bits_hex(hex);
}

static void entry_fields(const ect_entry *e, char **f, const char *name)
{
    uint8_t want[512];
    uint16_t json_len;
    const char *json = ect_method_json(e, &json_len);
    size_t n = unhex(f[3], want, sizeof want), i;
    CHECK(e->name_len == n && memcmp(ect_name(e), want, n) == 0, "name", name);
    CHECK(f32_bits_equal(ect_scale(e), f[4]), "scale (float32)", name);
    CHECK(ect_zero_point(e) == strtol(f[5], NULL, 10), "zero point", name);
    CHECK(ect_dtype(e) == strtoul(f[6], NULL, 10), "dtype", name);
    CHECK(ect_scheme(e) == strtoul(f[7], NULL, 10), "scheme", name);
    CHECK(ect_flags(e) == strtoul(f[8], NULL, 10), "flags", name);
    CHECK(f64_bits_equal(ect_amax(e), f[9]), "amax", name);
    for (i = 0; i < 6; i++) {
        CHECK(ect_counter(e, (int)i) == strtoull(f[10 + i], NULL, 10), "counter", name);
    }
    CHECK(ect_counter(e, 6) == 0 && ect_counter(e, -1) == 0, "out-of-range counter", name);
    CHECK(f64_bits_equal(ect_min(e), f[16]) && f64_bits_equal(ect_max(e), f[17]), "min/max", name);
    CHECK(f64_bits_equal(ect_scale_exact(e), f[18]), "exact scale", name);
    n = unhex(f[19], want, sizeof want);
    CHECK(json_len == n && memcmp(json, want, n) == 0, "method JSON", name);
}

static size_t split(char *s, char **fields, size_t cap)
{
    size_t n = 0;
    char *tok = strtok(s, " \n");
    while (tok != NULL && n < cap) {
        fields[n++] = tok;
        tok = strtok(NULL, " \n");
    }
    return n;
}

static void entry_line(void)
{
    char *f[24];
    ect_cursor c;
    ect_entry e;
    unsigned long index, i;
    int found = 0;
    if (split(line, f, 24) != 20 || strcmp(f[1], table_name) != 0) {
        fprintf(stderr, "bad entry line\n");
        exit(2);
    }
    index = strtoul(f[2], NULL, 10);
    ect_begin(&current, &c);
    for (i = 0; i <= index; i++) {
        found = ect_next(&c, &e);
    }
    CHECK(found && e.index == index, "iteration reaches the entry", f[1]);
    if (found) {
        entry_fields(&e, f, f[1]);
    }
    if (index + 1 == current.count) {
        CHECK(!ect_next(&c, &e) && !ect_next(&c, &e), "iteration ends after the last entry", f[1]);
    }
}

static void find_line(void)
{
    char *f[8];
    uint8_t key[512];
    size_t n;
    long index;
    ect_entry e;
    int rc;
    if (split(line, f, 8) != 4 || strcmp(f[1], table_name) != 0) {
        fprintf(stderr, "bad find line\n");
        exit(2);
    }
    n = unhex(f[2], key, sizeof key);
    index = strtol(f[3], NULL, 10);
    rc = ect_find(&current, (const char *)key, n, &e);
    CHECK(rc == (index < 0 ? ECT_E_NOT_FOUND : ECT_OK), "find result", f[1]);
    if (index >= 0) {
        CHECK(rc == ECT_OK && e.index == (uint32_t)index && e.name_len == n, "found entry", f[1]);
    }
}

static void unit_checks(void)
{
    ect_table t;
    ect_entry e;
    CHECK(ect_crc32(0, (const uint8_t *)"123456789", 9) == 0xCBF43926u, "CRC-32 check value", "crc");
    CHECK(ect_crc32(ect_crc32(0, (const uint8_t *)"1234", 4), (const uint8_t *)"56789", 5) == 0xCBF43926u,
          "running CRC-32", "crc");
    CHECK(ect_open(NULL, table_bytes, 20) == ECT_E_ARG, "NULL table", "args");
    CHECK(ect_open(&t, NULL, 20) == ECT_E_ARG, "NULL data", "args");
    CHECK(ect_open(&t, NULL, 0) == ECT_E_SHORT && t.count == 0, "empty", "args");
    CHECK(ect_find(&t, NULL, 1, &e) == ECT_E_ARG, "find NULL name", "args");
    CHECK(ect_find(&t, "x", 1, &e) == ECT_E_NOT_FOUND, "find in a rejected table", "args");
}

int main(int argc, char **argv)
{
    FILE *fp;
    unsigned long tables = 0;
    if (argc != 2 || (fp = fopen(argv[1], "r")) == NULL) {
        fprintf(stderr, "usage: test_ecal_table vectors/ecal_tables.txt\n");
        return 2;
    }
    unit_checks();
    while (fgets(line, sizeof line, fp) != NULL) {
        if (strncmp(line, "table ", 6) == 0) {
            table_line();
            tables++;
        } else if (strncmp(line, "entry ", 6) == 0) {
            entry_line();
        } else if (strncmp(line, "find ", 5) == 0) {
            find_line();
        }
    }
    fclose(fp);
    printf("%lu tables %lu checks %lu failed\n", tables, checks, failures);
    return failures == 0 ? 0 : 1;
}

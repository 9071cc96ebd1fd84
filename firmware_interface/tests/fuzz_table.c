/* Fuzz harness of the .ecal reader (ect_open and every accessor).
 *
 * With libFuzzer (clang -fsanitize=fuzzer,address -DECT_LIBFUZZER) the entry point is
 * LLVMFuzzerTestOneInput. Built with gcc, main() drives it with a deterministic mutation
 * loop seeded from the good tables of the known-answer vectors:
 *
 *     fuzz_table ITERATIONS SEED vectors/ecal_tables.txt
 *
 * Half the mutants get their CRC-32 recomputed, so the checks behind the CRC are reached.
 * Each input is read from an exactly sized heap copy (ASan sees any read past it). For an
 * accepted table: iteration yields exactly count entries that tile the bytes between the
 * first entry and the CRC, every accessor stays inside its entry, and looking up each name
 * finds that very entry. */
#include "ecal_table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEEDS 16
#define MAX_TABLE 8192

static int check_table(const ect_table *t)
{
    ect_cursor c;
    ect_entry e, found;
    size_t pos = t->entries_at;
    uint32_t n = 0;
    uint16_t json_len;
    volatile double sink = 0;
    ect_begin(t, &c);
    while (ect_next(&c, &e)) {
        const char *json = ect_method_json(&e, &json_len);
        if (e.at != t->data + pos || e.index != n || (size_t)(json - (const char *)e.at) + json_len > e.length) {
            return 0;
        }
        sink += ect_scale(&e) + ect_amax(&e) + ect_min(&e) + ect_max(&e) + ect_scale_exact(&e) +
                (double)ect_counter(&e, ECT_NEGINF) + ect_zero_point(&e) + ect_dtype(&e) + ect_scheme(&e) +
                ect_flags(&e);
        if (ect_find(t, ect_name(&e), e.name_len, &found) != ECT_OK || found.at != e.at) {
            return 0;
        }
        pos += e.length;
        n++;
    }
    (void)sink;
    return n == t->count && pos == t->size - ECT_CRC_SIZE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ect_table t;
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return 0;
    }
    if (size) {
        memcpy(copy, data, size);
    }
    if (ect_open(&t, copy, size) == ECT_OK && !check_table(&t)) {
        fprintf(stderr, "accepted table broke an invariant\n");
        abort();
    }
    free(copy);
    return 0;
}

#ifndef ECT_LIBFUZZER
static uint8_t seeds[MAX_SEEDS][MAX_TABLE];
static size_t seed_len[MAX_SEEDS], n_seeds;
static uint32_t rng;

static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static void load_seeds(const char *path)
{
    static char line[4 * MAX_TABLE];
    FILE *fp = fopen(path, "r");
    char name[64], result[16];
    if (fp == NULL) {
        perror(path);
        exit(2);
    }
    while (n_seeds < MAX_SEEDS && fgets(line, sizeof line, fp) != NULL) {
        const char *hex = strrchr(line, ' ');
        unsigned byte;
        size_t n = 0;
        if (sscanf(line, "table %63s %15s", name, result) != 2 || strcmp(result, "ok") != 0) {
            continue;
        }
        for (hex++; hex[0] != '\n' && hex[0] && n < MAX_TABLE && sscanf(hex, "%2x", &byte) == 1; hex += 2) {
            seeds[n_seeds][n++] = (uint8_t)byte;
        }
        seed_len[n_seeds++] = n;
    }
    fclose(fp);
}

/* One random edit: a bit flip, a random or boundary byte/u16/u32, an insertion or a deletion. */
static size_t mutate(uint8_t *b, size_t n)
{
    static const uint32_t edges[] = {0, 1, 2, 16, 22, 23, 96, 97, 98, 255, 256, 0x7FFF, 0xFFFF, 0xFFFFFFFFu};
    size_t at = n ? next() % n : 0, k;
    uint32_t v = (next() & 1) ? next() : edges[next() % (sizeof edges / sizeof *edges)];
    switch (next() % 5) {
    case 0:
        if (n) { b[at] ^= (uint8_t)(1u << (next() % 8)); }
        break;
    case 1:
        for (k = 0; k < 4 && at + k < n; k++) { b[at + k] = (uint8_t)(v >> (8 * k)); }
        break;
    case 2:
        for (k = 0; k < 2 && at + k < n; k++) { b[at + k] = (uint8_t)(v >> (8 * k)); }
        break;
    case 3:
        if (n < MAX_TABLE) { memmove(b + at + 1, b + at, n - at); b[at] = (uint8_t)v; n++; }
        break;
    default:
        if (n) { memmove(b + at, b + at + 1, n - at - 1); n--; }
        break;
    }
    return n;
}

static void fix_crc(uint8_t *b, size_t n)
{
    uint32_t crc;
    if (n >= ECT_MIN_SIZE) {
        crc = ect_crc32(0, b, n - 4);
        b[n - 4] = (uint8_t)crc;
        b[n - 3] = (uint8_t)(crc >> 8);
        b[n - 2] = (uint8_t)(crc >> 16);
        b[n - 1] = (uint8_t)(crc >> 24);
    }
}

int main(int argc, char **argv)
{
    static uint8_t buf[MAX_TABLE + 64];
    unsigned long iterations, i, accepted = 0;
    ect_table t;
    if (argc != 4) {
        fprintf(stderr, "usage: fuzz_table ITERATIONS SEED vectors/ecal_tables.txt\n");
        return 2;
    }
    iterations = strtoul(argv[1], NULL, 10);
    rng = (uint32_t)strtoul(argv[2], NULL, 10) * 2654435761u + 1u;
    load_seeds(argv[3]);
    if (n_seeds == 0) {
        fprintf(stderr, "no good tables in %s\n", argv[3]);
        return 2;
    }
    for (i = 0; i < iterations; i++) {
        size_t s = next() % n_seeds, n = seed_len[s], edits = 1 + next() % 4;
        memcpy(buf, seeds[s], n);
        while (edits--) {
            n = mutate(buf, n);
        }
        if (next() & 1) {
            fix_crc(buf, n);
        }
        LLVMFuzzerTestOneInput(buf, n);
        accepted += ect_open(&t, buf, n) == ECT_OK;
    }
    printf("%lu inputs, %lu accepted, no failure\n", iterations, accepted);
    return 0;
}
#endif

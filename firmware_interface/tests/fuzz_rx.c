/* Fuzz harness for the device's receive path (ecl_rx_feed) and the frame decoder.
 *
 * With libFuzzer (clang -fsanitize=fuzzer,address -DECL_LIBFUZZER) the entry point is
 * LLVMFuzzerTestOneInput. Built with gcc (no libFuzzer there) main() drives it with a
 * deterministic mutation loop seeded from the known-answer vectors:
 *
 *     fuzz_rx ITERATIONS SEED [frames.txt]
 *
 * Each input must not crash or trip ASan/UBSan, the receive buffer must stay within its
 * bounds, and afterwards a lone 0x00 followed by a valid PING must still be answered: no
 * input can wedge the receiver. The library has no heap, so memory cannot grow. */
#include "ecal_link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ecl_tensor_desc tensors[2] = {
    {"x", ECL_DT_FLOAT, 1, {40, 0, 0, 0, 0, 0, 0, 0}},
    {"y", ECL_DT_UINT8, 2, {3, 5, 0, 0, 0, 0, 0, 0}},
};
static uint8_t rx_buf[ECL_RX_BUF_SIZE(128)], table_buf[256], sink_last;
static size_t written, pongs;

static int sink(void *user, const uint8_t *data, size_t len)
{
    (void)user;
    written += len;
    if (len) {
        sink_last = data[len - 1];
    }
    return 0;
}

static void count_pong(const uint8_t *wire, size_t len)
{
    static uint8_t body[ECL_RX_BUF_SIZE(ECL_PAYLOAD_LIMIT)];
    size_t start = 0, i, n;
    ecl_header h;
    const uint8_t *p;
    for (i = 0; i < len; i++) {
        if (wire[i] == 0) {
            if (i > start && ecl_cobs_decode(wire + start, i - start, body, sizeof body, &n) == ECL_OK &&
                ecl_frame_parse(body, n, ECL_PAYLOAD_LIMIT, &h, &p) == ECL_OK && h.type == ECL_T_PONG &&
                h.payload_len == 3 && memcmp(p, "zz!", 3) == 0) {
                pongs++;
            }
            start = i + 1;
        }
    }
}

static uint8_t cap[1 << 16];
static size_t cap_len;
static int capture(void *user, const uint8_t *data, size_t len)
{
    (void)user;
    if (len > sizeof cap - cap_len) {
        return -1;
    }
    memcpy(cap + cap_len, data, len);
    cap_len += len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ecl_link link;
    static uint8_t body[ECL_RX_BUF_SIZE(128)];
    ecl_config cfg;
    ecl_header h;
    const uint8_t *p;
    size_t n, i, step;
    uint8_t ping_wire[64];
    memset(&cfg, 0, sizeof cfg);
    cfg.write = sink;
    cfg.tensors = tensors;
    cfg.tensor_count = 2;
    cfg.max_payload = 128;
    cfg.rx_buf = rx_buf;
    cfg.rx_buf_size = sizeof rx_buf;
    cfg.table_buf = table_buf;
    cfg.table_buf_size = sizeof table_buf;
    if (ecl_init(&link, &cfg) != ECL_OK) {
        abort();
    }
    /* the stateless decoder on the raw input */
    if (ecl_cobs_decode(data, size, body, sizeof body, &n) == ECL_OK) {
        (void)ecl_frame_parse(body, n, 128, &h, &p);
    }
    /* the receiver, fed in uneven pieces; streaming calls interleaved */
    for (i = 0; i < size; i += step) {
        step = 1u + (size - i) % 97u;
        if (step > size - i) {
            step = size - i;
        }
        (void)ecl_rx_feed(&link, data + i, step);
        if (link.rx_len > sizeof rx_buf) {
            abort();
        }
        if (ecl_sample_begin(&link) == ECL_OK) {
            static float x[40];
            static uint8_t y[15];
            (void)ecl_send_tensor(&link, 0, x);
            (void)ecl_send_tensor(&link, 1, y);
            (void)ecl_sample_end(&link);
        }
    }
    /* it must still answer after any input */
    memset(&h, 0, sizeof h);
    h.version = ECL_PROTOCOL_VERSION;
    h.type = ECL_T_PING;
    cap_len = 0;
    (void)ecl_frame_write(&h, (const uint8_t *)"zz!", 3, capture, NULL);
    memcpy(ping_wire + 1, cap, cap_len);
    ping_wire[0] = 0;
    cap_len += 1;
    memcpy(cap, ping_wire, cap_len);
    link.cfg.write = capture;
    n = cap_len;
    cap_len = 0;
    memcpy(body, ping_wire, n);
    (void)ecl_rx_feed(&link, body, n);
    n = pongs;
    count_pong(cap, cap_len);
    if (pongs != n + 1) { /* exactly one answer to our PING (the input may hold PINGs too) */
        fprintf(stderr, "receiver did not answer a PING after an input of %lu bytes (captured %lu)\n", (unsigned long)size, (unsigned long)cap_len);
        for (i = 0; i < size && i < 200; i++) fprintf(stderr, "%02x", data[i]);
        fprintf(stderr, "\n");
        abort();
    }
    return 0;
}

#ifndef ECL_LIBFUZZER
static uint64_t state;
static uint32_t rnd(void)
{
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(state >> 33);
}

static uint8_t seeds[64][4096];
static size_t seed_len[64], n_seeds;

static void load_seeds(const char *path)
{
    static char line[1 << 16];
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f) && n_seeds < 64) {
        char *hex = strrchr(line, ' ');
        size_t n = 0;
        unsigned v;
        if ((strncmp(line, "frame ", 6) != 0 && strncmp(line, "bad ", 4) != 0) || hex == NULL) {
            continue;
        }
        hex++;
        while (hex[0] && hex[1] && hex[0] != '\n' && n < sizeof seeds[0] && sscanf(hex, "%2x", &v) == 1) {
            seeds[n_seeds][n++] = (uint8_t)v;
            hex += 2;
        }
        seed_len[n_seeds++] = n;
    }
    if (f) {
        fclose(f);
    }
}

int main(int argc, char **argv)
{
    static uint8_t input[8192];
    long iterations = argc > 1 ? atol(argv[1]) : 10000, it;
    state = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    if (argc > 3) {
        load_seeds(argv[3]);
    }
    for (it = 0; it < iterations; it++) {
        size_t len = 0, k, edits;
        while (len < sizeof input - 4096 && (len == 0 || rnd() % 3 != 0)) { /* splice seeds and noise */
            if (n_seeds && rnd() % 4 != 0) {
                size_t s = rnd() % n_seeds;
                memcpy(input + len, seeds[s], seed_len[s]);
                len += seed_len[s];
            } else {
                size_t n = rnd() % 300;
                for (k = 0; k < n; k++) {
                    input[len + k] = (uint8_t)(rnd() % 4 == 0 ? 0 : rnd());
                }
                len += n;
            }
        }
        for (edits = rnd() % 8; edits > 0 && len > 0; edits--) { /* flips, deletions, truncation */
            size_t at = rnd() % len;
            switch (rnd() % 3) {
            case 0:
                input[at] ^= (uint8_t)(1u << (rnd() % 8));
                break;
            case 1:
                memmove(input + at, input + at + 1, len - at - 1);
                len--;
                break;
            default:
                len = at;
                break;
            }
        }
        LLVMFuzzerTestOneInput(input, len);
    }
    printf("fuzz_rx: %ld inputs, %lu seeds, %lu bytes written, no failure\n", iterations, (unsigned long)n_seeds,
           (unsigned long)written);
    return 0;
}
#endif

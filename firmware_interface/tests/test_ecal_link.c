/* Host-side tests of the device library: known-answer vectors (../vectors/frames.txt, written
 * from PROTOCOL.md by an independent script) and the link's behaviour. Run under ASan + UBSan
 * by the Makefile and by tests/test_link_c.py:  test_ecal_link path/to/frames.txt */
#include "ecal_link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        checks++;                                                              \
        if (!(cond)) {                                                         \
            failures++;                                                        \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

/* -- capture of everything the library writes --------------------------------------------- */
static uint8_t out[1 << 16];
static size_t out_len, out_pos;
static int fail_writes;

static int capture(void *user, const uint8_t *data, size_t len)
{
    (void)user;
    if (fail_writes || len > sizeof out - out_len) {
        return -1;
    }
    memcpy(out + out_len, data, len);
    out_len += len;
    return 0;
}

static void clear_out(void)
{
    out_len = out_pos = 0;
}

/* Next captured frame: 1 and its header/payload, or 0 when none is left. */
static uint8_t frame_buf[ECL_RX_BUF_SIZE(ECL_PAYLOAD_LIMIT)];
static int next_frame(ecl_header *h, const uint8_t **payload)
{
    size_t start, n;
    while (out_pos < out_len && out[out_pos] == 0) {
        out_pos++;
    }
    if (out_pos >= out_len) {
        return 0;
    }
    start = out_pos;
    while (out_pos < out_len && out[out_pos] != 0) {
        out_pos++;
    }
    CHECK(out_pos < out_len, "frame without delimiter");
    CHECK(ecl_cobs_decode(out + start, out_pos - start, frame_buf, sizeof frame_buf, &n) == ECL_OK, "cobs");
    CHECK(ecl_frame_parse(frame_buf, n, ECL_PAYLOAD_LIMIT, h, payload) == ECL_OK, "parse");
    return 1;
}

/* -- vectors ---------------------------------------------------------------------------- */
static size_t unhex(const char *s, uint8_t *dst, size_t cap)
{
    size_t n = 0;
    if (strcmp(s, "-") == 0) {
        return 0;
    }
    while (s[0] && s[1] && n < cap) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1) {
            break;
        }
        dst[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static const char *error_name(int rc)
{
    switch (rc) {
    case ECL_OK: return "ok";
    case ECL_E_COBS: return "cobs";
    case ECL_E_SHORT: return "short";
    case ECL_E_MAGIC: return "magic";
    case ECL_E_CRC: return "crc";
    case ECL_E_LENGTH: return "length";
    case ECL_E_VERSION: return "version";
    case ECL_E_OVERSIZE: return "oversize";
    default: return "?";
    }
}

static uint8_t a[1 << 15], b[1 << 15], c[1 << 15];

static int decode_block(const uint8_t *wire, size_t len, uint16_t max_payload, ecl_header *h, const uint8_t **p)
{
    size_t n;
    int rc = ecl_cobs_decode(wire, len - 1, c, ECL_RX_BUF_SIZE(max_payload), &n);
    return rc != ECL_OK ? rc : ecl_frame_parse(c, n, max_payload, h, p);
}

static void vector_line(char *line)
{
    char *tok[16];
    int n = 0;
    char *s = strtok(line, " \n");
    while (s && n < 16) {
        tok[n++] = s;
        s = strtok(NULL, " \n");
    }
    if (n == 0 || tok[0][0] == '#') {
        return;
    }
    if (strcmp(tok[0], "crc") == 0 && n == 4) {
        size_t len = unhex(tok[2], a, sizeof a);
        CHECK(ecl_crc32(0, a, len) == (uint32_t)strtoul(tok[3], NULL, 16), "crc %s", tok[1]);
    } else if (strcmp(tok[0], "cobs") == 0 && n == 4) {
        size_t raw = unhex(tok[2], a, sizeof a), enc = unhex(tok[3], b, sizeof b), got = 0;
        CHECK(ecl_cobs_decode(b, enc, c, sizeof c, &got) == ECL_OK && got == raw && memcmp(c, a, raw) == 0,
              "cobs decode %s", tok[1]);
    } else if (strcmp(tok[0], "frame") == 0 && n == 11) {
        ecl_header h, d;
        const uint8_t *p;
        size_t plen = unhex(tok[9], a, sizeof a), wlen = unhex(tok[10], b, sizeof b);
        h.version = 1;
        h.type = (uint8_t)strtoul(tok[2], NULL, 16);
        h.flags = (uint8_t)strtoul(tok[3], NULL, 16);
        h.seq = (uint32_t)strtoul(tok[4], NULL, 10);
        h.sample_id = (uint32_t)strtoul(tok[5], NULL, 10);
        h.tensor_id = (uint16_t)strtoul(tok[6], NULL, 10);
        h.offset = (uint32_t)strtoul(tok[7], NULL, 10);
        h.total = (uint32_t)strtoul(tok[8], NULL, 10);
        clear_out();
        CHECK(ecl_frame_write(&h, a, (uint16_t)plen, capture, NULL) == ECL_OK, "write %s", tok[1]);
        CHECK(out_len == wlen && memcmp(out, b, wlen) == 0, "encoding of %s differs from the vector", tok[1]);
        CHECK(decode_block(b, wlen, ECL_PAYLOAD_LIMIT, &d, &p) == ECL_OK, "decode %s", tok[1]);
        CHECK(d.type == h.type && d.flags == h.flags && d.seq == h.seq && d.sample_id == h.sample_id &&
                  d.tensor_id == h.tensor_id && d.offset == h.offset && d.total == h.total &&
                  d.payload_len == plen && memcmp(p, a, plen) == 0,
              "decoded fields of %s", tok[1]);
    } else if (strcmp(tok[0], "bad") == 0 && n == 5) {
        ecl_header d;
        const uint8_t *p;
        size_t wlen = unhex(tok[4], b, sizeof b);
        int rc = decode_block(b, wlen, (uint16_t)atoi(tok[3]), &d, &p);
        CHECK(strcmp(error_name(rc), tok[2]) == 0, "bad %s: expected %s, got %s", tok[1], tok[2], error_name(rc));
    } else if (strcmp(tok[0], "serial") == 0 && n == 5) {
        uint32_t x = (uint32_t)strtoul(tok[2], NULL, 10), y = (uint32_t)strtoul(tok[3], NULL, 10);
        CHECK((long)(int32_t)(y - x) == strtol(tok[4], NULL, 10), "serial %s", tok[1]);
    } else {
        CHECK(0, "unknown vector line %s", tok[0]);
    }
}

static int run_vectors(const char *path)
{
    static char line[1 << 16];
    int count = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 0;
    }
    while (fgets(line, sizeof line, f)) {
        if (line[0] != '#' && line[0] != '\n') {
            count++;
        }
        vector_line(line);
    }
    fclose(f);
    return count;
}

/* -- the link ---------------------------------------------------------------------------- */
static const ecl_tensor_desc tensors[2] = {
    {"a", ECL_DT_FLOAT, 2, {2, 3, 0, 0, 0, 0, 0, 0}},
    {"b", ECL_DT_INT8, 1, {300, 0, 0, 0, 0, 0, 0, 0}},
};
static uint8_t rx_buf[ECL_RX_BUF_SIZE(128)];
static uint8_t table_buf[64];
static size_t room = (size_t)-1;
static size_t room_fn(void *user)
{
    (void)user;
    return room;
}
static size_t tables_seen, table_seen_len;
static int reject_tables;
static int on_table(void *user, const uint8_t *t, size_t len)
{
    (void)user;
    (void)t;
    tables_seen++;
    table_seen_len = len;
    return reject_tables;
}

static void make_link(ecl_link *l)
{
    ecl_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.write = capture;
    cfg.tx_room = room_fn;
    cfg.on_table = on_table;
    cfg.tensors = tensors;
    cfg.tensor_count = 2;
    cfg.firmware_id = "test-fw";
    cfg.max_payload = 128;
    cfg.rx_buf = rx_buf;
    cfg.rx_buf_size = sizeof rx_buf;
    cfg.table_buf = table_buf;
    cfg.table_buf_size = sizeof table_buf;
    cfg.boot_id = 77;
    cfg.model_hash[0] = 0xAB;
    CHECK(ecl_init(l, &cfg) == ECL_OK, "init");
    clear_out();
}

static uint32_t host_seq;
static void host_send(ecl_link *l, uint8_t type, uint8_t flags, uint32_t offset, uint32_t total, const uint8_t *p, uint16_t n)
{
    static uint8_t wire[4096];
    size_t saved = out_len, wlen;
    ecl_header h;
    memset(&h, 0, sizeof h);
    h.version = 1;
    h.type = type;
    h.flags = flags;
    h.seq = host_seq++;
    h.offset = offset;
    h.total = total;
    CHECK(ecl_frame_write(&h, p, n, capture, NULL) == ECL_OK, "host frame");
    wlen = out_len - saved;
    memcpy(wire, out + saved, wlen);
    out_len = saved;
    CHECK(ecl_rx_feed(l, wire, wlen) == ECL_OK, "feed");
}

static void put32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void test_handshake_and_list(void)
{
    ecl_link l;
    ecl_header h;
    const uint8_t *p;
    uint8_t hello[4] = {1, 0, 0x00, 0x40};
    make_link(&l);
    CHECK(ecl_boot(&l) == ECL_OK, "boot");
    CHECK(next_frame(&h, &p) && h.type == ECL_T_HELLO_ACK && h.flags == ECL_F_BOOT && h.seq == 0, "boot hello_ack");
    clear_out();
    host_send(&l, ECL_T_HELLO, 0, 0, 0, hello, 4);
    CHECK(next_frame(&h, &p) && h.type == ECL_T_HELLO_ACK && h.flags == 0 && h.seq == 1, "hello_ack");
    CHECK(p[0] == 1 && p[2] == 128 && p[4] == 128 && p[6] == 2 && p[8] == 77 && p[12] == 0xAB && p[28] == 7 &&
              memcmp(p + 29, "test-fw", 7) == 0 && h.payload_len == 36,
          "hello_ack payload");
    clear_out();
    host_send(&l, ECL_T_LIST_REQ, 0, 0, 0, NULL, 0);
    CHECK(next_frame(&h, &p) && h.type == ECL_T_TENSOR_INFO && h.tensor_id == 0 && h.total == 24 && p[0] == 1 &&
              p[1] == 2 && p[4] == 2 && p[8] == 3 && p[12] == 1 && p[13] == 'a',
          "tensor info a");
    CHECK(next_frame(&h, &p) && h.type == ECL_T_TENSOR_INFO && h.tensor_id == 1 && h.total == 300 && p[0] == 3,
          "tensor info b");
    CHECK(!next_frame(&h, &p), "nothing more");
}

static void start(ecl_link *l, uint32_t run, uint32_t grant, int mask_len, uint8_t mask)
{
    uint8_t s[11];
    put32le(s, run);
    put32le(s + 4, grant);
    s[8] = (uint8_t)mask_len;
    s[9] = 0;
    s[10] = mask;
    host_send(l, ECL_T_START, 0, 0, 0, s, (uint16_t)(10 + mask_len));
}

static void test_streaming_and_credits(void)
{
    ecl_link l;
    ecl_header h;
    const uint8_t *p;
    float av[6] = {0.0f, 1.0f, -2.0f, 0.5f, 0.0f, 3.0f};
    int8_t bv[300];
    uint8_t credit[8];
    int i;
    for (i = 0; i < 300; i++) {
        bv[i] = (int8_t)(i - 150);
    }
    make_link(&l);
    host_send(&l, ECL_T_HELLO, 0, 0, 0, (const uint8_t *)"\x01\x00\x00\x40", 4);
    CHECK(ecl_sample_begin(&l) == ECL_E_STOPPED, "no START yet");
    clear_out();
    start(&l, 9, 1, 0, 0);
    CHECK(next_frame(&h, &p) && h.type == ECL_T_ACK && p[0] == ECL_T_START && p[4] == 9 && h.sample_id == 0, "ack");
    clear_out();
    CHECK(ecl_sample_begin(&l) == ECL_OK, "begin");
    CHECK(ecl_send_tensor(&l, 0, av) == ECL_OK && ecl_send_tensor(&l, 1, bv) == ECL_OK, "send");
    CHECK(ecl_sample_end(&l) == ECL_OK, "end");
    CHECK(next_frame(&h, &p) && h.type == ECL_T_TENSOR_CHUNK && h.tensor_id == 0 && h.flags == ECL_F_LAST &&
              h.payload_len == 24 && h.total == 24 && memcmp(p, av, 24) == 0,
          "chunk a");
    CHECK(next_frame(&h, &p) && h.tensor_id == 1 && h.offset == 0 && h.payload_len == 128 && h.flags == 0 &&
              memcmp(p, bv, 128) == 0, "chunk b0");
    CHECK(next_frame(&h, &p) && h.offset == 128 && h.payload_len == 128 && h.flags == 0, "chunk b1");
    CHECK(next_frame(&h, &p) && h.offset == 256 && h.payload_len == 44 && h.flags == ECL_F_LAST &&
              memcmp(p, bv + 256, 44) == 0, "chunk b2");
    CHECK(next_frame(&h, &p) && h.type == ECL_T_SAMPLE_END && h.sample_id == 0 && p[0] == 2, "sample end");
    CHECK(ecl_sample_begin(&l) == ECL_E_NO_CREDIT && l.stats.samples_dropped_credit == 1, "credit used up");
    put32le(credit, 9);
    put32le(credit + 4, 2);
    host_send(&l, ECL_T_CREDIT, 0, 0, 0, credit, 8);
    put32le(credit, 8); /* another run's credit is ignored */
    put32le(credit + 4, 50);
    host_send(&l, ECL_T_CREDIT, 0, 0, 0, credit, 8);
    room = 100;
    CHECK(ecl_sample_begin(&l) == ECL_E_BUSY && l.stats.samples_dropped_busy == 1, "no room: %u bound",
          (unsigned)ecl_sample_wire_bound(&l));
    room = (size_t)-1;
    clear_out();
    start(&l, 9, 100, 1, 0x02); /* same run: only the ACK again */
    CHECK(next_frame(&h, &p) && h.type == ECL_T_ACK && h.sample_id == 0, "re-ack names the run's first sample");
    CHECK(ecl_sample_begin(&l) == ECL_OK && ecl_send_tensor(&l, 0, av) == ECL_OK && ecl_sample_end(&l) == ECL_OK,
          "second sample");
    CHECK(next_frame(&h, &p) && h.type == ECL_T_TENSOR_CHUNK && h.sample_id == 1, "second sample frame");
    CHECK(ecl_sample_begin(&l) == ECL_E_NO_CREDIT, "grant 2 used up");
    clear_out();
    start(&l, 10, 5, 1, 0x02); /* new run, only tensor b */
    CHECK(ecl_sample_begin(&l) == ECL_OK && ecl_send_tensor(&l, 0, av) == ECL_OK && ecl_sample_end(&l) == ECL_OK,
          "masked sample");
    CHECK(next_frame(&h, &p) && h.type == ECL_T_ACK, "ack 10");
    CHECK(next_frame(&h, &p) && h.type == ECL_T_SAMPLE_END && p[0] == 0, "tensor a was not selected");
    clear_out();
    host_send(&l, ECL_T_STOP, 0, 0, 0, NULL, 0);
    CHECK(next_frame(&h, &p) && h.type == ECL_T_ACK && p[0] == ECL_T_STOP && h.sample_id == 3, "stop ack");
    CHECK(next_frame(&h, &p) && h.type == ECL_T_STATS && p[4] == 3 && p[8] == 2 && p[12] == 1 && p[16] == 3 &&
              p[36] == 1 && h.seq == p[0],
          "stats");
    CHECK(ecl_sample_begin(&l) == ECL_E_STOPPED, "stopped");
    clear_out();
    host_send(&l, ECL_T_STOP, 0, 0, 0, NULL, 0); /* STOP while idle: the same ACK and STATS */
    CHECK(next_frame(&h, &p) && h.type == ECL_T_ACK && p[0] == ECL_T_STOP && h.sample_id == 3 && p[4] == 10,
          "idle stop ack: next sample id, last run id");
    CHECK(next_frame(&h, &p) && h.type == ECL_T_STATS && p[8] == 2 && p[36] == 1,
          "an inference while idle is no credit drop");
    CHECK(ecl_send_tensor(&l, 0, av) == ECL_E_STATE, "tensor outside a sample");
    fail_writes = 1;
    CHECK(ecl_log(&l, ECL_LOG_INFO, "x", 1) == ECL_E_WRITE, "write failure is reported");
    fail_writes = 0;
}

static void push(ecl_link *l, const uint8_t *t, uint32_t len, uint32_t chunk, int skip)
{
    uint32_t off;
    int k = 0;
    for (off = 0; off < len; off += chunk, k++) {
        uint32_t n = len - off < chunk ? len - off : chunk;
        if (k != skip) {
            host_send(l, ECL_T_TABLE_CHUNK, off + n == len ? ECL_F_LAST : 0, off, len, t + off, (uint16_t)n);
        }
    }
}

static int table_status(void)
{
    ecl_header h;
    const uint8_t *p;
    int status = -1;
    while (next_frame(&h, &p)) {
        if (h.type == ECL_T_TABLE_ACK) {
            status = p[0] | (p[1] << 8);
        }
    }
    clear_out();
    return status;
}

static void test_table_push(void)
{
    ecl_link l;
    uint8_t t[40];
    uint32_t crc;
    int i;
    memset(t, 0, sizeof t);
    memcpy(t, "ECAL\x01\x00\x10\x00", 8);
    for (i = 16; i < 36; i++) {
        t[i] = (uint8_t)(i * 3);
    }
    crc = ecl_crc32(0, t, 36);
    put32le(t + 36, crc);
    make_link(&l);
    push(&l, t, 40, 16, -1);
    CHECK(table_status() == ECL_TABLE_ACCEPTED && tables_seen == 1 && table_seen_len == 40 &&
              memcmp(table_buf, t, 40) == 0, "accepted");
    push(&l, t, 40, 16, 1);
    CHECK(table_status() == ECL_TABLE_OUT_OF_ORDER && tables_seen == 1, "gap");
    t[20] ^= 1;
    push(&l, t, 40, 16, -1);
    CHECK(table_status() == ECL_TABLE_BAD_CRC && tables_seen == 1, "crc");
    t[20] ^= 1;
    t[4] = 2;
    push(&l, t, 40, 16, -1);
    CHECK(table_status() == ECL_TABLE_BAD_FORMAT, "version");
    t[4] = 1;
    reject_tables = 1;
    push(&l, t, 40, 16, -1);
    CHECK(table_status() == ECL_TABLE_REJECTED && tables_seen == 2, "rejected by firmware");
    reject_tables = 0;
    {
        uint8_t big[100];
        memset(big, 1, sizeof big);
        push(&l, big, 100, 50, -1);
        CHECK(table_status() == ECL_TABLE_TOO_LARGE, "too large");
    }
    l.cfg.table_buf = NULL;
    push(&l, t, 40, 16, -1);
    CHECK(table_status() == ECL_TABLE_NO_BUFFER, "no buffer");
}

static uint32_t rng = 12345u;
static uint32_t xorshift(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static void test_noise_and_resync(void)
{
    ecl_link l;
    ecl_header h;
    const uint8_t *p;
    uint8_t noise[4096], ping[3] = {7, 8, 9};
    int round, i;
    make_link(&l);
    for (round = 0; round < 200; round++) {
        for (i = 0; i < (int)sizeof noise; i++) {
            noise[i] = (uint8_t)xorshift();
        }
        ecl_rx_feed(&l, noise, sizeof noise);
    }
    for (i = 0; i < 1000; i++) {
        noise[i] = (uint8_t)(1 + xorshift() % 255); /* a block far larger than the buffer */
    }
    ecl_rx_feed(&l, noise, 1000);
    CHECK(l.rx_len <= sizeof rx_buf, "rx buffer bounded");
    clear_out();
    ecl_rx_feed(&l, (const uint8_t *)"\0", 1);
    host_send(&l, ECL_T_PING, 0, 0, 0, ping, 3);
    CHECK(next_frame(&h, &p) && h.type == ECL_T_PONG && h.payload_len == 3 && memcmp(p, ping, 3) == 0, "pong");
    CHECK(l.stats.rx_frames_bad > 100, "noise counted: %u", (unsigned)l.stats.rx_frames_bad);
}

static void test_bad_config(void)
{
    ecl_link l;
    ecl_config cfg;
    ecl_tensor_desc huge = {"h", ECL_DT_FLOAT, 2, {65536, 65536, 0, 0, 0, 0, 0, 0}};
    ecl_tensor_desc bad_dtype = {"d", 99, 1, {4, 0, 0, 0, 0, 0, 0, 0}};
    memset(&cfg, 0, sizeof cfg);
    cfg.write = capture;
    cfg.tensors = tensors;
    cfg.tensor_count = 2;
    cfg.max_payload = 128;
    cfg.rx_buf = rx_buf;
    cfg.rx_buf_size = sizeof rx_buf;
    CHECK(ecl_init(&l, &cfg) == ECL_OK, "good config");
    cfg.max_payload = 64;
    CHECK(ecl_init(&l, &cfg) == ECL_E_ARG, "max_payload below minimum");
    cfg.max_payload = 256;
    CHECK(ecl_init(&l, &cfg) == ECL_E_ARG, "rx buffer too small for max_payload");
    cfg.max_payload = 128;
    cfg.tensors = &huge;
    cfg.tensor_count = 1;
    CHECK(ecl_init(&l, &cfg) == ECL_E_ARG, "tensor larger than 4 GiB");
    cfg.tensors = &bad_dtype;
    CHECK(ecl_init(&l, &cfg) == ECL_E_ARG, "unknown dtype");
}

int main(int argc, char **argv)
{
    int vectors = argc > 1 ? run_vectors(argv[1]) : 0;
    CHECK(argc < 2 || vectors >= 30, "expected the vector file, read %d vectors", vectors);
    test_handshake_and_list();
    test_streaming_and_credits();
    test_table_push();
    test_noise_and_resync();
    test_bad_config();
    printf("%d vectors, %d checks, %d failed\n", vectors, checks, failures);
    return failures ? 1 : 0;
}

/* device.c: an example device that plays the part of firmware, on a host.
 *
 * It runs the small network of model.c and streams every activation through the
 * ecal_link library exactly as firmware would: it answers the handshake, honours
 * credits (never blocking its inference loop: whole samples are dropped when the
 * host has granted no credit or the transmit ring is full), prints its log lines
 * through LOG frames, accepts table pushes, and can inject faults on the wire.
 *
 *   ecal_device [--fd N | --tcp PORT | --stdio] [options]       stream (see usage())
 *   ecal_device --dump N [--input-offset K]                      raw tensors of inputs K..K+N-1
 *
 * With --truth FILE it writes what really happened, one event per line, so tests can
 * compare the host's table with one computed from exactly the intact samples:
 *   boot BOOT_ID | sample INPUT SAMPLE_ID | intact INPUT TENSOR | damaged INPUT TENSOR |
 *   dropped INPUT credit|busy | fault KIND SEQ TYPE | final INPUTS
 */
#define _XOPEN_SOURCE 700 /* POSIX 2008 with ptsname() */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ecal_link.h"
#include "model.h"

typedef struct {
    int fd, tcp_port, use_stdio;
    long count, dump, input_offset, reset_at, unplug_at, log_every;
    double rate;
    unsigned max_payload;
    uint32_t seed;
    long flip_every, drop_every, cut_every, lose_every, dup_every, junk_every, rx_drop_every;
    int boot_junk;
    const char *truth_path, *table_out;
} options;

static options opt;
static FILE *truth;

/* -- transport: a transmit ring drained without blocking ---------------------------- */
#define RING_SIZE (1u << 20)
static uint8_t ring[RING_SIZE];
static size_t ring_head, ring_len; /* bytes ring[ring_head .. +ring_len) wait to be written */
static int in_fd = -1, out_fd = -1, listen_fd = -1;

static void ring_put(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n && ring_len < RING_SIZE; i++) {
        ring[(ring_head + ring_len++) % RING_SIZE] = p[i];
    }
}

static size_t tx_room(void *user)
{
    (void)user;
    return RING_SIZE - ring_len > 65536 ? RING_SIZE - ring_len - 65536 : 0;
}

static int flush_ring(void) /* -1: the link is gone */
{
    while (ring_len > 0) {
        size_t n = RING_SIZE - ring_head < ring_len ? RING_SIZE - ring_head : ring_len;
        ssize_t w = write(out_fd, ring + ring_head, n);
        if (w < 0) {
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        }
        ring_head = (ring_head + (size_t)w) % RING_SIZE;
        ring_len -= (size_t)w;
    }
    return 0;
}

/* -- the link, and fault injection on whole frames --------------------------------------- */
static ecl_link lk;
static uint8_t rx_buf[ECL_RX_BUF_SIZE(ECL_PAYLOAD_LIMIT)], table_buf[1 << 16];
static uint8_t stage[2 * ECL_PAYLOAD_LIMIT];
static size_t stage_len;
static uint32_t rng_state = 1, boots;
static long faulted_frames; /* frames eligible for faults so far */
static int abort_armed, aborting;
static uint8_t damaged[MODEL_TENSORS];

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static int every(long n, long k, long phase)
{
    return n > 0 && k % n == phase % n;
}

static void emit_frame(void)
{
    const ecl_header *h = &lk.tx_hdr;
    const char *kind = NULL;
    size_t len = stage_len; /* includes the delimiter */
    long k;
    int exempt = h->type == ECL_T_HELLO_ACK || h->type == ECL_T_TENSOR_INFO || h->type == ECL_T_ACK ||
                 h->type == ECL_T_TABLE_ACK;
    if (!ecl_streaming(&lk) || exempt) { /* faults only while streaming: every one is followed by a frame */
        ring_put(stage, len);
        return;
    }
    k = faulted_frames++;
    if (every(opt.junk_every, k, 0)) {
        static const char junk[] = "\r\n[boot] printf noise outside any frame\r\n";
        ring_put((const uint8_t *)junk, sizeof junk - 1);
        ring_put((const uint8_t *)"", 1);
        fprintf(truth, "fault junk %u %u\n", (unsigned)h->seq, (unsigned)h->type);
    }
    if (every(opt.flip_every, k, 1) && len > 1) {
        stage[rnd() % (len - 1)] ^= (uint8_t)(1u << (rnd() % 8));
        kind = "flip";
    } else if (every(opt.drop_every, k, 2) && len > 10) {
        size_t at = rnd() % (len - 9), n = 1 + rnd() % 8;
        memmove(stage + at, stage + at + n, len - at - n);
        len -= n;
        kind = "drop_bytes";
    } else if (every(opt.cut_every, k, 3) && len > 2) {
        len = 1 + rnd() % (len - 2);
        stage[len++] = 0;
        kind = "cut";
    } else if (every(opt.lose_every, k, 4)) {
        len = 0;
        kind = "lose";
    } else if (every(opt.dup_every, k, 5)) {
        ring_put(stage, len);
        fprintf(truth, "fault dup %u %u\n", (unsigned)h->seq, (unsigned)h->type);
    }
    if (kind) {
        fprintf(truth, "fault %s %u %u\n", kind, (unsigned)h->seq, (unsigned)h->type);
        if (h->type == ECL_T_TENSOR_CHUNK && h->tensor_id < MODEL_TENSORS) {
            damaged[h->tensor_id] = 1;
        }
    }
    ring_put(stage, len);
}

static int on_write(void *user, const uint8_t *data, size_t len)
{
    size_t i;
    (void)user;
    if (aborting) {
        return -1;
    }
    for (i = 0; i < len; i++) {
        if (stage_len < sizeof stage) {
            stage[stage_len++] = data[i];
        }
        if (data[i] == 0) { /* a frame is complete (or a lone delimiter) */
            if (stage_len > 1) {
                emit_frame();
            } else {
                ring_put(stage, 1);
            }
            stage_len = 0;
            if (abort_armed && lk.tx_hdr.type == ECL_T_TENSOR_CHUNK && lk.tx_hdr.tensor_id == 1) {
                aborting = 1; /* reset or unplug right after this frame */
                return 0;
            }
        }
    }
    return 0;
}

static int on_table(void *user, const uint8_t *t, size_t len)
{
    FILE *f;
    (void)user;
    if (opt.table_out == NULL) {
        return 0;
    }
    f = fopen(opt.table_out, "wb");
    if (f == NULL) {
        return 1;
    }
    fwrite(t, 1, len, f);
    fclose(f);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double t0;

static void boot(void)
{
    ecl_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.write = on_write;
    cfg.tx_room = tx_room;
    cfg.on_table = on_table;
    cfg.tensors = model_tensors;
    cfg.tensor_count = MODEL_TENSORS;
    cfg.firmware_id = "ecal-example-device 1.0";
    memcpy(cfg.model_hash, model_hash, ECL_MODEL_HASH_SIZE);
    cfg.max_payload = (uint16_t)opt.max_payload;
    cfg.rx_buf = rx_buf;
    cfg.rx_buf_size = sizeof rx_buf;
    cfg.table_buf = table_buf;
    cfg.table_buf_size = sizeof table_buf;
    cfg.boot_id = opt.seed * 1000u + boots++;
    if (ecl_init(&lk, &cfg) != ECL_OK) {
        fprintf(stderr, "ecal_device: bad lk configuration\n");
        exit(2);
    }
    stage_len = 0;
    aborting = abort_armed = 0;
    if (opt.boot_junk) {
        static const char junk[] = "\r\nROM bootloader v2.1 (c) 2026\r\nchecking flash... ok\r\n";
        ring_put((const uint8_t *)junk, sizeof junk - 1);
    }
    fprintf(truth, "boot %u\n", (unsigned)cfg.boot_id);
    ecl_boot(&lk);
    ecl_log(&lk, ECL_LOG_INFO, "booted: 5 tensors, model ecal-example-v1", 40);
}

/* -- samples ----------------------------------------------------------------------------- */
static model_buffers bufs;
static long inputs_done, samples_begun;

static void run_sample(void)
{
    long input = opt.input_offset + inputs_done++;
    unsigned t, stopped_at = MODEL_TENSORS;
    int rc;
    model_run((uint32_t)input, &bufs);
    rc = ecl_sample_begin(&lk);
    if (rc == ECL_E_NO_CREDIT || rc == ECL_E_BUSY) {
        fprintf(truth, "dropped %ld %s\n", input, rc == ECL_E_BUSY ? "busy" : "credit");
        return;
    }
    if (rc != ECL_OK) {
        return;
    }
    fprintf(truth, "sample %ld %u\n", input, (unsigned)lk.sample_id);
    memset(damaged, 0, sizeof damaged);
    samples_begun++;
    abort_armed = samples_begun == opt.reset_at || samples_begun == opt.unplug_at;
    for (t = 0; t < MODEL_TENSORS; t++) {
        if (ecl_send_tensor(&lk, (uint16_t)t, model_tensor(&bufs, t)) != ECL_OK) {
            stopped_at = t; /* reset or unplug: tensor t and the later ones did not (all) leave */
            break;
        }
    }
    if (stopped_at == MODEL_TENSORS) {
        ecl_sample_end(&lk);
    }
    for (t = 0; t < MODEL_TENSORS; t++) {
        if (ecl_selected(&lk, (uint16_t)t)) {
            fprintf(truth, "%s %ld %u\n", t < stopped_at && !damaged[t] ? "intact" : "damaged", input, t);
        }
    }
    if (opt.log_every > 0 && samples_begun % opt.log_every == 0) {
        char line[64];
        int n = snprintf(line, sizeof line, "sample %ld sent (input %ld)", samples_begun, input);
        ecl_log(&lk, ECL_LOG_INFO, line, (size_t)n);
    }
    fflush(truth);
}

/* -- receiving, with optional loss of whole host frames ---------------------------------- */
static long rx_blocks;
static uint8_t rx_skip;

static void feed(const uint8_t *p, size_t n)
{
    size_t i, start = 0;
    if (opt.rx_drop_every <= 0) {
        ecl_rx_feed(&lk, p, n);
        return;
    }
    for (i = 0; i < n; i++) { /* drop every Nth block the host sends */
        if (p[i] == 0) {
            if (!rx_skip) {
                ecl_rx_feed(&lk, p + start, i + 1 - start);
            }
            rx_skip = (uint8_t)(++rx_blocks % opt.rx_drop_every == 0);
            start = i + 1;
        }
    }
    if (!rx_skip && start < n) {
        ecl_rx_feed(&lk, p + start, n - start);
    }
}

/* -- main loop --------------------------------------------------------------------------- */
static int wait_for_tcp_host(void)
{
    int fd = accept(listen_fd, NULL, NULL);
    if (fd < 0) {
        return -1;
    }
    in_fd = out_fd = fd;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    ring_head = ring_len = 0;
    boot();
    return 0;
}

static void unplug(void)
{
    double deadline = now_s() + 2.0;
    while (ring_len > 0 && now_s() < deadline && flush_ring() == 0) {
        struct pollfd p;
        p.fd = out_fd;
        p.events = POLLOUT;
        poll(&p, 1, 20);
    }
    fprintf(truth, "unplug\n");
    fflush(truth);
    if (opt.tcp_port < 0) {
        /* A pty hang-up discards what the host has not read yet, so the truth log could not say
         * which tensors arrived: unplug once the host has read everything (bounded wait). */
        const char *name = ptsname(out_fd);
        int slave = name ? open(name, O_RDONLY | O_NOCTTY | O_NONBLOCK) : -1, queued = 0, quiet = 0;
        deadline = now_s() + 5.0;
        /* FIONREAD misses bytes the kernel has not moved into the slave's buffer yet (a loaded
         * machine): the queue must stay empty for 20 checks in a row */
        while (slave >= 0 && quiet < 20 && ioctl(slave, FIONREAD, &queued) == 0 && now_s() < deadline) {
            quiet = queued > 0 ? 0 : quiet + 1;
            poll(NULL, 0, 5);
        }
        exit(0);
    }
    close(in_fd);
    in_fd = out_fd = -1;
    wait_for_tcp_host();
}

static void serve(void)
{
    double last_stats = now_s(), next_sample = now_s();
    int final_sent = 0;
    for (;;) {
        struct pollfd p[2];
        nfds_t np = 1;
        int want_sample = ecl_streaming(&lk) && (opt.count < 0 || inputs_done < opt.count);
        uint8_t buf[4096];
        double now;
        p[0].fd = in_fd;
        p[0].events = (short)(POLLIN | (in_fd == out_fd && ring_len > 0 ? POLLOUT : 0));
        if (in_fd != out_fd && ring_len > 0) {
            p[1].fd = out_fd;
            p[1].events = POLLOUT;
            np = 2;
        }
        poll(p, np, want_sample ? 1 : 20); /* then try both directions without blocking */
        {
            ssize_t n = read(in_fd, buf, sizeof buf);
            if (n > 0) {
                feed(buf, (size_t)n);
            } else if ((n == 0 && opt.fd < 0) || (n < 0 && errno != EAGAIN && errno != EINTR && errno != EIO)) {
                if (opt.tcp_port >= 0) { /* the host went away: wait for the next one */
                    close(in_fd);
                    wait_for_tcp_host();
                    continue;
                }
                return;
            }
        }
        if (flush_ring() < 0 && opt.tcp_port >= 0) {
            close(in_fd);
            wait_for_tcp_host();
            continue;
        }
        now = now_s();
        if (ecl_streaming(&lk)) {
            if (opt.count >= 0 && inputs_done >= opt.count) {
                if (!final_sent || now - last_stats > 0.2) {
                    ecl_send_stats(&lk, ECL_F_FINAL, (uint32_t)((now - t0) * 1000));
                    last_stats = now;
                    if (!final_sent) {
                        fprintf(truth, "final %ld\n", inputs_done);
                        fflush(truth);
                    }
                    final_sent = 1;
                }
            } else if (opt.rate > 0 ? now >= next_sample
                                    : lk.stats.run_samples < lk.grant && tx_room(NULL) >= ecl_sample_wire_bound(&lk)) {
                next_sample = opt.rate > 0 ? (next_sample < now - 1.0 ? now : next_sample) + 1.0 / opt.rate : now;
                run_sample();
                if (aborting) {
                    if (samples_begun == opt.unplug_at) {
                        unplug();
                    } else {
                        static const char junk[] = "\r\n*** watchdog reset ***\r\nROM boot\r\n";
                        aborting = 0;
                        ring_put((const uint8_t *)junk, sizeof junk - 1);
                        boot();
                    }
                    final_sent = 0;
                    continue;
                }
            }
            if (now - last_stats > 0.25) {
                ecl_send_stats(&lk, 0, (uint32_t)((now - t0) * 1000));
                last_stats = now;
            }
        } else {
            final_sent = 0;
        }
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: ecal_device (--fd N | --tcp PORT | --stdio | --dump N) [options]\n"
            "  --count N          run N inferences, then send FINAL stats (default: forever)\n"
            "  --rate HZ          free-running inference rate; 0 (default): run when credit allows\n"
            "  --max-payload N    largest payload (default 1024)\n"
            "  --input-offset K   first input index (default 0)\n"
            "  --seed S           fault and boot-id seed (default 1)\n"
            "  --flip-every N     flip one bit in every Nth frame\n"
            "  --drop-every N     delete 1-8 bytes inside every Nth frame\n"
            "  --cut-every N      truncate every Nth frame\n"
            "  --lose-every N     do not send every Nth frame\n"
            "  --dup-every N      send every Nth frame twice\n"
            "  --junk-every N     print junk text before every Nth frame\n"
            "  --rx-drop-every N  ignore every Nth frame from the host\n"
            "  --reset-at K       reset in the middle of the Kth sample\n"
            "  --unplug-at K      disconnect in the middle of the Kth sample (fd: exit)\n"
            "  --boot-junk        print bootloader text before booting\n"
            "  --log-every N      a LOG line every N samples\n"
            "  --truth FILE       write what happened to FILE\n"
            "  --table-out FILE   write accepted table pushes to FILE\n");
    exit(2);
}

static long num(int argc, char **argv, int *i)
{
    char *end;
    long v;
    if (*i + 1 >= argc) {
        usage();
    }
    v = strtol(argv[++*i], &end, 10);
    if (*end != '\0') {
        usage();
    }
    return v;
}

static void parse(int argc, char **argv)
{
    int i;
    opt.fd = opt.tcp_port = -1;
    opt.count = opt.dump = opt.reset_at = opt.unplug_at = -1;
    opt.max_payload = 1024;
    opt.seed = 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--fd")) opt.fd = (int)num(argc, argv, &i);
        else if (!strcmp(a, "--tcp")) opt.tcp_port = (int)num(argc, argv, &i);
        else if (!strcmp(a, "--stdio")) opt.use_stdio = 1;
        else if (!strcmp(a, "--dump")) opt.dump = num(argc, argv, &i);
        else if (!strcmp(a, "--count")) opt.count = num(argc, argv, &i);
        else if (!strcmp(a, "--rate")) opt.rate = (double)num(argc, argv, &i);
        else if (!strcmp(a, "--max-payload")) opt.max_payload = (unsigned)num(argc, argv, &i);
        else if (!strcmp(a, "--input-offset")) opt.input_offset = num(argc, argv, &i);
        else if (!strcmp(a, "--seed")) opt.seed = (uint32_t)num(argc, argv, &i);
        else if (!strcmp(a, "--flip-every")) opt.flip_every = num(argc, argv, &i);
        else if (!strcmp(a, "--drop-every")) opt.drop_every = num(argc, argv, &i);
        else if (!strcmp(a, "--cut-every")) opt.cut_every = num(argc, argv, &i);
        else if (!strcmp(a, "--lose-every")) opt.lose_every = num(argc, argv, &i);
        else if (!strcmp(a, "--dup-every")) opt.dup_every = num(argc, argv, &i);
        else if (!strcmp(a, "--junk-every")) opt.junk_every = num(argc, argv, &i);
        else if (!strcmp(a, "--rx-drop-every")) opt.rx_drop_every = num(argc, argv, &i);
        else if (!strcmp(a, "--reset-at")) opt.reset_at = num(argc, argv, &i);
        else if (!strcmp(a, "--unplug-at")) opt.unplug_at = num(argc, argv, &i);
        else if (!strcmp(a, "--log-every")) opt.log_every = num(argc, argv, &i);
        else if (!strcmp(a, "--boot-junk")) opt.boot_junk = 1;
        else if (!strcmp(a, "--truth") && i + 1 < argc) opt.truth_path = argv[++i];
        else if (!strcmp(a, "--table-out") && i + 1 < argc) opt.table_out = argv[++i];
        else usage();
    }
    if (opt.max_payload < ECL_MIN_PAYLOAD || opt.max_payload > ECL_PAYLOAD_LIMIT) {
        usage();
    }
}

static int listen_tcp(int port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int one = 1;
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(listen_fd, 1) < 0) {
        perror("ecal_device: tcp");
        return -1;
    }
    getsockname(listen_fd, (struct sockaddr *)&a, &len);
    printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    model_init();
    rng_state = opt.seed * 2654435761u + 1u;
    if (opt.dump >= 0) {
        long k;
        unsigned t;
        for (k = 0; k < opt.dump; k++) {
            model_run((uint32_t)(opt.input_offset + k), &bufs);
            for (t = 0; t < MODEL_TENSORS; t++) {
                uint32_t n = ecl_dtype_size(model_tensors[t].dtype), d;
                for (d = 0; d < model_tensors[t].rank; d++) {
                    n *= model_tensors[t].dims[d];
                }
                fwrite(model_tensor(&bufs, t), 1, n, stdout);
            }
        }
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    truth = fopen(opt.truth_path ? opt.truth_path : "/dev/null", "w");
    if (truth == NULL) {
        perror("ecal_device: --truth");
        return 2;
    }
    t0 = now_s();
    if (opt.tcp_port >= 0) {
        if (listen_tcp(opt.tcp_port) < 0 || wait_for_tcp_host() < 0) {
            return 2;
        }
    } else if (opt.fd >= 0 || opt.use_stdio) {
        in_fd = opt.fd >= 0 ? opt.fd : 0;
        out_fd = opt.fd >= 0 ? opt.fd : 1;
        fcntl(in_fd, F_SETFL, fcntl(in_fd, F_GETFL) | O_NONBLOCK);
        fcntl(out_fd, F_SETFL, fcntl(out_fd, F_GETFL) | O_NONBLOCK);
        boot();
    } else {
        usage();
    }
    serve();
    fclose(truth);
    return 0;
}

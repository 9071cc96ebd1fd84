/* main.c: edgecal on a NUCLEO-F411RE (STM32F411RE, Cortex-M4F), bare metal.
 *
 * A small network (16 int8 inputs, a dense layer, 4 float logits) runs in a loop; the
 * ecal_link library streams its two tensors over USART2, which the board wires to the
 * ST-LINK's USB virtual COM port, to `edgecal stream --push`. When the host pushes the
 * finished table, ecal_table validates it and the loop quantizes its logits with the
 * scale and zero point of the entry "logits" from then on. */
#include <string.h>

#include "board.h"
#include "ecal_link.h"
#include "ecal_table.h"

#define N_IN 16
#define N_OUT 4
#define MAX_PAYLOAD 256u
#define TABLE_MAX 2048u

static const ecl_tensor_desc tensors[2] = {
    {"input", ECL_DT_INT8, 2, {1, N_IN, 0, 0, 0, 0, 0, 0}},
    {"logits", ECL_DT_FLOAT, 2, {1, N_OUT, 0, 0, 0, 0, 0, 0}},
};
static const uint8_t model_hash[ECL_MODEL_HASH_SIZE] = {0x6e, 0x75, 0x63, 0x6c, 0x65, 0x6f, 0x2d, 0x66,
                                                        0x34, 0x31, 0x31, 0x72, 0x65, 0x2d, 0x76, 0x31};

static int8_t input[N_IN], logits_q[N_OUT];
static float logits[N_OUT];
static uint8_t rx_buf[ECL_RX_BUF_SIZE(MAX_PAYLOAD)], table_buf[TABLE_MAX], active[TABLE_MAX];
static ecl_link link;
static ecl_config cfg;
static ect_table table;          /* the table in use: no entries until one is pushed */
static float out_scale;          /* 0 until a table gives the logits' scale */
static int32_t out_zero_point;
static volatile uint8_t table_news;
static volatile uint32_t ticks;
static uint32_t rng = 0x2545F491u;
/* Not zeroed at reset: it counts resets, from whatever SRAM holds after power-up, so the host
 * tells every boot apart. */
__attribute__((section(".noinit"))) static uint32_t boot_counter;

void SysTick_Handler(void)
{
    ticks++;
}

uint32_t millis(void)
{
    return ticks;
}

void clock_init(void)
{
    SYST_RVR = CORE_HZ / 1000u - 1u; /* 1 ms */
    SYST_CVR = 0;
    SYST_CSR = 7u; /* core clock, interrupt, enable */
}

static uint32_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* The network: input = random int8, logits[j] = 0.01 * sum_i w(j, i) * input[i]. */
static void run_model(void)
{
    int i, j;
    for (i = 0; i < N_IN; i++) {
        input[i] = (int8_t)(next_random() >> 24);
    }
    for (j = 0; j < N_OUT; j++) {
        int32_t acc = 0;
        for (i = 0; i < N_IN; i++) {
            acc += ((i * 7 + j * 3) % 11 - 5) * input[i];
        }
        logits[j] = 0.01f * (float)acc;
        if (out_scale > 0.0f) {
            float v = logits[j] / out_scale;
            int32_t q = (int32_t)(v + (v >= 0.0f ? 0.5f : -0.5f)) + out_zero_point;
            logits_q[j] = (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
        }
    }
}

/* The link calls this with a pushed table that passed its CRC; a 0 return accepts it. The
 * table is checked in full before it replaces the one in use, so a bad push changes nothing. */
static int table_ready(void *user, const uint8_t *data, size_t len)
{
    ect_table fresh;
    ect_entry e;
    (void)user;
    if (len > sizeof active || ect_open(&fresh, data, len) != ECT_OK) {
        return -1;
    }
    memcpy(active, data, len);
    ect_open(&table, active, len);
    if (ect_find(&table, "logits", 6, &e) == ECT_OK) {
        out_scale = ect_scale(&e);
        out_zero_point = ect_zero_point(&e);
    }
    table_news = 1;
    return 0;
}

static int link_write(void *user, const uint8_t *data, size_t len)
{
    (void)user;
    return uart_write(data, len);
}

static size_t link_room(void *user)
{
    (void)user;
    return uart_room();
}

/* Appends the decimal digits of v to s at *n. */
static void put_u32(char *s, size_t *n, uint32_t v)
{
    char digits[10];
    int k = 0;
    do {
        digits[k++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0);
    while (k > 0) {
        s[(*n)++] = digits[--k];
    }
}

static void report_table(void)
{
    static const char head[] = "table in use: entries ", mid[] = ", logits scale (1e-6) ";
    char text[64];
    size_t n = 0;
    memcpy(text, head, sizeof head - 1);
    n += sizeof head - 1;
    put_u32(text, &n, table.count);
    memcpy(text + n, mid, sizeof mid - 1);
    n += sizeof mid - 1;
    put_u32(text, &n, (uint32_t)(out_scale * 1e6f));
    ecl_log(&link, ECL_LOG_INFO, text, n);
}

static void link_init(void)
{
    cfg.write = link_write;
    cfg.tx_room = link_room;
    cfg.on_table = table_ready;
    cfg.tensors = tensors;
    cfg.tensor_count = 2;
    cfg.firmware_id = "nucleo-f411re example 1";
    memcpy(cfg.model_hash, model_hash, sizeof model_hash);
    cfg.max_payload = MAX_PAYLOAD;
    cfg.rx_buf = rx_buf;
    cfg.rx_buf_size = sizeof rx_buf;
    cfg.table_buf = table_buf;
    cfg.table_buf_size = sizeof table_buf;
    cfg.boot_id = ++boot_counter;
    ecl_init(&link, &cfg);
    ecl_boot(&link);
}

int main(void)
{
    uint32_t last_stats = 0;
    clock_init();
    uart_init();
    link_init();
    for (;;) {
        uint8_t rx[64];
        ecl_rx_feed(&link, rx, uart_read(rx, sizeof rx));
        run_model();
        if (ecl_sample_begin(&link) == ECL_OK) { /* credit and room for the whole sample */
            ecl_send_tensor(&link, 0, input);
            ecl_send_tensor(&link, 1, logits);
            ecl_sample_end(&link);
        }
        if (table_news) {
            table_news = 0;
            report_table();
        }
        if (millis() - last_stats >= 1000u) {
            last_stats = millis();
            ecl_send_stats(&link, 0, last_stats);
        }
    }
}

/* ecal_link.c: the device end of the edgecal serial link. See ecal_link.h and ../PROTOCOL.md. */
#include "ecal_link.h"

#include <string.h> /* memcpy only */

static const uint32_t crc_table[256] = {
    0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau, 0x076dc419u, 0x706af48fu,
    0xe963a535u, 0x9e6495a3u, 0x0edb8832u, 0x79dcb8a4u, 0xe0d5e91eu, 0x97d2d988u,
    0x09b64c2bu, 0x7eb17cbdu, 0xe7b82d07u, 0x90bf1d91u, 0x1db71064u, 0x6ab020f2u,
    0xf3b97148u, 0x84be41deu, 0x1adad47du, 0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u,
    0x136c9856u, 0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu, 0x14015c4fu, 0x63066cd9u,
    0xfa0f3d63u, 0x8d080df5u, 0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u, 0xa2677172u,
    0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu, 0x35b5a8fau, 0x42b2986cu,
    0xdbbbc9d6u, 0xacbcf940u, 0x32d86ce3u, 0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u,
    0x26d930acu, 0x51de003au, 0xc8d75180u, 0xbfd06116u, 0x21b4f4b5u, 0x56b3c423u,
    0xcfba9599u, 0xb8bda50fu, 0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u,
    0x2f6f7c87u, 0x58684c11u, 0xc1611dabu, 0xb6662d3du, 0x76dc4190u, 0x01db7106u,
    0x98d220bcu, 0xefd5102au, 0x71b18589u, 0x06b6b51fu, 0x9fbfe4a5u, 0xe8b8d433u,
    0x7807c9a2u, 0x0f00f934u, 0x9609a88eu, 0xe10e9818u, 0x7f6a0dbbu, 0x086d3d2du,
    0x91646c97u, 0xe6635c01u, 0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu,
    0x6c0695edu, 0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u, 0x65b0d9c6u, 0x12b7e950u,
    0x8bbeb8eau, 0xfcb9887cu, 0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u, 0xfbd44c65u,
    0x4db26158u, 0x3ab551ceu, 0xa3bc0074u, 0xd4bb30e2u, 0x4adfa541u, 0x3dd895d7u,
    0xa4d1c46du, 0xd3d6f4fbu, 0x4369e96au, 0x346ed9fcu, 0xad678846u, 0xda60b8d0u,
    0x44042d73u, 0x33031de5u, 0xaa0a4c5fu, 0xdd0d7cc9u, 0x5005713cu, 0x270241aau,
    0xbe0b1010u, 0xc90c2086u, 0x5768b525u, 0x206f85b3u, 0xb966d409u, 0xce61e49fu,
    0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u, 0x59b33d17u, 0x2eb40d81u,
    0xb7bd5c3bu, 0xc0ba6cadu, 0xedb88320u, 0x9abfb3b6u, 0x03b6e20cu, 0x74b1d29au,
    0xead54739u, 0x9dd277afu, 0x04db2615u, 0x73dc1683u, 0xe3630b12u, 0x94643b84u,
    0x0d6d6a3eu, 0x7a6a5aa8u, 0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u,
    0xf00f9344u, 0x8708a3d2u, 0x1e01f268u, 0x6906c2feu, 0xf762575du, 0x806567cbu,
    0x196c3671u, 0x6e6b06e7u, 0xfed41b76u, 0x89d32be0u, 0x10da7a5au, 0x67dd4accu,
    0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u, 0xd6d6a3e8u, 0xa1d1937eu,
    0x38d8c2c4u, 0x4fdff252u, 0xd1bb67f1u, 0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu,
    0xd80d2bdau, 0xaf0a1b4cu, 0x36034af6u, 0x41047a60u, 0xdf60efc3u, 0xa867df55u,
    0x316e8eefu, 0x4669be79u, 0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u,
    0xcc0c7795u, 0xbb0b4703u, 0x220216b9u, 0x5505262fu, 0xc5ba3bbeu, 0xb2bd0b28u,
    0x2bb45a92u, 0x5cb36a04u, 0xc2d7ffa7u, 0xb5d0cf31u, 0x2cd99e8bu, 0x5bdeae1du,
    0x9b64c2b0u, 0xec63f226u, 0x756aa39cu, 0x026d930au, 0x9c0906a9u, 0xeb0e363fu,
    0x72076785u, 0x05005713u, 0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu, 0x0cb61b38u,
    0x92d28e9bu, 0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u, 0x86d3d2d4u, 0xf1d4e242u,
    0x68ddb3f8u, 0x1fda836eu, 0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u, 0x18b74777u,
    0x88085ae6u, 0xff0f6a70u, 0x66063bcau, 0x11010b5cu, 0x8f659effu, 0xf862ae69u,
    0x616bffd3u, 0x166ccf45u, 0xa00ae278u, 0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u,
    0xa7672661u, 0xd06016f7u, 0x4969474du, 0x3e6e77dbu, 0xaed16a4au, 0xd9d65adcu,
    0x40df0b66u, 0x37d83bf0u, 0xa9bcae53u, 0xdebb9ec5u, 0x47b2cf7fu, 0x30b5ffe9u,
    0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u, 0xbad03605u, 0xcdd70693u,
    0x54de5729u, 0x23d967bfu, 0xb3667a2eu, 0xc4614ab8u, 0x5d681b02u, 0x2a6f2b94u,
    0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu, 0x2d02ef8du,
};

uint32_t ecl_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    uint32_t c = crc ^ 0xFFFFFFFFu;
    size_t i;
    for (i = 0; i < len; i++) {
        c = crc_table[(c ^ data[i]) & 0xFFu] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFu;
}

uint32_t ecl_dtype_size(uint8_t dtype)
{
    switch (dtype) {
    case ECL_DT_UINT8:
    case ECL_DT_INT8:
        return 1;
    case ECL_DT_UINT16:
    case ECL_DT_INT16:
    case ECL_DT_FLOAT16:
        return 2;
    case ECL_DT_FLOAT:
    case ECL_DT_INT32:
    case ECL_DT_UINT32:
        return 4;
    case ECL_DT_INT64:
    case ECL_DT_DOUBLE:
    case ECL_DT_UINT64:
        return 8;
    default:
        return 0;
    }
}

/* -- little-endian fields ------------------------------------------------------------- */
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void pack_header(uint8_t *p, const ecl_header *h)
{
    p[0] = ECL_MAGIC;
    p[1] = h->version;
    p[2] = h->type;
    p[3] = h->flags;
    put32(p + 4, h->seq);
    put32(p + 8, h->sample_id);
    put16(p + 12, h->tensor_id);
    put16(p + 14, h->payload_len);
    put32(p + 16, h->offset);
    put32(p + 20, h->total);
}

/* -- streaming COBS encoder ----------------------------------------------------------- */
static void enc_begin(ecl_encoder *e, ecl_write_fn write, void *user)
{
    e->n = 0;
    e->after_full = 0;
    e->crc = 0;
    e->err = 0;
    e->write = write;
    e->user = user;
}

static void enc_flush(ecl_encoder *e)
{
    e->buf[0] = (uint8_t)(e->n + 1);
    if (!e->err && e->write(e->user, e->buf, (size_t)e->n + 1) < 0) {
        e->err = 1;
    }
    e->n = 0;
}

static void enc_bytes(ecl_encoder *e, const uint8_t *p, size_t len, int add_crc)
{
    size_t i;
    if (add_crc) {
        e->crc = ecl_crc32(e->crc, p, len);
    }
    for (i = 0; i < len; i++) {
        if (p[i] == 0) {
            enc_flush(e); /* the block's code byte stands for this zero */
            e->after_full = 0;
        } else {
            e->buf[++e->n] = p[i];
            e->after_full = 0;
            if (e->n == 254) { /* a full block: code 0xFF, no implied zero */
                enc_flush(e);
                e->after_full = 1;
            }
        }
    }
}

static int enc_end(ecl_encoder *e)
{
    uint8_t crc[4];
    const uint8_t zero = 0;
    put32(crc, e->crc);
    enc_bytes(e, crc, 4, 0);
    if (!(e->after_full && e->n == 0)) {
        enc_flush(e);
    }
    if (!e->err && e->write(e->user, &zero, 1) < 0) {
        e->err = 1;
    }
    return e->err ? ECL_E_WRITE : ECL_OK;
}

int ecl_frame_write(const ecl_header *h, const uint8_t *payload, uint16_t len, ecl_write_fn write, void *user)
{
    ecl_encoder e;
    ecl_header hh;
    uint8_t head[ECL_HEADER_SIZE];
    if (h == NULL || write == NULL || (payload == NULL && len > 0)) {
        return ECL_E_ARG;
    }
    hh = *h;
    hh.payload_len = len;
    pack_header(head, &hh);
    enc_begin(&e, write, user);
    enc_bytes(&e, head, ECL_HEADER_SIZE, 1);
    enc_bytes(&e, payload, len, 1);
    return enc_end(&e);
}

/* -- decoding -------------------------------------------------------------------------- */
int ecl_cobs_decode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len)
{
    size_t i = 0, o = 0, k;
    while (i < len) {
        uint8_t code = src[i++];
        size_t n;
        if (code == 0) {
            return ECL_E_COBS;
        }
        n = (size_t)code - 1u;
        if (n > len - i) {
            return ECL_E_COBS;
        }
        if (n > cap - o) {
            return ECL_E_OVERSIZE;
        }
        for (k = 0; k < n; k++) {
            if (src[i + k] == 0) {
                return ECL_E_COBS;
            }
            dst[o++] = src[i + k];
        }
        i += n;
        if (code != 0xFFu && i < len) {
            if (o >= cap) {
                return ECL_E_OVERSIZE;
            }
            dst[o++] = 0;
        }
    }
    *out_len = o;
    return ECL_OK;
}

int ecl_frame_parse(const uint8_t *body, size_t len, uint16_t max_payload, ecl_header *h, const uint8_t **payload)
{
    if (len < ECL_HEADER_SIZE + ECL_CRC_SIZE) {
        return ECL_E_SHORT;
    }
    if (body[0] != ECL_MAGIC) {
        return ECL_E_MAGIC;
    }
    if (ecl_crc32(0, body, len - ECL_CRC_SIZE) != get32(body + len - ECL_CRC_SIZE)) {
        return ECL_E_CRC;
    }
    h->version = body[1];
    h->type = body[2];
    h->flags = body[3];
    h->seq = get32(body + 4);
    h->sample_id = get32(body + 8);
    h->tensor_id = get16(body + 12);
    h->payload_len = get16(body + 14);
    h->offset = get32(body + 16);
    h->total = get32(body + 20);
    *payload = body + ECL_HEADER_SIZE;
    if ((size_t)h->payload_len != len - ECL_HEADER_SIZE - ECL_CRC_SIZE) {
        return ECL_E_LENGTH;
    }
    if (h->version != ECL_PROTOCOL_VERSION) {
        return ECL_E_VERSION;
    }
    if (h->payload_len > max_payload) {
        return ECL_E_OVERSIZE;
    }
    return ECL_OK;
}

/* -- link: sending ------------------------------------------------------------------- */
typedef struct {
    uint8_t type, flags;
    uint32_t sample_id;
    uint16_t tensor_id;
    uint32_t offset, total;
} frame_spec;

static int send_frame(ecl_link *l, const frame_spec *s, const uint8_t *p1, uint16_t n1, const uint8_t *p2, uint16_t n2)
{
    uint8_t head[ECL_HEADER_SIZE];
    int rc;
    ecl_header *h = &l->tx_hdr;
    h->version = ECL_PROTOCOL_VERSION;
    h->type = s->type;
    h->flags = s->flags;
    h->seq = l->seq;
    h->sample_id = s->sample_id;
    h->tensor_id = s->tensor_id;
    h->payload_len = (uint16_t)(n1 + n2);
    h->offset = s->offset;
    h->total = s->total;
    pack_header(head, h);
    enc_begin(&l->tx, l->cfg.write, l->cfg.user);
    enc_bytes(&l->tx, head, ECL_HEADER_SIZE, 1);
    enc_bytes(&l->tx, p1, n1, 1);
    enc_bytes(&l->tx, p2, n2, 1);
    rc = enc_end(&l->tx);
    l->seq++;
    l->stats.frames_sent++;
    return rc;
}

static int send_simple(ecl_link *l, uint8_t type, uint8_t flags, const uint8_t *p, uint16_t n)
{
    frame_spec s;
    s.type = type;
    s.flags = flags;
    s.sample_id = l->stats.samples_sent;
    s.tensor_id = 0;
    s.offset = 0;
    s.total = 0;
    return send_frame(l, &s, p, n, NULL, 0);
}

static uint16_t bounded_strlen(const char *s, uint16_t max)
{
    uint16_t n = 0;
    while (s != NULL && n < max && s[n] != '\0') {
        n++;
    }
    return n;
}

static int send_hello_ack(ecl_link *l, uint8_t flags, uint16_t max_payload)
{
    uint8_t p[29];
    frame_spec s;
    uint16_t fw = bounded_strlen(l->cfg.firmware_id, ECL_MAX_FW_ID);
    put16(p, ECL_PROTOCOL_VERSION);
    put16(p + 2, max_payload);
    put16(p + 4, l->cfg.max_payload);
    put16(p + 6, l->cfg.tensor_count);
    put32(p + 8, l->cfg.boot_id);
    memcpy(p + 12, l->cfg.model_hash, ECL_MODEL_HASH_SIZE);
    p[28] = (uint8_t)fw;
    s.type = ECL_T_HELLO_ACK;
    s.flags = flags;
    s.sample_id = l->stats.samples_sent;
    s.tensor_id = 0;
    s.offset = 0;
    s.total = 0;
    return send_frame(l, &s, p, 29, (const uint8_t *)l->cfg.firmware_id, fw);
}

static int send_tensor_info(ecl_link *l, uint16_t id)
{
    const ecl_tensor_desc *t = &l->cfg.tensors[id];
    uint8_t p[4 + 4 * ECL_MAX_RANK + 1];
    uint16_t name = bounded_strlen(t->name, ECL_MAX_NAME), n = 4;
    uint8_t k;
    frame_spec s;
    p[0] = t->dtype;
    p[1] = t->rank;
    put16(p + 2, 0);
    for (k = 0; k < t->rank; k++) {
        put32(p + n, t->dims[k]);
        n = (uint16_t)(n + 4);
    }
    p[n++] = (uint8_t)name;
    s.type = ECL_T_TENSOR_INFO;
    s.flags = 0;
    s.sample_id = l->stats.samples_sent;
    s.tensor_id = id;
    s.offset = 0;
    s.total = l->nbytes[id];
    return send_frame(l, &s, p, n, (const uint8_t *)t->name, name);
}

static int send_ack(ecl_link *l, uint8_t acked_type, uint32_t sample_id)
{
    uint8_t p[8];
    frame_spec s;
    p[0] = acked_type;
    p[1] = 0;
    put16(p + 2, 0);
    put32(p + 4, l->run_id);
    s.type = ECL_T_ACK;
    s.flags = 0;
    s.sample_id = sample_id;
    s.tensor_id = 0;
    s.offset = 0;
    s.total = 0;
    return send_frame(l, &s, p, 8, NULL, 0);
}

int ecl_send_stats(ecl_link *l, uint8_t flags, uint32_t uptime_ms)
{
    uint8_t p[4 * ECL_STATS_WORDS];
    const ecl_stats *st = &l->stats;
    uint32_t words[ECL_STATS_WORDS];
    unsigned i;
    if (l == NULL) {
        return ECL_E_ARG;
    }
    l->stats.uptime_ms = uptime_ms;
    words[0] = st->frames_sent;
    words[1] = st->samples_sent;
    words[2] = st->samples_dropped_credit;
    words[3] = st->samples_dropped_busy;
    words[4] = st->tensors_sent;
    words[5] = st->rx_frames_ok;
    words[6] = st->rx_frames_bad;
    words[7] = st->log_dropped;
    words[8] = st->uptime_ms;
    words[9] = st->run_samples;
    for (i = 0; i < ECL_STATS_WORDS; i++) {
        put32(p + 4 * i, words[i]);
    }
    return send_simple(l, ECL_T_STATS, flags, p, (uint16_t)sizeof p);
}

static int send_text(ecl_link *l, uint8_t type, const uint8_t *head, uint16_t head_len, const char *text, size_t len)
{
    frame_spec s;
    size_t room = (size_t)l->tx_max_payload - head_len;
    uint16_t n = (uint16_t)(len < room ? len : room);
    s.type = type;
    s.flags = 0;
    s.sample_id = l->stats.samples_sent;
    s.tensor_id = 0;
    s.offset = 0;
    s.total = 0;
    return send_frame(l, &s, head, head_len, (const uint8_t *)text, n);
}

int ecl_log(ecl_link *l, uint8_t level, const char *text, size_t len)
{
    uint8_t head[1];
    size_t need;
    if (l == NULL || (text == NULL && len > 0)) {
        return ECL_E_ARG;
    }
    need = (len < l->tx_max_payload ? len : l->tx_max_payload) + ECL_HEADER_SIZE + ECL_CRC_SIZE + 1;
    need += need / 254u + 2u;
    if (l->cfg.tx_room != NULL && l->cfg.tx_room(l->cfg.user) < need) {
        l->stats.log_dropped++;
        return ECL_E_BUSY;
    }
    head[0] = level;
    return send_text(l, ECL_T_LOG, head, 1, text, len);
}

int ecl_error(ecl_link *l, uint16_t code, const char *text, size_t len)
{
    uint8_t head[2];
    if (l == NULL || (text == NULL && len > 0)) {
        return ECL_E_ARG;
    }
    put16(head, code);
    return send_text(l, ECL_T_ERROR, head, 2, text, len);
}

/* -- link: set-up ---------------------------------------------------------------------- */
static int tensor_bytes(const ecl_tensor_desc *t, uint32_t *out)
{
    uint32_t n = ecl_dtype_size(t->dtype);
    uint8_t k;
    uint16_t name = bounded_strlen(t->name, ECL_MAX_NAME + 1u);
    if (n == 0 || t->rank > ECL_MAX_RANK || name == 0 || name > ECL_MAX_NAME) {
        return ECL_E_ARG;
    }
    for (k = 0; k < t->rank; k++) {
        if (t->dims[k] != 0 && n > 0xFFFFFFFFu / t->dims[k]) {
            return ECL_E_ARG;
        }
        n *= t->dims[k];
    }
    *out = n;
    return ECL_OK;
}

int ecl_init(ecl_link *l, const ecl_config *cfg)
{
    unsigned char *raw = (unsigned char *)l;
    size_t i;
    uint16_t k;
    if (l == NULL || cfg == NULL || cfg->write == NULL || cfg->tensors == NULL || cfg->tensor_count == 0 ||
        cfg->tensor_count > ECL_MAX_TENSORS || cfg->max_payload < ECL_MIN_PAYLOAD ||
        cfg->max_payload > ECL_PAYLOAD_LIMIT || cfg->rx_buf == NULL ||
        cfg->rx_buf_size < ECL_RX_BUF_SIZE(cfg->max_payload)) {
        return ECL_E_ARG;
    }
    for (i = 0; i < sizeof *l; i++) {
        raw[i] = 0;
    }
    for (k = 0; k < cfg->tensor_count; k++) {
        if (tensor_bytes(&cfg->tensors[k], &l->nbytes[k]) != ECL_OK) {
            return ECL_E_ARG;
        }
    }
    l->cfg = *cfg;
    l->tx_max_payload = ECL_MIN_PAYLOAD; /* every host accepts this much before the handshake */
    l->table_error = ECL_TABLE_OUT_OF_ORDER;
    return ECL_OK;
}

int ecl_boot(ecl_link *l)
{
    const uint8_t zero = 0;
    if (l == NULL) {
        return ECL_E_ARG;
    }
    if (l->cfg.write(l->cfg.user, &zero, 1) < 0) {
        return ECL_E_WRITE;
    }
    return send_hello_ack(l, ECL_F_BOOT, l->cfg.max_payload);
}

int ecl_streaming(const ecl_link *l)
{
    return l != NULL && l->streaming;
}

int ecl_selected(const ecl_link *l, uint16_t id)
{
    return id < l->cfg.tensor_count && ((l->mask[id >> 3] >> (id & 7u)) & 1u);
}

/* -- link: samples --------------------------------------------------------------------- */
static uint32_t add_sat(uint32_t a, uint32_t b)
{
    return a > 0xFFFFFFFFu - b ? 0xFFFFFFFFu : a + b;
}

uint32_t ecl_sample_wire_bound(const ecl_link *l)
{
    uint32_t total = 33u; /* SAMPLE_END: 30-byte body, 1 COBS code, 1 delimiter, 1 spare */
    uint16_t k;
    for (k = 0; k < l->cfg.tensor_count; k++) {
        uint32_t n = l->nbytes[k], chunks, body;
        if (!ecl_selected(l, k)) {
            continue;
        }
        chunks = n / l->tx_max_payload + (n % l->tx_max_payload != 0 || n == 0);
        body = add_sat(n, chunks * (ECL_HEADER_SIZE + ECL_CRC_SIZE));
        total = add_sat(total, add_sat(body, body / 254u + 2u * chunks));
    }
    return total;
}

int ecl_sample_begin(ecl_link *l)
{
    if (l == NULL) {
        return ECL_E_ARG;
    }
    if (!l->streaming) {
        return ECL_E_STOPPED;
    }
    if (l->in_sample) {
        return ECL_E_STATE;
    }
    if (l->stats.run_samples >= l->grant) {
        l->stats.samples_dropped_credit++;
        return ECL_E_NO_CREDIT;
    }
    if (l->cfg.tx_room != NULL && l->cfg.tx_room(l->cfg.user) < ecl_sample_wire_bound(l)) {
        l->stats.samples_dropped_busy++;
        return ECL_E_BUSY;
    }
    l->in_sample = 1;
    l->sample_id = l->stats.samples_sent++;
    l->stats.run_samples++;
    l->tensors_in_sample = 0;
    return ECL_OK;
}

int ecl_send_tensor(ecl_link *l, uint16_t tensor_id, const void *data)
{
    const uint8_t *bytes = (const uint8_t *)data;
    uint32_t n, off = 0;
    frame_spec s;
    if (l == NULL || tensor_id >= l->cfg.tensor_count || (data == NULL && l->nbytes[tensor_id] > 0)) {
        return ECL_E_ARG;
    }
    if (!l->in_sample) {
        return ECL_E_STATE;
    }
    if (!l->streaming) {
        return ECL_E_STOPPED;
    }
    if (!ecl_selected(l, tensor_id)) {
        return ECL_OK;
    }
    n = l->nbytes[tensor_id];
    s.type = ECL_T_TENSOR_CHUNK;
    s.sample_id = l->sample_id;
    s.tensor_id = tensor_id;
    s.total = n;
    do {
        uint32_t chunk = n - off < l->tx_max_payload ? n - off : l->tx_max_payload;
        s.flags = off + chunk == n ? ECL_F_LAST : 0;
        s.offset = off;
        if (send_frame(l, &s, bytes + off, (uint16_t)chunk, NULL, 0) != ECL_OK) {
            return ECL_E_WRITE;
        }
        if (off == 0) {
            l->stats.tensors_sent++;
            l->tensors_in_sample++;
        }
        off += chunk;
    } while (off < n);
    return ECL_OK;
}

int ecl_sample_end(ecl_link *l)
{
    uint8_t p[2];
    frame_spec s;
    if (l == NULL) {
        return ECL_E_ARG;
    }
    if (!l->in_sample) {
        return ECL_E_STATE;
    }
    l->in_sample = 0;
    if (!l->streaming) {
        return ECL_E_STOPPED;
    }
    put16(p, l->tensors_in_sample);
    s.type = ECL_T_SAMPLE_END;
    s.flags = 0;
    s.sample_id = l->sample_id;
    s.tensor_id = 0;
    s.offset = 0;
    s.total = 0;
    return send_frame(l, &s, p, 2, NULL, 0);
}

/* -- link: receiving ------------------------------------------------------------------ */
static int on_hello(ecl_link *l, const ecl_header *h, const uint8_t *p)
{
    uint16_t host_max;
    if (h->payload_len < 4) {
        return -1;
    }
    host_max = get16(p + 2);
    l->tx_max_payload = host_max < l->cfg.max_payload ? host_max : l->cfg.max_payload;
    if (l->tx_max_payload < ECL_MIN_PAYLOAD) {
        l->tx_max_payload = ECL_MIN_PAYLOAD;
    }
    l->streaming = 0; /* a new host session starts from scratch */
    return send_hello_ack(l, 0, l->tx_max_payload);
}

static int on_start(ecl_link *l, const ecl_header *h, const uint8_t *p)
{
    uint16_t mask_len, k;
    uint32_t run_id;
    if (h->payload_len < 10 || (mask_len = get16(p + 8)) > ECL_MAX_TENSORS / 8 || h->payload_len < 10u + mask_len) {
        return -1;
    }
    run_id = get32(p);
    if (!(l->streaming && run_id == l->run_id)) { /* a repeated START only gets its ACK again */
        l->run_id = run_id;
        l->grant = get32(p + 4);
        for (k = 0; k < ECL_MAX_TENSORS / 8; k++) {
            l->mask[k] = (uint8_t)(mask_len == 0 ? 0xFFu : (k < mask_len ? p[10 + k] : 0u));
        }
        for (k = l->cfg.tensor_count; k < ECL_MAX_TENSORS; k++) {
            l->mask[k >> 3] = (uint8_t)(l->mask[k >> 3] & ~(1u << (k & 7u)));
        }
        l->stats.run_samples = 0;
        l->run_first = l->stats.samples_sent;
        l->streaming = 1;
    }
    return send_ack(l, ECL_T_START, l->run_first); /* a repeated ACK names the same first sample */
}

static int on_stop(ecl_link *l)
{
    int rc;
    l->streaming = 0;
    rc = send_ack(l, ECL_T_STOP, l->stats.samples_sent); /* one past the last sample, also when idle */
    return rc != ECL_OK ? rc : ecl_send_stats(l, 0, l->stats.uptime_ms);
}

static int on_credit(ecl_link *l, const ecl_header *h, const uint8_t *p)
{
    uint32_t grant;
    if (h->payload_len < 8) {
        return -1;
    }
    grant = get32(p + 4);
    if (l->streaming && get32(p) == l->run_id && (int32_t)(grant - l->grant) > 0) {
        l->grant = grant;
    }
    return ECL_OK;
}

static uint8_t check_table(ecl_link *l)
{
    const uint8_t *t = l->cfg.table_buf;
    size_t n = l->table_len;
    if (n < 20 || t[0] != 'E' || t[1] != 'C' || t[2] != 'A' || t[3] != 'L' || get16(t + 4) != 1) {
        return ECL_TABLE_BAD_FORMAT;
    }
    if (ecl_crc32(0, t, n - 4) != get32(t + n - 4)) {
        return ECL_TABLE_BAD_CRC;
    }
    if (l->cfg.on_table != NULL && l->cfg.on_table(l->cfg.user, t, n) != 0) {
        return ECL_TABLE_REJECTED;
    }
    return ECL_TABLE_ACCEPTED;
}

static int on_table_chunk(ecl_link *l, const ecl_header *h, const uint8_t *p)
{
    uint8_t status, ack[12];
    if (h->offset == 0) {
        l->table_len = 0;
        l->table_total = h->total;
        l->table_error = ECL_TABLE_ACCEPTED;
    }
    if (l->table_error == ECL_TABLE_ACCEPTED) {
        if (l->cfg.table_buf == NULL) {
            l->table_error = ECL_TABLE_NO_BUFFER;
        } else if (h->total > l->cfg.table_buf_size) {
            l->table_error = ECL_TABLE_TOO_LARGE;
        } else if (h->total != l->table_total || h->offset != l->table_len || h->payload_len > h->total - h->offset) {
            l->table_error = ECL_TABLE_OUT_OF_ORDER;
        } else {
            memcpy(l->cfg.table_buf + l->table_len, p, h->payload_len);
            l->table_len += h->payload_len;
        }
    }
    if (!(h->flags & ECL_F_LAST)) {
        return ECL_OK;
    }
    status = l->table_error;
    if (status == ECL_TABLE_ACCEPTED) {
        status = l->table_len == l->table_total ? check_table(l) : (uint8_t)ECL_TABLE_OUT_OF_ORDER;
    }
    put16(ack, status);
    put16(ack + 2, 0);
    put32(ack + 4, (uint32_t)l->table_len);
    put32(ack + 8, l->table_len >= 4 && status != ECL_TABLE_OUT_OF_ORDER ? get32(l->cfg.table_buf + l->table_len - 4) : 0u);
    l->table_error = ECL_TABLE_OUT_OF_ORDER; /* the next push starts at offset 0 */
    return send_simple(l, ECL_T_TABLE_ACK, 0, ack, 12);
}

static int dispatch(ecl_link *l, const ecl_header *h, const uint8_t *p)
{
    switch (h->type) {
    case ECL_T_HELLO:
        return on_hello(l, h, p);
    case ECL_T_LIST_REQ: {
        uint16_t k;
        int rc = ECL_OK;
        for (k = 0; k < l->cfg.tensor_count && rc == ECL_OK; k++) {
            rc = send_tensor_info(l, k);
        }
        return rc;
    }
    case ECL_T_START:
        return on_start(l, h, p);
    case ECL_T_STOP:
        return on_stop(l);
    case ECL_T_CREDIT:
        return on_credit(l, h, p);
    case ECL_T_PING:
        return send_simple(l, ECL_T_PONG, 0, p,
                           (uint16_t)(h->payload_len < l->tx_max_payload ? h->payload_len : l->tx_max_payload));
    case ECL_T_TABLE_CHUNK:
        return on_table_chunk(l, h, p);
    default:
        return ECL_OK; /* unknown types are ignored: later revisions may add optional frames */
    }
}

static int rx_frame(ecl_link *l)
{
    ecl_header h;
    const uint8_t *p;
    int rc = ecl_frame_parse(l->cfg.rx_buf, l->rx_len, l->cfg.max_payload, &h, &p);
    if (rc == ECL_E_VERSION && h.type == ECL_T_HELLO) {
        l->stats.rx_frames_bad++; /* answer in our own version, so the host can name both */
        return send_hello_ack(l, 0, l->tx_max_payload);
    }
    if (rc != ECL_OK) {
        l->stats.rx_frames_bad++;
        return ECL_OK;
    }
    rc = dispatch(l, &h, p);
    if (rc == -1) {
        l->stats.rx_frames_bad++;
        return ecl_error(l, ECL_ERR_BAD_REQUEST, "malformed request", 17);
    }
    l->stats.rx_frames_ok++;
    return rc;
}

static void rx_push(ecl_link *l, uint8_t b)
{
    if (l->rx_len >= l->cfg.rx_buf_size) {
        l->rx_overflow = 1;
        return;
    }
    l->cfg.rx_buf[l->rx_len++] = b;
}

int ecl_rx_feed(ecl_link *l, const uint8_t *data, size_t len)
{
    size_t i;
    int rc = ECL_OK;
    if (l == NULL || (data == NULL && len > 0)) {
        return ECL_E_ARG;
    }
    for (i = 0; i < len; i++) {
        uint8_t b = data[i];
        if (b == 0) { /* end of a block: a frame, or noise to count and forget */
            if (l->rx_started) {
                if (l->rx_overflow || l->rx_left != 0) {
                    l->stats.rx_frames_bad++;
                } else if (rx_frame(l) != ECL_OK) {
                    rc = ECL_E_WRITE;
                }
            }
            l->rx_len = 0;
            l->rx_left = 0;
            l->rx_zero_pending = 0;
            l->rx_overflow = 0;
            l->rx_started = 0;
            continue;
        }
        l->rx_started = 1;
        if (l->rx_left == 0) { /* a code byte */
            if (l->rx_zero_pending) {
                rx_push(l, 0);
            }
            l->rx_code = b;
            l->rx_left = (uint16_t)(b - 1u);
            l->rx_zero_pending = (uint8_t)(b == 1u);
        } else {
            rx_push(l, b);
            if (--l->rx_left == 0) {
                l->rx_zero_pending = (uint8_t)(l->rx_code != 0xFFu);
            }
        }
    }
    return rc;
}

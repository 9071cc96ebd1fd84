/* ecal_link.h: the device end of the edgecal serial link (protocol in ../PROTOCOL.md).
 *
 * C99, no heap, nothing from libc beyond memcpy and the fixed-width types. Every
 * byte leaves through the user's write callback; every byte from the host enters
 * through ecl_rx_feed(). One ecl_link value holds all state: allocate it
 * statically, give it the buffers it needs in ecl_config, and call it from one
 * thread of control (an interrupt handler should queue received bytes and let the
 * main loop feed them).
 *
 * A typical firmware main loop:
 *
 *     ecl_init(&link, &cfg);
 *     ecl_boot(&link);                                   // announces the device
 *     for (;;) {
 *         n = uart_read_nonblocking(buf, sizeof buf);
 *         ecl_rx_feed(&link, buf, n);                    // handshake, credits, table push
 *         run_inference();
 *         if (ecl_sample_begin(&link) == ECL_OK) {       // credit and room for a whole sample?
 *             ecl_send_tensor(&link, 0, input_buffer);   // zero-copy, chunked
 *             ecl_send_tensor(&link, 1, conv1_output);
 *             ecl_sample_end(&link);
 *         }                                              // else: dropped whole and counted
 *     }
 */
#ifndef ECAL_LINK_H
#define ECAL_LINK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef ECL_PROTOCOL_VERSION
#define ECL_PROTOCOL_VERSION 1u /* overridable only to build test devices that speak another version */
#endif

#define ECL_MAGIC 0xECu
#define ECL_HEADER_SIZE 24u
#define ECL_CRC_SIZE 4u
#define ECL_MIN_PAYLOAD 128u    /* every control frame fits */
#define ECL_PAYLOAD_LIMIT 16384u /* largest max_payload either end may announce */
#define ECL_MAX_RANK 8u
#define ECL_MAX_TENSORS 256u
#define ECL_MAX_NAME 64u
#define ECL_MAX_FW_ID 64u
#define ECL_MODEL_HASH_SIZE 16u
#define ECL_STATS_WORDS 10u
/* Receive buffer size for frames of up to max_payload payload bytes. */
#define ECL_RX_BUF_SIZE(max_payload) ((size_t)(max_payload) + ECL_HEADER_SIZE + ECL_CRC_SIZE)

/* Frame types (header byte 2). */
enum {
    ECL_T_HELLO = 0x01,
    ECL_T_HELLO_ACK = 0x02,
    ECL_T_LIST_REQ = 0x03,
    ECL_T_TENSOR_INFO = 0x04,
    ECL_T_START = 0x05,
    ECL_T_STOP = 0x06,
    ECL_T_CREDIT = 0x07,
    ECL_T_PING = 0x08,
    ECL_T_PONG = 0x09,
    ECL_T_ACK = 0x0A,
    ECL_T_TENSOR_CHUNK = 0x10,
    ECL_T_SAMPLE_END = 0x11,
    ECL_T_STATS = 0x20,
    ECL_T_LOG = 0x30,
    ECL_T_TABLE_CHUNK = 0x40,
    ECL_T_TABLE_ACK = 0x41,
    ECL_T_ERROR = 0x7F
};

/* Header flags (header byte 3). */
enum { ECL_F_LAST = 0x01, ECL_F_FINAL = 0x02, ECL_F_BOOT = 0x04 };

/* Element types: ONNX TensorProto.DataType codes. */
enum {
    ECL_DT_FLOAT = 1,
    ECL_DT_UINT8 = 2,
    ECL_DT_INT8 = 3,
    ECL_DT_UINT16 = 4,
    ECL_DT_INT16 = 5,
    ECL_DT_INT32 = 6,
    ECL_DT_INT64 = 7,
    ECL_DT_FLOAT16 = 10,
    ECL_DT_DOUBLE = 11,
    ECL_DT_UINT32 = 12,
    ECL_DT_UINT64 = 13
};

/* TABLE_ACK status codes. */
enum {
    ECL_TABLE_ACCEPTED = 0,
    ECL_TABLE_TOO_LARGE = 1,
    ECL_TABLE_OUT_OF_ORDER = 2,
    ECL_TABLE_BAD_FORMAT = 3,
    ECL_TABLE_BAD_CRC = 4,
    ECL_TABLE_REJECTED = 5,
    ECL_TABLE_NO_BUFFER = 6
};

/* ERROR frame codes. */
enum { ECL_ERR_VERSION = 1, ECL_ERR_BAD_REQUEST = 2 };

/* LOG levels. */
enum { ECL_LOG_DEBUG = 0, ECL_LOG_INFO = 1, ECL_LOG_WARNING = 2, ECL_LOG_ERROR = 3 };

/* Return codes: ECL_OK, or one of these negative values. */
enum {
    ECL_OK = 0,
    ECL_E_ARG = -1,       /* bad argument or configuration */
    ECL_E_WRITE = -2,     /* the write callback failed; the frame is incomplete on the wire */
    ECL_E_NO_CREDIT = -3, /* sample dropped: the host granted no credit for it (counted) */
    ECL_E_BUSY = -4,      /* sample dropped: the transport has no room for all of it (counted) */
    ECL_E_STOPPED = -5,   /* the host has not started streaming (or stopped it) */
    ECL_E_STATE = -6,     /* call out of order (e.g. ecl_send_tensor outside a sample) */
    ECL_E_SHORT = -10,    /* frame decoding: fewer bytes than a header and CRC */
    ECL_E_COBS = -11,     /* frame decoding: COBS block overruns the frame */
    ECL_E_CRC = -12,      /* frame decoding: CRC-32 mismatch */
    ECL_E_MAGIC = -13,    /* frame decoding: first byte is not ECL_MAGIC */
    ECL_E_LENGTH = -14,   /* frame decoding: payload length disagrees with the frame size */
    ECL_E_OVERSIZE = -15, /* frame decoding: larger than the buffer or the negotiated maximum */
    ECL_E_VERSION = -16   /* frame decoding: another protocol version (CRC was good) */
};

/* The fixed 24-byte header, decoded. */
typedef struct {
    uint8_t version;
    uint8_t type;
    uint8_t flags;
    uint32_t seq;
    uint32_t sample_id;
    uint16_t tensor_id;
    uint16_t payload_len;
    uint32_t offset;
    uint32_t total;
} ecl_header;

/* Writes len bytes to the link; returns 0 on success, < 0 on failure. */
typedef int (*ecl_write_fn)(void *user, const uint8_t *data, size_t len);
/* Bytes the transport accepts right now without blocking (NULL: unlimited). */
typedef size_t (*ecl_tx_room_fn)(void *user);
/* A pushed table passed its checks (magic, version, CRC-32); return 0 to accept it. */
typedef int (*ecl_table_fn)(void *user, const uint8_t *table, size_t len);

typedef struct {
    const char *name; /* UTF-8, 1..ECL_MAX_NAME bytes, NUL-terminated */
    uint8_t dtype;    /* ECL_DT_* */
    uint8_t rank;     /* 0..ECL_MAX_RANK */
    uint32_t dims[ECL_MAX_RANK];
} ecl_tensor_desc;

typedef struct {
    ecl_write_fn write;     /* required */
    ecl_tx_room_fn tx_room; /* optional: enables whole-sample drops when the transport is full */
    ecl_table_fn on_table;  /* optional: receives pushed tables */
    void *user;             /* passed to the callbacks */
    const ecl_tensor_desc *tensors;
    uint16_t tensor_count; /* 1..ECL_MAX_TENSORS */
    const char *firmware_id; /* NUL-terminated, at most ECL_MAX_FW_ID bytes are sent */
    uint8_t model_hash[ECL_MODEL_HASH_SIZE];
    uint16_t max_payload; /* ECL_MIN_PAYLOAD..ECL_PAYLOAD_LIMIT, for both directions */
    uint8_t *rx_buf;      /* ECL_RX_BUF_SIZE(max_payload) bytes */
    size_t rx_buf_size;
    uint8_t *table_buf; /* NULL: table pushes are refused with ECL_TABLE_NO_BUFFER */
    size_t table_buf_size;
    uint32_t boot_id; /* changes at every boot (a counter in flash, a timer, a random number) */
} ecl_config;

/* Device counters, as sent in STATS frames (all since boot, wrapping at 2^32). */
typedef struct {
    uint32_t frames_sent;            /* frames written before the current one */
    uint32_t samples_sent;           /* samples begun (each got a sample id) */
    uint32_t samples_dropped_credit; /* inferences not sent: no credit */
    uint32_t samples_dropped_busy;   /* inferences not sent: transport full */
    uint32_t tensors_sent;
    uint32_t rx_frames_ok;
    uint32_t rx_frames_bad;
    uint32_t log_dropped;
    uint32_t uptime_ms; /* set by the caller of ecl_send_stats */
    uint32_t run_samples; /* samples begun since the last START */
} ecl_stats;

/* Streaming COBS encoder with an incremental CRC-32 (one 254-byte block of lookahead). */
typedef struct {
    uint8_t buf[255]; /* buf[0] is the code byte of the block in progress */
    uint16_t n;       /* data bytes in buf[1..] */
    uint8_t after_full;
    uint32_t crc;
    int err;
    ecl_write_fn write;
    void *user;
} ecl_encoder;

/* Internal state; read-only for users (tx_hdr may be inspected inside the write callback). */
typedef struct {
    ecl_config cfg;
    ecl_encoder tx;
    ecl_header tx_hdr; /* header of the frame being written */
    uint32_t seq;
    uint16_t tx_max_payload; /* negotiated */
    /* receive: incremental COBS decoder into cfg.rx_buf */
    size_t rx_len;
    uint16_t rx_left;
    uint8_t rx_code;
    uint8_t rx_zero_pending;
    uint8_t rx_overflow;
    uint8_t rx_started;
    /* streaming */
    uint8_t streaming;
    uint8_t in_sample;
    uint16_t tensors_in_sample;
    uint32_t run_id;
    uint32_t run_first; /* sample id of the run's first sample: a repeated START's ACK repeats it */
    uint32_t grant;
    uint32_t sample_id;
    uint8_t mask[ECL_MAX_TENSORS / 8];
    uint32_t nbytes[ECL_MAX_TENSORS];
    /* table push */
    size_t table_len;
    uint32_t table_total;
    uint8_t table_error;
    ecl_stats stats;
} ecl_link;

/* CRC-32 (zlib / ISO-HDLC): ecl_crc32(0, "123456789", 9) == 0xCBF43926. Pass the previous
 * result as crc to continue a running CRC. */
uint32_t ecl_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* Bytes per element of an ECL_DT_* code, 0 if unknown. */
uint32_t ecl_dtype_size(uint8_t dtype);

/* COBS-decodes one block (no 0x00 inside, delimiter removed) into dst; ECL_E_COBS or
 * ECL_E_OVERSIZE on failure. */
int ecl_cobs_decode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len);

/* Checks a decoded frame body (header, payload, CRC) and unpacks its header. */
int ecl_frame_parse(const uint8_t *body, size_t len, uint16_t max_payload, ecl_header *h, const uint8_t **payload);

/* Encodes one complete frame (COBS, CRC, trailing 0x00) through write; h->payload_len is
 * taken from len. Used by hosts and tests; the link uses the same encoder. */
int ecl_frame_write(const ecl_header *h, const uint8_t *payload, uint16_t len, ecl_write_fn write, void *user);

int ecl_init(ecl_link *l, const ecl_config *cfg);
/* Sends a lone 0x00 (flushes the host's receiver) and an unsolicited HELLO_ACK with ECL_F_BOOT. */
int ecl_boot(ecl_link *l);
/* Feeds bytes received from the host; answers handshake, list, start/stop, credit, ping and
 * table push frames. Returns ECL_OK or ECL_E_WRITE if an answer could not be written. */
int ecl_rx_feed(ecl_link *l, const uint8_t *data, size_t len);
int ecl_streaming(const ecl_link *l);
/* Whether tensor id is selected by the host's START mask. */
int ecl_selected(const ecl_link *l, uint16_t tensor_id);
/* Upper bound of the bytes one whole sample puts on the wire. */
uint32_t ecl_sample_wire_bound(const ecl_link *l);
/* Begins a sample if the host granted credit and the transport has room for all of it;
 * otherwise counts a dropped sample and returns ECL_E_NO_CREDIT / ECL_E_BUSY. Never blocks. */
int ecl_sample_begin(ecl_link *l);
/* Sends tensor tensor_id of the current sample straight from data (the size is the one in
 * its ecl_tensor_desc), in chunks of the negotiated payload. Unselected tensors are skipped. */
int ecl_send_tensor(ecl_link *l, uint16_t tensor_id, const void *data);
int ecl_sample_end(ecl_link *l);
/* Sends a STATS frame; flags may hold ECL_F_FINAL (the device has no more samples). */
int ecl_send_stats(ecl_link *l, uint8_t flags, uint32_t uptime_ms);
/* Sends text (need not be NUL-terminated) as a LOG frame, truncated to the payload limit.
 * When the transport has no room for it the line is dropped and counted (never blocks). */
int ecl_log(ecl_link *l, uint8_t level, const char *text, size_t len);
/* Sends an ERROR frame. */
int ecl_error(ecl_link *l, uint16_t code, const char *text, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* ECAL_LINK_H */

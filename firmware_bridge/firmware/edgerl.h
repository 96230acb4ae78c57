/* edgerl: the device side of the edge-rl wire protocol 1.0 (C99, no allocation, no platform calls).
 *
 * The Python package firmware_bridge.protocol is the specification; this file mirrors it:
 *   frame   = COBS(header | payload | CRC-32 LE) followed by one 0x00 delimiter
 *   header  = major u8, type u8, flags u8, seq u16 LE, payload length u16 LE (7 bytes)
 *   CRC-32  = IEEE, exactly zlib.crc32 over header and payload
 * Time always comes in as an argument (uint32 milliseconds, wrapping); bytes leave through a
 * caller-supplied buffer or write callback. See README.md for porting notes and memory use.
 */
#ifndef EDGERL_H
#define EDGERL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- protocol constants (must equal firmware_bridge.protocol; the tests check) ---------------- */

#define EDGERL_MAJOR 1u
#define EDGERL_MINOR 0u
/* zlib.crc32 of codes.SCHEMA_TEXT: any change to a payload layout changes it. */
#define EDGERL_SCHEMA_HASH 0xf5542274UL

#define EDGERL_HEADER_SIZE 7u
#define EDGERL_CRC_SIZE 4u
#define EDGERL_MAX_PAYLOAD 1012u
#define EDGERL_MAX_FRAME (EDGERL_HEADER_SIZE + EDGERL_MAX_PAYLOAD + EDGERL_CRC_SIZE) /* 1023 */
#define EDGERL_MAX_ENCODED 1028u /* COBS of a maximal frame, delimiter excluded */

/* Bytes on the wire for a payload of n bytes, delimiter included (an upper bound). */
#define EDGERL_WIRE_SIZE(n) \
    (EDGERL_HEADER_SIZE + (n) + EDGERL_CRC_SIZE + (EDGERL_HEADER_SIZE + (n) + EDGERL_CRC_SIZE) / 254u + 2u)
/* Payload sizes of an OBS with n float32 values / n int16 codes. */
#define EDGERL_OBS_F32_PAYLOAD(n) (8u + 4u * (n))
#define EDGERL_OBS_I16_PAYLOAD(n) (12u + 2u * (n))
/* The longest HELLO (8 dims, 32-byte id) or ERROR (64-byte text) a device sends. */
#define EDGERL_MAX_CONTROL_PAYLOAD 67u
/* tx_buf size for a device whose largest OBS payload is obs_payload bytes. */
#define EDGERL_DEVICE_TX_SIZE(obs_payload)                                                              \
    ((obs_payload) > EDGERL_MAX_CONTROL_PAYLOAD ? EDGERL_WIRE_SIZE(obs_payload)                         \
                                                : EDGERL_WIRE_SIZE(EDGERL_MAX_CONTROL_PAYLOAD))

#define EDGERL_MAX_DEVICE_ID 32u
#define EDGERL_MAX_ERROR_TEXT 64u
#define EDGERL_MAX_CONFIG_KEY 32u
#define EDGERL_MAX_OBS_DIMS 8u
/* "1.0 (schema f5542274)" at its longest ("255.255 (schema ffffffff)"), NUL included */
#define EDGERL_VERSION_TEXT_SIZE 26u
/* "host <version> vs device <version>", NUL included */
#define EDGERL_MISMATCH_TEXT_SIZE (2u * EDGERL_VERSION_TEXT_SIZE + 16u)

/* Message types (header byte 2). */
enum {
    EDGERL_HELLO = 0x01,
    EDGERL_OBS = 0x02,
    EDGERL_ACTION = 0x03,
    EDGERL_HEARTBEAT = 0x04,
    EDGERL_RESET = 0x05,
    EDGERL_ERROR = 0x06,
    EDGERL_CONFIG = 0x07,
    /* Not a wire type: the parser's name for a HELLO of another major version, of which only the
     * frozen prefix (major, minor, schema hash) is understood. */
    EDGERL_FOREIGN_HELLO = 0x81
};

/* Header flags: bits 0-3 per message type, bits 4-7 for every type. */
enum {
    EDGERL_FLAG_HELLO_REPLY_REQUESTED = 0x01,
    EDGERL_FLAG_OBS_TERMINATED = 0x01,
    EDGERL_FLAG_OBS_TRUNCATED = 0x02,
    EDGERL_FLAG_OBS_INT16 = 0x04,
    EDGERL_FLAG_ACTION_FALLBACK = 0x01,
    EDGERL_FLAG_UNSEQUENCED = 0x80
};

/* HEARTBEAT states. */
enum { EDGERL_STATE_STARTING = 0, EDGERL_STATE_READY = 1, EDGERL_STATE_SAFE = 2, EDGERL_STATE_OFFLINE = 3 };

/* HELLO capability bits and observation element types. POLICY: the device carries its own policy and
 * can act from it; SELF_TEST_PASSED: that policy reproduced its golden actions at start. */
enum {
    EDGERL_CAP_INT16_OBS = 0x01,
    EDGERL_CAP_RESET = 0x02,
    EDGERL_CAP_CONFIG = 0x04,
    EDGERL_CAP_DEADMAN = 0x08,
    EDGERL_CAP_POLICY = 0x10,
    EDGERL_CAP_SELF_TEST_PASSED = 0x20
};
enum { EDGERL_DTYPE_FLOAT32 = 0, EDGERL_DTYPE_INT16 = 1 };

/* ERROR codes (the library itself sends the first two). */
enum {
    EDGERL_ERR_INCOMPATIBLE = 1,
    EDGERL_ERR_BAD_ACTION = 2,
    EDGERL_ERR_UNKNOWN_CONFIG = 3,
    EDGERL_ERR_BAD_CONFIG_VALUE = 4,
    EDGERL_ERR_SELF_TEST_FAILED = 5
};

/* ---- messages ------------------------------------------------------------------------------------
 * Text fields are (pointer, length), not NUL-terminated. In a decoded message every pointer refers
 * into the parser's buffer and stays valid only until the next byte is fed to that parser. */

typedef struct {
    uint8_t major, minor;
    uint32_t schema_hash;
    uint32_t capabilities;
    uint16_t n_actions, safe_action, heartbeat_ms;
    uint8_t obs_dtype;
    uint8_t ndim;
    uint16_t obs_shape[EDGERL_MAX_OBS_DIMS];
    const char *device_id;
    uint8_t device_id_len;
    bool reply_requested;
} edgerl_hello_t;

typedef struct {
    uint32_t t_us; /* the device's monotonic clock in microseconds, wrapping */
    float reward;
    float int16_scale; /* > 0: the values travel as int16 codes of this scale */
    bool terminated, truncated;
    uint16_t count;
    const float *values; /* encode: `count` values */
    const uint8_t *raw;  /* decode: `count` little-endian codes; read them with edgerl_obs_value() */
} edgerl_obs_t;

typedef struct {
    uint16_t action;
    uint16_t answers;  /* seq of the OBS this setpoint answers */
    uint16_t valid_ms; /* validity after receipt */
    bool fallback;     /* the host's fallback, not its policy, chose it */
} edgerl_action_t;

typedef struct {
    uint32_t t_us;
    uint8_t state; /* EDGERL_STATE_* */
    bool unsequenced;
} edgerl_heartbeat_t;

typedef struct {
    bool has_seed;
    uint32_t seed;
} edgerl_reset_t;

typedef struct {
    uint16_t code;
    const char *text; /* encode: truncated to EDGERL_MAX_ERROR_TEXT bytes on a UTF-8 boundary */
    uint8_t text_len;
} edgerl_error_t;

typedef struct {
    float value;
    const char *key; /* 1..EDGERL_MAX_CONFIG_KEY bytes */
    uint8_t key_len;
} edgerl_config_t;

typedef struct {
    uint8_t type;  /* EDGERL_HELLO..EDGERL_CONFIG, or EDGERL_FOREIGN_HELLO (decode only) */
    uint8_t flags; /* decode: header flags as received; encode: ignored, derived from the fields */
    uint16_t seq;
    union {
        edgerl_hello_t hello; /* also EDGERL_FOREIGN_HELLO: only major, minor, schema_hash are set */
        edgerl_obs_t obs;
        edgerl_action_t action;
        edgerl_heartbeat_t heartbeat;
        edgerl_reset_t reset;
        edgerl_error_t error;
        edgerl_config_t config;
    } u;
} edgerl_msg_t;

/* ---- codec -------------------------------------------------------------------------------------- */

/* zlib.crc32: pass 0 to start, or a previous result to continue over more bytes. */
uint32_t edgerl_crc32(uint32_t crc, const uint8_t *data, size_t len);

/* COBS without the delimiter. Encode returns the encoded length (>= 1), or 0 if it does not fit
 * `cap`. Decode may work in place (out == in), writes at most `len` bytes and returns false on an
 * invalid encoding (a zero byte, a code running past the end). */
size_t edgerl_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap);
bool edgerl_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t *out_len);

/* One complete frame for `msg` with header major `major` (normally EDGERL_MAJOR), delimiter
 * included. Returns its length, or 0 if the message is invalid (a field out of its range, a
 * payload over EDGERL_MAX_PAYLOAD, a non-finite int16 observation) or the frame does not fit `cap`.
 * EDGERL_WIRE_SIZE(payload) bytes always suffice. */
size_t edgerl_encode(uint8_t *out, size_t cap, uint8_t major, const edgerl_msg_t *msg);

/* Value i of a decoded observation (an int16 code times its scale, as float32). */
float edgerl_obs_value(const edgerl_obs_t *obs, uint16_t i);

/* A HELLO (or foreign HELLO) from a peer this side may act with: same major, same schema hash. */
bool edgerl_hello_compatible(const edgerl_msg_t *msg, uint8_t major, uint32_t schema_hash);

/* "1.0 (schema f5542274)", NUL-terminated; returns its length, or 0 if `cap` is too small. */
size_t edgerl_format_version(char *out, size_t cap, uint8_t major, uint8_t minor, uint32_t schema_hash);

/* ---- streaming parser ----------------------------------------------------------------------------
 * Bytes in, messages out; everything dropped is counted under one reason, with the semantics of
 * the Python FrameDecoder and SequenceTracker. Never holds more than EDGERL_MAX_ENCODED bytes. */

typedef struct {
    uint32_t frames; /* messages delivered */
    uint32_t crc_errors;
    uint32_t malformed;       /* bad COBS, too short, wrong length field, payload not matching its layout */
    uint32_t oversize;        /* runs longer than EDGERL_MAX_ENCODED: dropped up to the next delimiter */
    uint32_t unknown_type;
    uint32_t foreign_version; /* frames of another major version other than its HELLO */
    uint32_t seq_gaps;        /* sequence numbers skipped between delivered frames */
    uint32_t duplicates;
    uint32_t reorders;        /* frames older than one already delivered: dropped (latest wins) */
} edgerl_counters_t;

typedef struct {
    uint8_t buf[EDGERL_MAX_ENCODED];
    uint16_t len;
    bool discarding; /* inside an oversize run */
    uint8_t major;   /* the version this side speaks; other majors are foreign */
    bool seq_known;
    uint16_t last_seq;
    edgerl_counters_t counters;
} edgerl_parser_t;

typedef void (*edgerl_message_fn)(void *ctx, const edgerl_msg_t *msg);

void edgerl_parser_init(edgerl_parser_t *p, uint8_t major);
/* Feed one byte; true when it completed a message, then stored in *msg. */
bool edgerl_parser_push(edgerl_parser_t *p, uint8_t byte, edgerl_msg_t *msg);
/* Feed a chunk; calls on_message for each message it completes; returns how many. */
size_t edgerl_parser_feed(edgerl_parser_t *p, const uint8_t *data, size_t len, edgerl_message_fn on_message,
                          void *ctx);

/* ---- device session: handshake and deadman --------------------------------------------------------
 * Policy actions are applied only while *armed*: after a compatible HELLO from the host (same major,
 * same schema hash) and while the last ACTION is within its validity. When the validity runs out, or
 * the host sends nothing for host_timeout_ms, the device falls to the safe action and stays there
 * (disarmed) until the host sends a fresh HELLO and then valid ACTIONs. */

typedef void (*edgerl_write_fn)(void *ctx, const uint8_t *data, size_t len);

typedef struct {
    const char *device_id; /* NUL-terminated, at most EDGERL_MAX_DEVICE_ID bytes, kept by reference */
    uint16_t obs_shape[EDGERL_MAX_OBS_DIMS];
    uint8_t obs_ndim;
    uint8_t obs_dtype;
    uint16_t n_actions, safe_action, heartbeat_ms;
    uint32_t capabilities;
    uint16_t max_valid_ms;    /* cap on an ACTION's validity, whatever the host asks for */
    uint32_t host_timeout_ms; /* host silence (no frame) that trips the deadman */
    uint8_t major;            /* EDGERL_MAJOR; another value only to test mismatches */
    uint32_t schema_hash;     /* EDGERL_SCHEMA_HASH; idem */
    uint8_t *tx_buf;          /* one outgoing frame: EDGERL_DEVICE_TX_SIZE(largest OBS payload) bytes */
    size_t tx_cap;
    edgerl_write_fn write; /* receives each frame whole, in one call */
    void *write_ctx;
    edgerl_message_fn on_message; /* optional: every message after the session handled it */
    void *message_ctx;
} edgerl_device_config_t;

/* Why a decision applies the action it does. */
typedef enum {
    EDGERL_REASON_POLICY,        /* the host's valid ACTION */
    EDGERL_REASON_HOST_FALLBACK, /* the host's valid ACTION, chosen by its fallback */
    EDGERL_REASON_NO_HOST,       /* safe: no host HELLO yet */
    EDGERL_REASON_INCOMPATIBLE,  /* safe: the host speaks another version */
    EDGERL_REASON_WAITING,       /* safe: armed, no ACTION since the HELLO yet */
    EDGERL_REASON_DEADMAN,       /* safe: an ACTION's validity ran out; a fresh HELLO re-arms */
    EDGERL_REASON_HOST_QUIET     /* safe: no frame for host_timeout_ms; a fresh HELLO re-arms */
} edgerl_reason_t;

typedef struct {
    uint16_t action;
    edgerl_reason_t reason;
} edgerl_decision_t;

typedef struct {
    uint32_t actions_accepted;
    uint32_t actions_ignored;      /* while disarmed or from an incompatible host */
    uint32_t actions_out_of_range; /* action >= n_actions: answered with ERROR */
    uint32_t deadman_trips;
    uint32_t host_quiet_trips;
    uint32_t incompatible_hellos;
    uint32_t tx_frames;
    uint32_t tx_failed; /* frames that did not fit tx_buf */
} edgerl_device_counters_t;

/* Read-only for the application, except through the functions below. */
typedef struct {
    edgerl_device_config_t cfg;
    edgerl_parser_t parser;
    uint16_t tx_seq;
    bool host_seen, host_compatible;
    uint8_t host_major, host_minor;
    uint32_t host_schema_hash;
    bool armed;
    edgerl_reason_t safe_reason; /* why the device is safe while not armed */
    bool have_action;
    edgerl_action_t action;
    uint32_t action_rx_ms;
    uint32_t last_rx_ms;
    edgerl_device_counters_t counters;
} edgerl_device_t;

/* Defaults: current version, 100 ms heartbeat, 1000 ms validity cap, 500 ms host timeout. */
void edgerl_device_config_init(edgerl_device_config_t *cfg);
/* False when the configuration cannot work (nothing is sent either way). */
bool edgerl_device_init(edgerl_device_t *d, const edgerl_device_config_t *cfg, uint32_t now_ms);
/* Feed received bytes: answers HELLOs, reports mismatches with an ERROR, stores valid ACTIONs. */
void edgerl_device_feed(edgerl_device_t *d, const uint8_t *data, size_t len, uint32_t now_ms);
/* The action to apply now and why; trips the deadman when due. Call once per control step. */
edgerl_decision_t edgerl_device_decide(edgerl_device_t *d, uint32_t now_ms);
/* The state a HEARTBEAT should report. */
uint8_t edgerl_device_state(const edgerl_device_t *d);

/* The HELLO a device configured by `cfg` sends (for a device that speaks on more than one link). */
void edgerl_device_hello(const edgerl_device_config_t *cfg, bool reply_requested, edgerl_msg_t *msg);

/* Senders: each builds one frame in tx_buf and hands it to write(); false if it did not fit. */
bool edgerl_device_send_hello(edgerl_device_t *d, bool reply_requested);
bool edgerl_device_send_obs(edgerl_device_t *d, const edgerl_obs_t *obs);
bool edgerl_device_send_heartbeat(edgerl_device_t *d, uint32_t t_us);
bool edgerl_device_send_error(edgerl_device_t *d, uint16_t code, const char *text);

/* "host 1.0 (schema f5542274) vs device 2.0 (schema f5542274)", NUL-terminated; 0 if no host yet
 * or `cap` is too small. */
size_t edgerl_device_mismatch_text(const edgerl_device_t *d, char *out, size_t cap);
/* "policy", "host-fallback", "no-host", "incompatible", "waiting", "deadman", "host-quiet". */
const char *edgerl_reason_name(edgerl_reason_t reason);

#ifdef __cplusplus
}
#endif

#endif /* EDGERL_H */

/* Test driver for edgerl, run by tests/test_firmware.py (built with the sanitizers).
 *
 *   driver vectors       the constants, then one frame per line ("name hex") for fixed messages
 *   driver codec         stdin lines "e HEX" (COBS encode), "d HEX" (COBS decode), "c HEX" (CRC-32);
 *                        one stdout line each: hex, or "error"
 *   driver stream OUT    frames from stdin: each decoded message is described on a line of OUT and
 *                        echoed re-encoded to stdout; at end of input, the counters as OUT's last line
 */
#define _POSIX_C_SOURCE 200809L

#include "../edgerl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_OBS_VALUES (EDGERL_MAX_PAYLOAD / 2u)

static float bits_float(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint32_t float_bits(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static void print_hex(FILE *out, const void *data, size_t len)
{
    const uint8_t *bytes = (const uint8_t *)data;
    size_t i;
    for (i = 0; i < len; i++) {
        fprintf(out, "%02x", bytes[i]);
    }
}

/* ---- vectors: fixed messages the Python test rebuilds field for field ---------------------------- */

static void print_frame(const char *name, const edgerl_msg_t *msg)
{
    uint8_t frame[EDGERL_WIRE_SIZE(EDGERL_MAX_PAYLOAD)];
    const size_t n = edgerl_encode(frame, sizeof frame, EDGERL_MAJOR, msg);
    printf("%s ", name);
    print_hex(stdout, frame, n);
    printf("\n");
}

static edgerl_msg_t hello(uint16_t seq, const char *id, uint8_t ndim, const uint16_t *shape)
{
    edgerl_msg_t msg = {0};
    msg.type = EDGERL_HELLO;
    msg.seq = seq;
    msg.u.hello.major = EDGERL_MAJOR;
    msg.u.hello.minor = EDGERL_MINOR;
    msg.u.hello.schema_hash = EDGERL_SCHEMA_HASH;
    msg.u.hello.device_id = id;
    msg.u.hello.device_id_len = (uint8_t)strlen(id);
    msg.u.hello.ndim = ndim;
    memcpy(msg.u.hello.obs_shape, shape, ndim * sizeof *shape);
    return msg;
}

static void hello_vectors(void)
{
    static const uint16_t shape72[] = {72}, shape345[] = {3, 4, 5}, shape9[] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    edgerl_msg_t msg = hello(0, "antijam-sim", 1, shape72);
    msg.u.hello.capabilities = EDGERL_CAP_DEADMAN | EDGERL_CAP_RESET;
    msg.u.hello.n_actions = 8;
    msg.u.hello.heartbeat_ms = 100;
    msg.u.hello.reply_requested = true;
    print_frame("hello_device", &msg);

    msg = hello(7, "host", 0, shape72);
    msg.u.hello.heartbeat_ms = 100;
    print_frame("hello_host", &msg);

    msg = hello(65535, "", 3, shape345);
    msg.u.hello.minor = 3;
    msg.u.hello.schema_hash = 0x12345678UL;
    msg.u.hello.capabilities = 0xFFFFFFFFUL;
    msg.u.hello.obs_dtype = EDGERL_DTYPE_INT16;
    msg.u.hello.n_actions = 65535;
    msg.u.hello.safe_action = 4;
    msg.u.hello.heartbeat_ms = 250;
    print_frame("hello_3d", &msg);

    msg = hello(1, "x", 9, shape9);
    print_frame("reject_hello_9_dims", &msg);
    msg = hello(1, "0123456789abcdef0123456789abcdefX", 1, shape72);
    print_frame("reject_hello_long_id", &msg);
}

static edgerl_msg_t obs(uint16_t seq, uint16_t count, const float *values)
{
    edgerl_msg_t msg = {0};
    msg.type = EDGERL_OBS;
    msg.seq = seq;
    msg.u.obs.count = count;
    msg.u.obs.values = values;
    return msg;
}

static void obs_vectors(void)
{
    /* int16 codes: ties round to even, out-of-range values clip */
    static const float ties[] = {0.25f, 0.75f, -0.25f, -0.75f, 1.25f, -1.25f, 1e6f, -1e6f, 16383.75f, -16384.25f, 0.0f};
    static float ramp[72], noisy[300], full[252];
    edgerl_msg_t msg;
    uint16_t i;
    for (i = 0; i < 72; i++) {
        ramp[i] = (float)i * 0.125f - 3.0f;
    }
    for (i = 0; i < 300; i++) {
        noisy[i] = (float)i * 0.0137f - 2.0f;
    }
    for (i = 0; i < 252; i++) { /* no zero byte anywhere: long COBS runs */
        full[i] = bits_float(0x3F000000UL | (uint32_t)(i % 200 + 1) << 16 | (uint32_t)(i % 250 + 1) << 8 |
                             (uint32_t)(i % 254 + 1));
    }
    msg = obs(1, 72, ramp);
    msg.u.obs.t_us = 123456789UL;
    msg.u.obs.reward = 0.95f;
    print_frame("obs_f32", &msg);

    msg = obs(2, 11, ties);
    msg.u.obs.int16_scale = 0.5f;
    msg.u.obs.terminated = true;
    msg.u.obs.truncated = true;
    msg.u.obs.reward = -0.05f;
    print_frame("obs_i16_ties", &msg);

    msg = obs(3, 300, noisy);
    msg.u.obs.int16_scale = 0.01f;
    msg.u.obs.t_us = 4294967295UL;
    print_frame("obs_i16", &msg);

    msg = obs(4, 251, full);
    msg.u.obs.t_us = 0x01020304UL;
    msg.u.obs.reward = bits_float(0x3F7AE148UL);
    print_frame("obs_max", &msg);

    msg = obs(5, 0, full);
    print_frame("obs_empty", &msg);

    msg = obs(6, 252, full);
    print_frame("reject_obs_too_big", &msg);
}

static void simple_vectors(void)
{
    static const char long_text[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9"
                                    "bc"; /* 63 ASCII + U+00E9 straddles byte 64 */
    static const char mismatch[] = "host 1.0 (schema f5542274) vs device 2.0 (schema f5542274)";
    edgerl_msg_t msg = {0};

    msg.type = EDGERL_ACTION;
    msg.seq = 3;
    msg.u.action.action = 5;
    msg.u.action.answers = 2;
    msg.u.action.valid_ms = 100;
    print_frame("action", &msg);
    msg.u.action.action = 65535;
    msg.u.action.answers = 65535;
    msg.u.action.valid_ms = 65535;
    msg.u.action.fallback = true;
    print_frame("action_fallback", &msg);

    msg.type = EDGERL_HEARTBEAT;
    msg.seq = 4;
    msg.u.heartbeat.t_us = 4000000000UL;
    msg.u.heartbeat.state = EDGERL_STATE_SAFE;
    msg.u.heartbeat.unsequenced = true;
    print_frame("heartbeat_unsequenced", &msg);
    msg.u.heartbeat.state = EDGERL_STATE_READY;
    msg.u.heartbeat.unsequenced = false;
    print_frame("heartbeat", &msg);

    msg.type = EDGERL_RESET;
    msg.seq = 5;
    msg.u.reset.has_seed = true;
    msg.u.reset.seed = 42;
    print_frame("reset_seed", &msg);
    msg.u.reset.has_seed = false;
    print_frame("reset", &msg);

    msg.type = EDGERL_ERROR;
    msg.seq = 6;
    msg.u.error.code = EDGERL_ERR_INCOMPATIBLE;
    msg.u.error.text = mismatch;
    msg.u.error.text_len = (uint8_t)strlen(mismatch);
    print_frame("error", &msg);
    msg.u.error.code = 65535;
    msg.u.error.text = long_text;
    msg.u.error.text_len = (uint8_t)strlen(long_text);
    print_frame("error_truncated", &msg);

    msg.type = EDGERL_CONFIG;
    msg.seq = 7;
    msg.u.config.value = 12.5f;
    msg.u.config.key = "period_ms";
    msg.u.config.key_len = 9;
    print_frame("config", &msg);
    msg.u.config.key_len = 0;
    print_frame("reject_config_empty_key", &msg);
}

static int run_vectors(void)
{
    printf("constants major=%u minor=%u schema=%08" PRIx32 " max_payload=%u max_frame=%u max_encoded=%u"
           " wire_max=%u\n",
           EDGERL_MAJOR, EDGERL_MINOR, (uint32_t)EDGERL_SCHEMA_HASH, EDGERL_MAX_PAYLOAD, EDGERL_MAX_FRAME,
           EDGERL_MAX_ENCODED, EDGERL_WIRE_SIZE(EDGERL_MAX_PAYLOAD));
    printf("capabilities int16_obs=%d reset=%d config=%d deadman=%d policy=%d self_test_passed=%d\n",
           EDGERL_CAP_INT16_OBS, EDGERL_CAP_RESET, EDGERL_CAP_CONFIG, EDGERL_CAP_DEADMAN, EDGERL_CAP_POLICY,
           EDGERL_CAP_SELF_TEST_PASSED);
    printf("errors incompatible=%d bad_action=%d unknown_config=%d bad_config_value=%d self_test_failed=%d\n",
           EDGERL_ERR_INCOMPATIBLE, EDGERL_ERR_BAD_ACTION, EDGERL_ERR_UNKNOWN_CONFIG, EDGERL_ERR_BAD_CONFIG_VALUE,
           EDGERL_ERR_SELF_TEST_FAILED);
    hello_vectors();
    obs_vectors();
    simple_vectors();
    return 0;
}

/* ---- codec: COBS and CRC on arbitrary bytes -------------------------------------------------------- */

static size_t parse_hex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    unsigned byte;
    while (n < cap && sscanf(hex + 2 * n, "%2x", &byte) == 1) {
        out[n++] = (uint8_t)byte;
    }
    return n;
}

static int run_codec(void)
{
    static char line[2 * 4096 + 16];
    static uint8_t in[4096], out[2 * 4096];
    while (fgets(line, sizeof line, stdin)) {
        const size_t n = parse_hex(line + 2, in, sizeof in);
        size_t m = 0;
        bool ok = true;
        if (line[0] == 'e') {
            m = edgerl_cobs_encode(in, n, out, sizeof out);
            ok = m > 0;
        } else if (line[0] == 'd') {
            ok = edgerl_cobs_decode(in, n, out, &m);
        } else {
            printf("%08" PRIx32 "\n", edgerl_crc32(0, in, n));
            continue;
        }
        if (ok) {
            print_hex(stdout, out, m);
            printf("\n");
        } else {
            printf("error\n");
        }
    }
    return 0;
}

/* ---- stream: decode, describe, echo ---------------------------------------------------------------- */

static void describe(FILE *out, const edgerl_msg_t *msg)
{
    const edgerl_hello_t *h = &msg->u.hello;
    uint8_t i;
    switch (msg->type) {
    case EDGERL_HELLO:
        fprintf(out, "HELLO seq=%u major=%u minor=%u schema=%08" PRIx32 " caps=%" PRIu32 " n_actions=%u safe=%u hb=%u"
                     " dtype=%u shape=",
                msg->seq, h->major, h->minor, h->schema_hash, h->capabilities, h->n_actions, h->safe_action,
                h->heartbeat_ms, h->obs_dtype);
        for (i = 0; i < h->ndim; i++) {
            fprintf(out, i ? ",%u" : "%u", h->obs_shape[i]);
        }
        fprintf(out, " id=");
        print_hex(out, h->device_id, h->device_id_len);
        fprintf(out, " reply=%d\n", h->reply_requested);
        break;
    case EDGERL_FOREIGN_HELLO:
        fprintf(out, "FOREIGN major=%u minor=%u schema=%08" PRIx32 "\n", h->major, h->minor, h->schema_hash);
        break;
    case EDGERL_OBS: {
        const edgerl_obs_t *o = &msg->u.obs;
        uint32_t crc = 0;
        uint16_t k;
        for (k = 0; k < o->count; k++) {
            const uint32_t bits = float_bits(edgerl_obs_value(o, k));
            const uint8_t le[4] = {(uint8_t)bits, (uint8_t)(bits >> 8), (uint8_t)(bits >> 16), (uint8_t)(bits >> 24)};
            crc = edgerl_crc32(crc, le, sizeof le);
        }
        fprintf(out, "OBS seq=%u t_us=%" PRIu32 " reward=%08" PRIx32 " scale=%08" PRIx32 " term=%d trunc=%d n=%u"
                     " values=%08" PRIx32 "\n",
                msg->seq, o->t_us, float_bits(o->reward), float_bits(o->int16_scale), o->terminated, o->truncated,
                o->count, crc);
        break;
    }
    case EDGERL_ACTION:
        fprintf(out, "ACTION seq=%u action=%u answers=%u valid_ms=%u fallback=%d\n", msg->seq, msg->u.action.action,
                msg->u.action.answers, msg->u.action.valid_ms, msg->u.action.fallback);
        break;
    case EDGERL_HEARTBEAT:
        fprintf(out, "HEARTBEAT seq=%u t_us=%" PRIu32 " state=%u unseq=%d\n", msg->seq, msg->u.heartbeat.t_us,
                msg->u.heartbeat.state, msg->u.heartbeat.unsequenced);
        break;
    case EDGERL_RESET:
        fprintf(out, "RESET seq=%u has_seed=%d seed=%" PRIu32 "\n", msg->seq, msg->u.reset.has_seed,
                msg->u.reset.seed);
        break;
    case EDGERL_ERROR:
        fprintf(out, "ERROR seq=%u code=%u text=", msg->seq, msg->u.error.code);
        print_hex(out, msg->u.error.text, msg->u.error.text_len);
        fprintf(out, "\n");
        break;
    default:
        fprintf(out, "CONFIG seq=%u value=%08" PRIx32 " key=", msg->seq, float_bits(msg->u.config.value));
        print_hex(out, msg->u.config.key, msg->u.config.key_len);
        fprintf(out, "\n");
        break;
    }
}

static bool write_all(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        const ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        data += n;
        len -= (size_t)n;
    }
    return true;
}

/* The message re-encoded; a foreign HELLO comes back as a HELLO carrying its prefix, seq 0. */
static void echo(const edgerl_msg_t *msg)
{
    static float values[MAX_OBS_VALUES];
    static uint8_t frame[EDGERL_WIRE_SIZE(EDGERL_MAX_PAYLOAD)];
    edgerl_msg_t copy = *msg;
    size_t n;
    uint16_t k;
    if (copy.type == EDGERL_FOREIGN_HELLO) {
        copy.type = EDGERL_HELLO;
        copy.seq = 0;
        copy.flags = 0;
    } else if (copy.type == EDGERL_OBS) {
        for (k = 0; k < copy.u.obs.count; k++) {
            values[k] = edgerl_obs_value(&msg->u.obs, k);
        }
        copy.u.obs.values = values;
    }
    n = edgerl_encode(frame, sizeof frame, EDGERL_MAJOR, &copy);
    if (n == 0 || !write_all(STDOUT_FILENO, frame, n)) {
        fprintf(stderr, "driver: cannot echo a message of type %u\n", msg->type);
    }
}

static void on_message(void *ctx, const edgerl_msg_t *msg)
{
    describe((FILE *)ctx, msg);
    echo(msg);
}

static int run_stream(const char *path)
{
    static uint8_t chunk[4096];
    edgerl_parser_t parser;
    const edgerl_counters_t *c = &parser.counters;
    FILE *out = fopen(path, "w");
    if (out == NULL) {
        perror(path);
        return 2;
    }
    edgerl_parser_init(&parser, EDGERL_MAJOR);
    for (;;) {
        const ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) { /* end of input; a pty whose master closed reports EIO */
            break;
        }
        edgerl_parser_feed(&parser, chunk, (size_t)n, on_message, out);
    }
    fprintf(out,
            "COUNTERS frames=%" PRIu32 " crc_errors=%" PRIu32 " malformed=%" PRIu32 " oversize=%" PRIu32
            " unknown_type=%" PRIu32 " foreign_version=%" PRIu32 " seq_gaps=%" PRIu32 " duplicates=%" PRIu32
            " reorders=%" PRIu32 "\n",
            c->frames, c->crc_errors, c->malformed, c->oversize, c->unknown_type, c->foreign_version, c->seq_gaps,
            c->duplicates, c->reorders);
    return fclose(out) == 0 ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "vectors") == 0) {
        return run_vectors();
    }
    if (argc == 2 && strcmp(argv[1], "codec") == 0) {
        return run_codec();
    }
    if (argc == 3 && strcmp(argv[1], "stream") == 0) {
        return run_stream(argv[2]);
    }
    fprintf(stderr, "usage: driver vectors | driver codec | driver stream OUT\n");
    return 2;
}

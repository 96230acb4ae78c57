/* edgerl: device side of the edge-rl wire protocol 1.0. Layouts and rules: see edgerl.h. */
#include "edgerl.h"

#include <math.h> /* isfinite (a macro: no libm needed) */
#include <string.h>

/* Floats travel as IEEE-754 binary32 bit patterns. */
typedef char edgerl_float_is_32_bits[(sizeof(float) == 4) ? 1 : -1];

/* ---- little-endian bytes ------------------------------------------------------------------------- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static float float_from_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint32_t bits_from_float(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

/* ---- CRC-32 (reflected 0xEDB88320, as zlib), a nibble at a time: 64 bytes of table ---------------- */

static const uint32_t CRC_NIBBLE[16] = {
    0x00000000UL, 0x1db71064UL, 0x3b6e20c8UL, 0x26d930acUL, 0x76dc4190UL, 0x6b6b51f4UL, 0x4db26158UL, 0x5005713cUL,
    0xedb88320UL, 0xf00f9344UL, 0xd6d6a3e8UL, 0xcb61b38cUL, 0x9b64c2b0UL, 0x86d3d2d4UL, 0xa00ae278UL, 0xbdbdf21cUL,
};

/* One byte into the running (inverted) CRC state. */
static uint32_t crc_step(uint32_t state, uint8_t byte)
{
    state ^= byte;
    state = (state >> 4) ^ CRC_NIBBLE[state & 0x0Fu];
    return (state >> 4) ^ CRC_NIBBLE[state & 0x0Fu];
}

uint32_t edgerl_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    uint32_t state = ~crc;
    size_t i;
    for (i = 0; i < len; i++) {
        state = crc_step(state, data[i]);
    }
    return ~state;
}

/* ---- frame writer: CRC and COBS in one pass, straight into the output buffer ----------------------
 * Each COBS block's code byte is reserved first and patched when the block closes, so no scratch
 * copy of the frame is needed. `pos` keeps counting past `cap`: an overflow shows at the end. */

typedef struct {
    uint8_t *out;
    size_t cap;
    size_t pos;
    size_t code_at;  /* where the open block's code byte goes */
    bool after_full; /* the open block follows a full 254-byte run, so no zero precedes it */
    uint32_t crc;    /* running CRC state over header and payload */
} writer_t;

static void put_at(writer_t *w, size_t at, uint8_t byte)
{
    if (at < w->cap) {
        w->out[at] = byte;
    }
}

static void writer_start(writer_t *w, uint8_t *out, size_t cap)
{
    w->out = out;
    w->cap = cap;
    w->code_at = 0;
    w->pos = 1;
    w->after_full = false;
    w->crc = 0xFFFFFFFFUL;
}

static void close_block(writer_t *w, bool full)
{
    put_at(w, w->code_at, (uint8_t)(w->pos - w->code_at));
    w->code_at = w->pos++;
    w->after_full = full;
}

static void cobs_put(writer_t *w, uint8_t byte)
{
    if (byte == 0) {
        close_block(w, false);
        return;
    }
    put_at(w, w->pos++, byte);
    if (w->pos - w->code_at == 0xFF) {
        close_block(w, true);
    }
}

/* Closes the last block; returns the encoded length (possibly more than cap). */
static size_t cobs_finish(writer_t *w)
{
    if (w->after_full && w->pos - w->code_at == 1) {
        w->pos--; /* the data ended exactly on a full run: no trailing code byte */
    } else {
        put_at(w, w->code_at, (uint8_t)(w->pos - w->code_at));
    }
    return w->pos;
}

static void put_u8(writer_t *w, uint8_t byte)
{
    w->crc = crc_step(w->crc, byte);
    cobs_put(w, byte);
}

static void put_u16(writer_t *w, uint16_t v)
{
    put_u8(w, (uint8_t)(v & 0xFFu));
    put_u8(w, (uint8_t)(v >> 8));
}

static void put_u32(writer_t *w, uint32_t v)
{
    put_u16(w, (uint16_t)(v & 0xFFFFu));
    put_u16(w, (uint16_t)(v >> 16));
}

static void put_bytes(writer_t *w, const char *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        put_u8(w, (uint8_t)data[i]);
    }
}

size_t edgerl_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    writer_t w;
    size_t i, n;
    writer_start(&w, out, cap);
    for (i = 0; i < len; i++) {
        cobs_put(&w, in[i]);
    }
    n = cobs_finish(&w);
    return n <= cap ? n : 0;
}

bool edgerl_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t *out_len)
{
    /* In place is safe: every block writes at most as many bytes as it reads, behind the reader. */
    size_t i = 0, o = 0;
    while (i < len) {
        const uint8_t code = in[i];
        const size_t end = i + code;
        size_t k;
        if (code == 0 || end > len) {
            return false;
        }
        for (k = i + 1; k < end; k++) {
            if (in[k] == 0) {
                return false;
            }
            out[o++] = in[k];
        }
        i = end;
        if (code != 0xFF && i < len) {
            out[o++] = 0;
        }
    }
    *out_len = o;
    return true;
}

/* ---- encoding messages ---------------------------------------------------------------------------- */

/* Python's _truncate_utf8: cut at `limit` bytes, never inside a character. */
static uint8_t utf8_cut(const char *text, uint8_t len, uint8_t limit)
{
    if (len <= limit) {
        return len;
    }
    while (limit > 0 && ((uint8_t)text[limit] & 0xC0u) == 0x80u) {
        limit--;
    }
    return limit;
}

static bool hello_valid(const edgerl_hello_t *h)
{
    uint8_t i;
    if (h->ndim > EDGERL_MAX_OBS_DIMS || h->device_id_len > EDGERL_MAX_DEVICE_ID || h->obs_dtype > EDGERL_DTYPE_INT16) {
        return false;
    }
    for (i = 0; i < h->ndim; i++) {
        if (h->obs_shape[i] == 0) {
            return false;
        }
    }
    return true;
}

static bool obs_is_int16(const edgerl_obs_t *obs) { return obs->int16_scale > 0.0f; }

/* Payload size and header flags of `msg`; false if it cannot be encoded. */
static bool layout(const edgerl_msg_t *msg, size_t *size, uint8_t *flags)
{
    const edgerl_obs_t *obs = &msg->u.obs;
    *flags = 0;
    switch (msg->type) {
    case EDGERL_HELLO:
        *size = 18u + 2u * msg->u.hello.ndim + 1u + msg->u.hello.device_id_len;
        *flags = msg->u.hello.reply_requested ? EDGERL_FLAG_HELLO_REPLY_REQUESTED : 0;
        return hello_valid(&msg->u.hello);
    case EDGERL_OBS:
        *size = obs_is_int16(obs) ? EDGERL_OBS_I16_PAYLOAD((size_t)obs->count) : EDGERL_OBS_F32_PAYLOAD((size_t)obs->count);
        *flags = (uint8_t)((obs->terminated ? EDGERL_FLAG_OBS_TERMINATED : 0) |
                           (obs->truncated ? EDGERL_FLAG_OBS_TRUNCATED : 0) |
                           (obs_is_int16(obs) ? EDGERL_FLAG_OBS_INT16 : 0));
        return *size <= EDGERL_MAX_PAYLOAD && (!obs_is_int16(obs) || isfinite(obs->int16_scale));
    case EDGERL_ACTION:
        *size = 6;
        *flags = msg->u.action.fallback ? EDGERL_FLAG_ACTION_FALLBACK : 0;
        return true;
    case EDGERL_HEARTBEAT:
        *size = 5;
        *flags = msg->u.heartbeat.unsequenced ? EDGERL_FLAG_UNSEQUENCED : 0;
        return msg->u.heartbeat.state <= EDGERL_STATE_OFFLINE;
    case EDGERL_RESET:
        *size = 5;
        return true;
    case EDGERL_ERROR:
        *size = 3u + utf8_cut(msg->u.error.text, msg->u.error.text_len, EDGERL_MAX_ERROR_TEXT);
        return true;
    case EDGERL_CONFIG:
        *size = 5u + msg->u.config.key_len;
        return msg->u.config.key_len >= 1 && msg->u.config.key_len <= EDGERL_MAX_CONFIG_KEY;
    default:
        return false;
    }
}

static void put_hello(writer_t *w, const edgerl_hello_t *h)
{
    uint8_t i;
    put_u8(w, h->major);
    put_u8(w, h->minor);
    put_u32(w, h->schema_hash);
    put_u32(w, h->capabilities);
    put_u16(w, h->n_actions);
    put_u16(w, h->safe_action);
    put_u16(w, h->heartbeat_ms);
    put_u8(w, h->obs_dtype);
    put_u8(w, h->ndim);
    for (i = 0; i < h->ndim; i++) {
        put_u16(w, h->obs_shape[i]);
    }
    put_u8(w, h->device_id_len);
    put_bytes(w, h->device_id, h->device_id_len);
}

/* numpy's rint (round half to even) of a finite q, clipped to the int16 range first (same result). */
static int32_t int16_code(float q)
{
    int32_t t;
    float frac;
    if (q > 32767.0f) {
        q = 32767.0f;
    } else if (q < -32768.0f) {
        q = -32768.0f;
    }
    t = (int32_t)q;         /* toward zero */
    frac = q - (float)t;    /* exact: both share q's exponent range */
    if (frac > 0.5f || (frac == 0.5f && t % 2 != 0)) {
        t++;
    } else if (frac < -0.5f || (frac == -0.5f && t % 2 != 0)) {
        t--;
    }
    return t;
}

/* False on a non-finite value in an int16 observation (it has no code). */
static bool put_obs(writer_t *w, const edgerl_obs_t *obs)
{
    uint16_t i;
    put_u32(w, obs->t_us);
    put_u32(w, bits_from_float(obs->reward));
    if (!obs_is_int16(obs)) {
        for (i = 0; i < obs->count; i++) {
            put_u32(w, bits_from_float(obs->values[i]));
        }
        return true;
    }
    put_u32(w, bits_from_float(obs->int16_scale));
    for (i = 0; i < obs->count; i++) {
        const float v = obs->values[i];
        if (!isfinite(v)) {
            return false;
        }
        put_u16(w, (uint16_t)int16_code(v / obs->int16_scale));
    }
    return true;
}

static bool put_payload(writer_t *w, const edgerl_msg_t *msg)
{
    switch (msg->type) {
    case EDGERL_HELLO:
        put_hello(w, &msg->u.hello);
        return true;
    case EDGERL_OBS:
        return put_obs(w, &msg->u.obs);
    case EDGERL_ACTION:
        put_u16(w, msg->u.action.answers);
        put_u16(w, msg->u.action.action);
        put_u16(w, msg->u.action.valid_ms);
        return true;
    case EDGERL_HEARTBEAT:
        put_u32(w, msg->u.heartbeat.t_us);
        put_u8(w, msg->u.heartbeat.state);
        return true;
    case EDGERL_RESET:
        put_u8(w, msg->u.reset.has_seed ? 1 : 0);
        put_u32(w, msg->u.reset.has_seed ? msg->u.reset.seed : 0);
        return true;
    case EDGERL_ERROR: {
        const uint8_t len = utf8_cut(msg->u.error.text, msg->u.error.text_len, EDGERL_MAX_ERROR_TEXT);
        put_u16(w, msg->u.error.code);
        put_u8(w, len);
        put_bytes(w, msg->u.error.text, len);
        return true;
    }
    default: /* EDGERL_CONFIG: layout() admits nothing else */
        put_u32(w, bits_from_float(msg->u.config.value));
        put_u8(w, msg->u.config.key_len);
        put_bytes(w, msg->u.config.key, msg->u.config.key_len);
        return true;
    }
}

size_t edgerl_encode(uint8_t *out, size_t cap, uint8_t major, const edgerl_msg_t *msg)
{
    writer_t w;
    size_t size, len;
    uint8_t flags;
    uint32_t crc;
    if (!layout(msg, &size, &flags) || size > EDGERL_MAX_PAYLOAD) {
        return 0;
    }
    writer_start(&w, out, cap);
    put_u8(&w, major);
    put_u8(&w, msg->type);
    put_u8(&w, flags);
    put_u16(&w, msg->seq);
    put_u16(&w, (uint16_t)size);
    if (!put_payload(&w, msg)) {
        return 0;
    }
    crc = ~w.crc;
    cobs_put(&w, (uint8_t)(crc & 0xFFu));
    cobs_put(&w, (uint8_t)((crc >> 8) & 0xFFu));
    cobs_put(&w, (uint8_t)((crc >> 16) & 0xFFu));
    cobs_put(&w, (uint8_t)(crc >> 24));
    len = cobs_finish(&w);
    put_at(&w, len++, 0); /* the delimiter */
    return len <= cap ? len : 0;
}

float edgerl_obs_value(const edgerl_obs_t *obs, uint16_t i)
{
    if (obs_is_int16(obs)) {
        int32_t code = rd16(obs->raw + 2u * (size_t)i);
        if (code > 32767) {
            code -= 65536;
        }
        return (float)code * obs->int16_scale;
    }
    return float_from_bits(rd32(obs->raw + 4u * (size_t)i));
}

/* ---- decoding messages: a bounds-checked reader that fails once and stays failed ------------------ */

typedef struct {
    const uint8_t *data;
    size_t len;
    size_t at;
    bool ok;
} reader_t;

static const uint8_t *take(reader_t *r, size_t n)
{
    const uint8_t *start;
    if (!r->ok || r->len - r->at < n) {
        r->ok = false;
        return NULL;
    }
    start = r->data + r->at;
    r->at += n;
    return start;
}

static uint8_t get_u8(reader_t *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

static uint16_t get_u16(reader_t *r)
{
    const uint8_t *p = take(r, 2);
    return p ? rd16(p) : 0;
}

static uint32_t get_u32(reader_t *r)
{
    const uint8_t *p = take(r, 4);
    return p ? rd32(p) : 0;
}

static float get_f32(reader_t *r) { return float_from_bits(get_u32(r)); }

/* All of the payload read, nothing left over. */
static bool complete(const reader_t *r) { return r->ok && r->at == r->len; }

/* A length byte and that many bytes, the payload's last field. */
static bool get_text(reader_t *r, uint8_t limit, const char **text, uint8_t *len)
{
    *len = get_u8(r);
    *text = (const char *)take(r, *len);
    return complete(r) && *len <= limit;
}

static bool get_hello(reader_t *r, uint8_t flags, edgerl_hello_t *h)
{
    uint8_t i;
    h->major = get_u8(r);
    h->minor = get_u8(r);
    h->schema_hash = get_u32(r);
    h->capabilities = get_u32(r);
    h->n_actions = get_u16(r);
    h->safe_action = get_u16(r);
    h->heartbeat_ms = get_u16(r);
    h->obs_dtype = get_u8(r);
    h->ndim = get_u8(r);
    if (!r->ok || h->obs_dtype > EDGERL_DTYPE_INT16 || h->ndim > EDGERL_MAX_OBS_DIMS) {
        return false;
    }
    for (i = 0; i < h->ndim; i++) {
        h->obs_shape[i] = get_u16(r);
    }
    h->device_id_len = get_u8(r);
    h->device_id = (const char *)take(r, h->device_id_len);
    h->reply_requested = (flags & EDGERL_FLAG_HELLO_REPLY_REQUESTED) != 0;
    return complete(r);
}

static bool get_obs(reader_t *r, uint8_t flags, edgerl_obs_t *obs)
{
    size_t width = 4, tail;
    obs->terminated = (flags & EDGERL_FLAG_OBS_TERMINATED) != 0;
    obs->truncated = (flags & EDGERL_FLAG_OBS_TRUNCATED) != 0;
    obs->t_us = get_u32(r);
    obs->reward = get_f32(r);
    if (flags & EDGERL_FLAG_OBS_INT16) {
        obs->int16_scale = get_f32(r);
        if (!(isfinite(obs->int16_scale) && obs->int16_scale > 0.0f)) {
            return false;
        }
        width = 2;
    }
    if (!r->ok) {
        return false;
    }
    tail = r->len - r->at;
    if (tail % width != 0) {
        return false;
    }
    obs->count = (uint16_t)(tail / width);
    obs->raw = take(r, tail);
    return complete(r);
}

static bool get_payload(reader_t *r, edgerl_msg_t *msg)
{
    switch (msg->type) {
    case EDGERL_HELLO:
        return get_hello(r, msg->flags, &msg->u.hello);
    case EDGERL_OBS:
        return get_obs(r, msg->flags, &msg->u.obs);
    case EDGERL_ACTION:
        msg->u.action.answers = get_u16(r);
        msg->u.action.action = get_u16(r);
        msg->u.action.valid_ms = get_u16(r);
        msg->u.action.fallback = (msg->flags & EDGERL_FLAG_ACTION_FALLBACK) != 0;
        return complete(r);
    case EDGERL_HEARTBEAT:
        msg->u.heartbeat.t_us = get_u32(r);
        msg->u.heartbeat.state = get_u8(r);
        msg->u.heartbeat.unsequenced = (msg->flags & EDGERL_FLAG_UNSEQUENCED) != 0;
        return complete(r) && msg->u.heartbeat.state <= EDGERL_STATE_OFFLINE;
    case EDGERL_RESET: {
        const uint8_t has_seed = get_u8(r);
        const uint32_t seed = get_u32(r);
        msg->u.reset.has_seed = has_seed == 1;
        msg->u.reset.seed = has_seed == 1 ? seed : 0;
        return complete(r) && has_seed <= 1;
    }
    case EDGERL_ERROR:
        msg->u.error.code = get_u16(r);
        return get_text(r, EDGERL_MAX_ERROR_TEXT, &msg->u.error.text, &msg->u.error.text_len);
    default: /* EDGERL_CONFIG: the caller checked the type */
        msg->u.config.value = get_f32(r);
        return get_text(r, EDGERL_MAX_CONFIG_KEY, &msg->u.config.key, &msg->u.config.key_len) &&
               msg->u.config.key_len > 0;
    }
}

/* ---- streaming parser ----------------------------------------------------------------------------- */

void edgerl_parser_init(edgerl_parser_t *p, uint8_t major)
{
    p->len = 0;
    p->discarding = false;
    p->major = major;
    p->seq_known = false;
    p->last_seq = 0;
    memset(&p->counters, 0, sizeof p->counters);
}

/* RFC 1982 on 16 bits: deliver only frames newer than the last one delivered. */
static bool sequence_accept(edgerl_parser_t *p, uint16_t seq)
{
    uint16_t ahead;
    if (!p->seq_known) {
        p->seq_known = true;
        p->last_seq = seq;
        return true;
    }
    ahead = (uint16_t)(seq - p->last_seq);
    if (ahead == 0) {
        p->counters.duplicates++;
        return false;
    }
    if (ahead >= 0x8000u) {
        p->counters.reorders++;
        return false;
    }
    p->counters.seq_gaps += ahead - 1u;
    p->last_seq = seq;
    return true;
}

/* Another major version: only the frozen prefix of its HELLO means anything. */
static bool deliver_foreign(edgerl_parser_t *p, reader_t *r, edgerl_msg_t *msg)
{
    if (msg->type == EDGERL_HELLO && r->len >= 6) {
        msg->type = EDGERL_FOREIGN_HELLO;
        msg->u.hello.major = get_u8(r);
        msg->u.hello.minor = get_u8(r);
        msg->u.hello.schema_hash = get_u32(r);
        p->counters.frames++;
        return true;
    }
    p->counters.foreign_version++;
    return false;
}

/* The buffered run (delimiter excluded) as one frame, checked in the order of the Python decoder. */
static bool deliver(edgerl_parser_t *p, edgerl_msg_t *msg)
{
    static const edgerl_msg_t empty = {0};
    edgerl_counters_t *c = &p->counters;
    size_t n, body;
    reader_t r;
    if (!edgerl_cobs_decode(p->buf, p->len, p->buf, &n) || n < EDGERL_HEADER_SIZE + EDGERL_CRC_SIZE) {
        c->malformed++;
        return false;
    }
    body = n - EDGERL_CRC_SIZE;
    if (edgerl_crc32(0, p->buf, body) != rd32(p->buf + body)) {
        c->crc_errors++;
        return false;
    }
    if (rd16(p->buf + 5) != body - EDGERL_HEADER_SIZE || body - EDGERL_HEADER_SIZE > EDGERL_MAX_PAYLOAD) {
        c->malformed++; /* a payload over the maximum fits the buffer only thanks to COBS slack: refuse it */
        return false;
    }
    if (p->buf[1] < EDGERL_HELLO || p->buf[1] > EDGERL_CONFIG) {
        c->unknown_type++;
        return false;
    }
    *msg = empty;
    msg->type = p->buf[1];
    msg->flags = p->buf[2];
    msg->seq = rd16(p->buf + 3);
    r.data = p->buf + EDGERL_HEADER_SIZE;
    r.len = body - EDGERL_HEADER_SIZE;
    r.at = 0;
    r.ok = true;
    if (p->buf[0] != p->major) {
        return deliver_foreign(p, &r, msg);
    }
    if (!get_payload(&r, msg)) {
        c->malformed++;
        return false;
    }
    if (msg->type == EDGERL_HELLO) {
        p->seq_known = true; /* the peer (re)started: its numbering starts over */
        p->last_seq = msg->seq;
    } else if (!(msg->flags & EDGERL_FLAG_UNSEQUENCED) && !sequence_accept(p, msg->seq)) {
        return false;
    }
    c->frames++;
    return true;
}

bool edgerl_parser_push(edgerl_parser_t *p, uint8_t byte, edgerl_msg_t *msg)
{
    bool delivered = false;
    if (byte != 0) {
        if (p->discarding) {
            return false;
        }
        if (p->len == EDGERL_MAX_ENCODED) { /* no frame is this long: drop up to the next delimiter */
            p->counters.oversize++;
            p->discarding = true;
            p->len = 0;
            return false;
        }
        p->buf[p->len++] = byte;
        return false;
    }
    if (!p->discarding && p->len > 0) {
        delivered = deliver(p, msg);
    }
    p->len = 0;
    p->discarding = false;
    return delivered;
}

size_t edgerl_parser_feed(edgerl_parser_t *p, const uint8_t *data, size_t len, edgerl_message_fn on_message,
                          void *ctx)
{
    edgerl_msg_t msg;
    size_t i, count = 0;
    for (i = 0; i < len; i++) {
        if (edgerl_parser_push(p, data[i], &msg)) {
            count++;
            if (on_message) {
                on_message(ctx, &msg);
            }
        }
    }
    return count;
}

/* ---- text ------------------------------------------------------------------------------------------ */

typedef struct {
    char *out;
    size_t cap;
    size_t len;
    bool ok;
} text_t;

static void text_put(text_t *t, const char *s)
{
    while (*s != '\0') {
        if (t->len + 1 >= t->cap) {
            t->ok = false;
            return;
        }
        t->out[t->len++] = *s++;
    }
}

static void text_put_version(text_t *t, uint8_t major, uint8_t minor, uint32_t schema_hash)
{
    static const char HEX[] = "0123456789abcdef";
    char buf[EDGERL_VERSION_TEXT_SIZE];
    char *at = buf;
    const uint8_t parts[2] = {major, minor};
    int i;
    for (i = 0; i < 2; i++) {
        if (parts[i] >= 100) {
            *at++ = (char)('0' + parts[i] / 100);
        }
        if (parts[i] >= 10) {
            *at++ = (char)('0' + parts[i] / 10 % 10);
        }
        *at++ = (char)('0' + parts[i] % 10);
        *at++ = i == 0 ? '.' : ' ';
    }
    memcpy(at, "(schema ", 8);
    at += 8;
    for (i = 28; i >= 0; i -= 4) {
        *at++ = HEX[(schema_hash >> i) & 0x0Fu];
    }
    *at++ = ')';
    *at = '\0';
    text_put(t, buf);
}

/* Starts an empty text; returns whether `cap` holds at least the terminator. */
static bool text_start(text_t *t, char *out, size_t cap)
{
    t->out = out;
    t->cap = cap;
    t->len = 0;
    t->ok = cap > 0;
    return t->ok;
}

static size_t text_end(text_t *t)
{
    if (t->cap > 0) {
        t->out[t->len] = '\0';
    }
    return t->ok ? t->len : 0;
}

size_t edgerl_format_version(char *out, size_t cap, uint8_t major, uint8_t minor, uint32_t schema_hash)
{
    text_t t;
    if (text_start(&t, out, cap)) {
        text_put_version(&t, major, minor, schema_hash);
    }
    return text_end(&t);
}

bool edgerl_hello_compatible(const edgerl_msg_t *msg, uint8_t major, uint32_t schema_hash)
{
    return msg->type == EDGERL_HELLO && msg->u.hello.major == major && msg->u.hello.schema_hash == schema_hash;
}

/* ---- device session ----------------------------------------------------------------------------------- */

void edgerl_device_config_init(edgerl_device_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->device_id = ""; /* pointers set explicitly: all-bits-zero need not be NULL */
    cfg->tx_buf = NULL;
    cfg->write = NULL;
    cfg->write_ctx = NULL;
    cfg->on_message = NULL;
    cfg->message_ctx = NULL;
    cfg->heartbeat_ms = 100;
    cfg->max_valid_ms = 1000;
    cfg->host_timeout_ms = 500;
    cfg->major = EDGERL_MAJOR;
    cfg->schema_hash = EDGERL_SCHEMA_HASH;
}

static bool config_valid(const edgerl_device_config_t *cfg)
{
    return cfg->write != NULL && cfg->tx_buf != NULL && cfg->tx_cap >= EDGERL_DEVICE_TX_SIZE(0u) &&
           cfg->device_id != NULL && strlen(cfg->device_id) <= EDGERL_MAX_DEVICE_ID &&
           cfg->obs_ndim <= EDGERL_MAX_OBS_DIMS &&
           cfg->obs_dtype <= EDGERL_DTYPE_INT16 && cfg->n_actions > 0 && cfg->safe_action < cfg->n_actions &&
           cfg->max_valid_ms > 0 && cfg->host_timeout_ms > 0;
}

bool edgerl_device_init(edgerl_device_t *d, const edgerl_device_config_t *cfg, uint32_t now_ms)
{
    if (!config_valid(cfg)) {
        return false;
    }
    d->cfg = *cfg;
    edgerl_parser_init(&d->parser, cfg->major);
    d->tx_seq = 0;
    d->host_seen = false;
    d->host_compatible = false;
    d->host_major = 0;
    d->host_minor = 0;
    d->host_schema_hash = 0;
    d->armed = false;
    d->safe_reason = EDGERL_REASON_NO_HOST;
    d->have_action = false;
    d->action_rx_ms = now_ms;
    d->last_rx_ms = now_ms;
    memset(&d->action, 0, sizeof d->action);
    memset(&d->counters, 0, sizeof d->counters);
    return true;
}

static bool send(edgerl_device_t *d, edgerl_msg_t *msg)
{
    size_t n;
    msg->seq = d->tx_seq;
    n = edgerl_encode(d->cfg.tx_buf, d->cfg.tx_cap, d->cfg.major, msg);
    if (n == 0) {
        d->counters.tx_failed++;
        return false;
    }
    d->tx_seq++;
    d->counters.tx_frames++;
    d->cfg.write(d->cfg.write_ctx, d->cfg.tx_buf, n);
    return true;
}

void edgerl_device_hello(const edgerl_device_config_t *cfg, bool reply_requested, edgerl_msg_t *msg)
{
    edgerl_hello_t *h = &msg->u.hello;
    memset(msg, 0, sizeof *msg);
    msg->type = EDGERL_HELLO;
    h->major = cfg->major;
    h->minor = EDGERL_MINOR;
    h->schema_hash = cfg->schema_hash;
    h->capabilities = cfg->capabilities;
    h->n_actions = cfg->n_actions;
    h->safe_action = cfg->safe_action;
    h->heartbeat_ms = cfg->heartbeat_ms;
    h->obs_dtype = cfg->obs_dtype;
    h->ndim = cfg->obs_ndim;
    memcpy(h->obs_shape, cfg->obs_shape, sizeof h->obs_shape);
    h->device_id = cfg->device_id;
    h->device_id_len = (uint8_t)strlen(cfg->device_id); /* <= 32: checked by init */
    h->reply_requested = reply_requested;
}

bool edgerl_device_send_hello(edgerl_device_t *d, bool reply_requested)
{
    edgerl_msg_t msg;
    edgerl_device_hello(&d->cfg, reply_requested, &msg);
    return send(d, &msg);
}

bool edgerl_device_send_obs(edgerl_device_t *d, const edgerl_obs_t *obs)
{
    edgerl_msg_t msg = {0};
    msg.type = EDGERL_OBS;
    msg.u.obs = *obs;
    return send(d, &msg);
}

bool edgerl_device_send_heartbeat(edgerl_device_t *d, uint32_t t_us)
{
    edgerl_msg_t msg = {0};
    msg.type = EDGERL_HEARTBEAT;
    msg.u.heartbeat.t_us = t_us;
    msg.u.heartbeat.state = edgerl_device_state(d);
    return send(d, &msg);
}

bool edgerl_device_send_error(edgerl_device_t *d, uint16_t code, const char *text)
{
    const size_t len = strlen(text);
    edgerl_msg_t msg = {0};
    msg.type = EDGERL_ERROR;
    msg.u.error.code = code;
    msg.u.error.text = text;
    msg.u.error.text_len = (uint8_t)(len > 255 ? 255 : len); /* encode truncates to 64 */
    return send(d, &msg);
}

size_t edgerl_device_mismatch_text(const edgerl_device_t *d, char *out, size_t cap)
{
    text_t t;
    if (!text_start(&t, out, cap)) {
        return 0;
    }
    text_put(&t, "host ");
    text_put_version(&t, d->host_major, d->host_minor, d->host_schema_hash);
    text_put(&t, " vs device ");
    text_put_version(&t, d->cfg.major, EDGERL_MINOR, d->cfg.schema_hash);
    t.ok = t.ok && d->host_seen;
    return text_end(&t);
}

static void disarm(edgerl_device_t *d, edgerl_reason_t why)
{
    d->armed = false;
    d->have_action = false;
    d->safe_reason = why;
}

static bool action_valid(const edgerl_device_t *d, uint32_t now_ms)
{
    const uint16_t valid_ms = d->action.valid_ms < d->cfg.max_valid_ms ? d->action.valid_ms : d->cfg.max_valid_ms;
    return (uint32_t)(now_ms - d->action_rx_ms) < valid_ms;
}

/* The deadman: an expired setpoint or a silent host disarms until the next compatible HELLO. */
static void check_deadman(edgerl_device_t *d, uint32_t now_ms)
{
    if (!d->armed) {
        return;
    }
    if (d->have_action && !action_valid(d, now_ms)) {
        d->counters.deadman_trips++;
        disarm(d, EDGERL_REASON_DEADMAN);
    } else if ((uint32_t)(now_ms - d->last_rx_ms) >= d->cfg.host_timeout_ms) {
        d->counters.host_quiet_trips++;
        disarm(d, EDGERL_REASON_HOST_QUIET);
    }
}

static void on_hello(edgerl_device_t *d, const edgerl_msg_t *msg)
{
    const edgerl_hello_t *h = &msg->u.hello;
    d->host_seen = true;
    d->host_major = h->major;
    d->host_minor = h->minor;
    d->host_schema_hash = h->schema_hash;
    d->host_compatible = edgerl_hello_compatible(msg, d->cfg.major, d->cfg.schema_hash);
    if (msg->flags & EDGERL_FLAG_HELLO_REPLY_REQUESTED) {
        edgerl_device_send_hello(d, false); /* also to a foreign host: it needs our version too */
    }
    if (d->host_compatible) {
        d->armed = true; /* a fresh session: no setpoint until the host sends one */
        d->have_action = false;
    } else {
        char text[EDGERL_MISMATCH_TEXT_SIZE];
        d->counters.incompatible_hellos++;
        disarm(d, EDGERL_REASON_INCOMPATIBLE);
        edgerl_device_mismatch_text(d, text, sizeof text);
        edgerl_device_send_error(d, EDGERL_ERR_INCOMPATIBLE, text);
    }
}

static void on_action(edgerl_device_t *d, const edgerl_action_t *a, uint32_t now_ms)
{
    if (!d->armed) {
        d->counters.actions_ignored++;
        return;
    }
    if (a->action >= d->cfg.n_actions) {
        d->counters.actions_out_of_range++;
        edgerl_device_send_error(d, EDGERL_ERR_BAD_ACTION, "action out of range");
        return;
    }
    d->action = *a;
    d->action_rx_ms = now_ms;
    d->have_action = true;
    d->counters.actions_accepted++;
}

/* What the parser callback needs: the device and the time the bytes arrived. */
typedef struct {
    edgerl_device_t *device;
    uint32_t now_ms;
} feed_ctx_t;

static void on_message(void *ctx, const edgerl_msg_t *msg)
{
    const feed_ctx_t *feed = (const feed_ctx_t *)ctx;
    edgerl_device_t *d = feed->device;
    check_deadman(d, feed->now_ms); /* an expiry before this frame arrived still counts */
    d->last_rx_ms = feed->now_ms;
    if (msg->type == EDGERL_HELLO || msg->type == EDGERL_FOREIGN_HELLO) {
        on_hello(d, msg);
    } else if (msg->type == EDGERL_ACTION) {
        on_action(d, &msg->u.action, feed->now_ms);
    }
    if (d->cfg.on_message) {
        d->cfg.on_message(d->cfg.message_ctx, msg);
    }
}

void edgerl_device_feed(edgerl_device_t *d, const uint8_t *data, size_t len, uint32_t now_ms)
{
    feed_ctx_t ctx;
    ctx.device = d;
    ctx.now_ms = now_ms;
    edgerl_parser_feed(&d->parser, data, len, on_message, &ctx);
}

edgerl_decision_t edgerl_device_decide(edgerl_device_t *d, uint32_t now_ms)
{
    edgerl_decision_t out;
    check_deadman(d, now_ms);
    out.action = d->cfg.safe_action;
    if (!d->armed) {
        out.reason = d->safe_reason;
    } else if (!d->have_action) {
        out.reason = EDGERL_REASON_WAITING;
    } else {
        out.action = d->action.action;
        out.reason = d->action.fallback ? EDGERL_REASON_HOST_FALLBACK : EDGERL_REASON_POLICY;
    }
    return out;
}

uint8_t edgerl_device_state(const edgerl_device_t *d)
{
    if (d->armed) {
        return EDGERL_STATE_READY;
    }
    return d->safe_reason == EDGERL_REASON_NO_HOST ? EDGERL_STATE_STARTING : EDGERL_STATE_SAFE;
}

const char *edgerl_reason_name(edgerl_reason_t reason)
{
    switch (reason) {
    case EDGERL_REASON_POLICY:
        return "policy";
    case EDGERL_REASON_HOST_FALLBACK:
        return "host-fallback";
    case EDGERL_REASON_NO_HOST:
        return "no-host";
    case EDGERL_REASON_INCOMPATIBLE:
        return "incompatible";
    case EDGERL_REASON_WAITING:
        return "waiting";
    case EDGERL_REASON_DEADMAN:
        return "deadman";
    case EDGERL_REASON_HOST_QUIET:
        return "host-quiet";
    }
    return "unknown";
}

/* Lock-step benchmark peer: answers every ACTION with the next OBS at once (benchmarks/link.py).
 *
 * The device side of a round trip as a microcontroller would run it: the library's session decodes
 * the ACTION (COBS, CRC-32, sequence, validity), and the reply is a 5-value float32 OBS, the size of
 * a MAVLink ATTITUDE payload. POSIX host program; usage: bench_device --fd N | bench_device PATH
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../edgerl.h"

#define OBS_VALUES 5u

typedef struct {
    int fd;
    edgerl_device_t device;
    float values[OBS_VALUES];
    uint32_t observations;
} bench_t;

static uint32_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static void write_all(void *ctx, const uint8_t *data, size_t len)
{
    const bench_t *b = ctx;
    while (len > 0) {
        ssize_t n = write(b->fd, data, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return; /* the host went away; the read loop notices */
        }
        data += n;
        len -= (size_t)n;
    }
}

static void send_obs(bench_t *b)
{
    edgerl_obs_t obs;
    memset(&obs, 0, sizeof obs);
    obs.t_us = now_ms() * 1000u;
    obs.reward = 1.0f;
    obs.count = OBS_VALUES;
    obs.values = b->values;
    edgerl_device_send_obs(&b->device, &obs);
    b->observations++;
}

static void on_message(void *ctx, const edgerl_msg_t *msg)
{
    bench_t *b = ctx;
    if (msg->type == EDGERL_ACTION) {
        b->values[0] = (float)msg->u.action.action;
        send_obs(b);
    } else if (msg->type == EDGERL_HELLO) {
        send_obs(b); /* the first observation of a session */
    }
}

int main(int argc, char **argv)
{
    static bench_t b;
    static uint8_t tx[EDGERL_DEVICE_TX_SIZE(EDGERL_OBS_F32_PAYLOAD(OBS_VALUES))];
    edgerl_device_config_t cfg;

    if (argc == 3 && strcmp(argv[1], "--fd") == 0) {
        b.fd = atoi(argv[2]);
    } else if (argc == 2) {
        b.fd = open(argv[1], O_RDWR | O_NOCTTY);
    } else {
        fprintf(stderr, "usage: %s --fd N | PATH\n", argv[0]);
        return 2;
    }
    if (b.fd < 0) {
        perror("bench_device: open");
        return 1;
    }
    edgerl_device_config_init(&cfg);
    cfg.device_id = "bench-device";
    cfg.obs_shape[0] = OBS_VALUES;
    cfg.obs_ndim = 1;
    cfg.n_actions = 4;
    cfg.tx_buf = tx;
    cfg.tx_cap = sizeof tx;
    cfg.write = write_all;
    cfg.write_ctx = &b;
    cfg.on_message = on_message;
    cfg.message_ctx = &b;
    if (!edgerl_device_init(&b.device, &cfg, now_ms())) {
        fprintf(stderr, "bench_device: bad configuration\n");
        return 1;
    }
    for (;;) {
        uint8_t buf[4096];
        struct pollfd pfd = {b.fd, POLLIN, 0};
        int ready = poll(&pfd, 1, 100);
        if (ready < 0 && errno == EINTR) {
            continue;
        }
        if (ready == 0) { /* quiet: keep the host's link alive */
            edgerl_device_send_heartbeat(&b.device, now_ms() * 1000u);
            continue;
        }
        ssize_t n = read(b.fd, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        edgerl_device_feed(&b.device, buf, (size_t)n, now_ms());
    }
    fprintf(stderr, "bench_device: %lu observations sent\n", (unsigned long)b.observations);
    return 0;
}

/* Remote mode's host link (relay.h). */
#include "relay.h"

#include "board.h"

#define HOST_UART BOARD_UART0

static struct {
    edgerl_device_t device;
    uint32_t last_heartbeat_ms;
    bool awaiting; /* a relayed OBS waits for its ACTION */
    uint16_t awaited_seq;
} host;

static void host_write(void *ctx, const uint8_t *data, size_t len) {
    (void)ctx;
    board_uart_write(HOST_UART, data, len);
}

static void on_host_message(void *ctx, const edgerl_msg_t *msg) {
    (void)ctx;
    if (msg->type == EDGERL_ACTION && host.awaiting && msg->u.action.answers == host.awaited_seq) {
        host.awaiting = false;
    }
}

void relay_start(const edgerl_device_config_t *cfg) {
    edgerl_device_config_t session = *cfg;
    session.write = host_write;
    session.on_message = on_host_message;
    edgerl_device_init(&host.device, &session, board_millis());
    edgerl_device_send_hello(&host.device, true);
}

void relay_poll(void) {
    uint8_t chunk[16]; /* the PL011's receive FIFO depth */
    size_t n = 0;
    while (n < sizeof chunk && board_uart_readable(HOST_UART)) {
        chunk[n++] = board_uart_get(HOST_UART);
    }
    const uint32_t now = board_millis();
    edgerl_device_feed(&host.device, chunk, n, now);
    if ((uint32_t)(now - host.last_heartbeat_ms) >= host.device.cfg.heartbeat_ms) {
        host.last_heartbeat_ms = now;
        edgerl_device_send_heartbeat(&host.device, now * 1000u);
    }
}

edgerl_decision_t relay(const float *values, const edgerl_obs_t *obs, uint32_t deadline_ms) {
    const edgerl_obs_t relayed = {.t_us = board_millis() * 1000u,
                                  .reward = obs->reward,
                                  .terminated = obs->terminated,
                                  .truncated = obs->truncated,
                                  .count = obs->count,
                                  .values = values};
    host.awaited_seq = host.device.tx_seq;
    const bool sent = edgerl_device_send_obs(&host.device, &relayed); /* terminal ones too: the host learns */
    host.awaiting = sent && !(obs->terminated || obs->truncated);
    const uint32_t start = board_millis();
    while (host.awaiting && (uint32_t)(board_millis() - start) < deadline_ms) {
        relay_poll();
    }
    host.awaiting = false;
    return edgerl_device_decide(&host.device, board_millis());
}

/* The plant link (plant.h). */
#include "plant.h"

#include <string.h>

static struct {
    board_uart_t uart;
    edgerl_parser_t parser;
    uint16_t tx_seq;
    uint8_t tx[EDGERL_WIRE_SIZE(EDGERL_MAX_CONTROL_PAYLOAD)];
} plant;

void plant_attach(board_uart_t uart) {
    plant.uart = uart;
    plant.tx_seq = 0;
    edgerl_parser_init(&plant.parser, EDGERL_MAJOR);
}

void plant_poll(void (*on_message)(const edgerl_msg_t *msg)) {
    while (board_uart_readable(plant.uart)) {
        edgerl_msg_t msg;
        if (edgerl_parser_push(&plant.parser, board_uart_get(plant.uart), &msg)) {
            on_message(&msg);
        }
    }
}

static void send(edgerl_msg_t *msg) {
    msg->seq = plant.tx_seq++;
    board_uart_write(plant.uart, plant.tx, edgerl_encode(plant.tx, sizeof plant.tx, EDGERL_MAJOR, msg));
}

void plant_send_hello(const edgerl_device_config_t *cfg) {
    edgerl_msg_t msg;
    edgerl_device_hello(cfg, false, &msg);
    send(&msg);
}

void plant_send_error(uint16_t code, const char *text) {
    edgerl_msg_t msg = {.type = EDGERL_ERROR};
    msg.u.error.code = code;
    msg.u.error.text = text;
    msg.u.error.text_len = (uint8_t)strlen(text);
    send(&msg);
}

void plant_send_config_error(uint16_t code, const char *what, const edgerl_config_t *config) {
    char text[EDGERL_MAX_ERROR_TEXT + 1];
    size_t n = strlen(what);
    memcpy(text, what, n); /* callers' prefixes leave room for a key of EDGERL_MAX_CONFIG_KEY bytes */
    memcpy(text + n, config->key, config->key_len);
    text[n + config->key_len] = '\0';
    plant_send_error(code, text);
}

void plant_send_action(uint16_t answers, choice_t choice) {
    edgerl_msg_t msg = {.type = EDGERL_ACTION};
    msg.u.action.action = choice.action;
    msg.u.action.answers = answers;
    msg.u.action.valid_ms = 1000;
    msg.u.action.fallback = choice.fallback;
    send(&msg);
}

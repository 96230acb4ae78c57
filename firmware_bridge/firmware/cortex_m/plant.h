/* The plant link: the environment's end of a UART. It sends OBS and expects one ACTION per non-terminal
 * one; this side answers with ACTION, HELLO and ERROR frames on its own parser and sequence numbers. */
#ifndef PLANT_H
#define PLANT_H

#include <stdbool.h>
#include <stdint.h>

#include "../edgerl.h"
#include "board.h"

/* The action answering one OBS, and whether a fallback rather than a policy chose it. */
typedef struct {
    uint16_t action;
    bool fallback;
} choice_t;

/* Talk to the plant on `uart` from now on (a fresh parser, our numbering from 0). */
void plant_attach(board_uart_t uart);
/* Feed every byte the plant's UART holds; calls on_message for each frame it completes. */
void plant_poll(void (*on_message)(const edgerl_msg_t *msg));

/* This device's HELLO, as the library would describe `cfg` to a host. */
void plant_send_hello(const edgerl_device_config_t *cfg);
void plant_send_error(uint16_t code, const char *text);
/* "<what><key>" as an ERROR, for a CONFIG the device refuses. */
void plant_send_config_error(uint16_t code, const char *what, const edgerl_config_t *config);
void plant_send_action(uint16_t answers, choice_t choice);

#endif /* PLANT_H */

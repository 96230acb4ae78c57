/* Remote mode's host link: the library's device session (HELLO, heartbeats, deadman) on UART0, to a host
 * daemon that gets each plant OBS relayed and answers with its ACTION. */
#ifndef RELAY_H
#define RELAY_H

#include <stdint.h>

#include "../edgerl.h"

/* Starts a session described by `cfg` (its tx buffer the caller's: sized for the OBS) and says HELLO. */
void relay_start(const edgerl_device_config_t *cfg);
/* Bytes in, heartbeats out: call often while relaying. */
void relay_poll(void);
/* Relays one plant OBS (its `values` as floats); for a non-terminal one waits up to `deadline_ms` for the
 * host's ACTION answering it, then returns the session's decision (the host's action, or the safe action
 * and why). */
edgerl_decision_t relay(const float *values, const edgerl_obs_t *obs, uint32_t deadline_ms);

#endif /* RELAY_H */

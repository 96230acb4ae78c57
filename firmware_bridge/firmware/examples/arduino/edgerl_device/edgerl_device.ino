/* edgerl_device: the edge-rl device protocol over Serial, on any Arduino-style board.
 *
 * Copy edgerl.h and edgerl.c next to this file (or into a library folder). The sensor and the
 * actuator are stubs: replace read_sensor() and apply_action() with the real hardware. The board
 * sends one observation (the last N_OBS sensor readings) every PERIOD_MS and applies the host's
 * action only while it is valid; otherwise the safe action (actuator off).
 */
#include "edgerl.h"

enum { N_OBS = 4, N_ACTIONS = 3, SAFE_ACTION = 0, PERIOD_MS = 20, HEARTBEAT_MS = 100 };
static const uint8_t SENSOR_PIN = A0;
static const uint8_t ACTUATOR_PIN = 9;
static const int PWM_LEVEL[N_ACTIONS] = {0, 128, 255}; /* action 0 = off = safe */

static edgerl_device_t device;
static uint8_t tx_buf[EDGERL_DEVICE_TX_SIZE(EDGERL_OBS_F32_PAYLOAD(N_OBS))];
static float readings[N_OBS];
static uint32_t last_step_ms, last_heartbeat_ms;

static void serial_write(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    Serial.write(data, len);
}

static float read_sensor() { return analogRead(SENSOR_PIN) / 1023.0f; }

static void apply_action(uint16_t action) { analogWrite(ACTUATOR_PIN, PWM_LEVEL[action]); }

void setup()
{
    edgerl_device_config_t cfg;
    Serial.begin(115200);
    pinMode(ACTUATOR_PIN, OUTPUT);
    apply_action(SAFE_ACTION);

    edgerl_device_config_init(&cfg);
    cfg.device_id = "arduino-demo";
    cfg.obs_shape[0] = N_OBS;
    cfg.obs_ndim = 1;
    cfg.n_actions = N_ACTIONS;
    cfg.safe_action = SAFE_ACTION;
    cfg.capabilities = EDGERL_CAP_DEADMAN;
    cfg.heartbeat_ms = HEARTBEAT_MS;
    cfg.max_valid_ms = 200; /* no host setpoint outlives this, whatever the host asks */
    cfg.host_timeout_ms = 500;
    cfg.tx_buf = tx_buf;
    cfg.tx_cap = sizeof tx_buf;
    cfg.write = serial_write;
    if (edgerl_device_init(&device, &cfg, millis())) {
        edgerl_device_send_hello(&device, true);
    }
}

void loop()
{
    const uint32_t now = millis();
    while (Serial.available() > 0) {
        const uint8_t byte = (uint8_t)Serial.read();
        edgerl_device_feed(&device, &byte, 1, now);
    }
    if (now - last_step_ms >= PERIOD_MS) {
        const edgerl_decision_t decision = edgerl_device_decide(&device, now);
        edgerl_obs_t obs = {};
        last_step_ms = now;
        apply_action(decision.action);
        for (uint8_t i = N_OBS - 1; i > 0; i--) {
            readings[i] = readings[i - 1];
        }
        readings[0] = read_sensor();
        obs.t_us = micros();
        obs.count = N_OBS;
        obs.values = readings;
        edgerl_device_send_obs(&device, &obs);
    }
    if (now - last_heartbeat_ms >= HEARTBEAT_MS) {
        last_heartbeat_ms = now;
        edgerl_device_send_heartbeat(&device, micros());
    }
}

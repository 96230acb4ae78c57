/* A simulated board for edgerl_device.ino: Serial input is stdin (all of it, available at once),
 * Serial output is stdout, the clock advances 1 ms per loop() call, and every change of a PWM
 * output is reported on stderr as "ms=<time> pwm=<value>".
 *
 *   arduino_shim LOOPS < host_bytes > device_bytes 2> pwm_log
 */
#include "arduino_shim.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

HardwareSerial Serial;

static unsigned long now_ms;
static std::vector<uint8_t> input;
static size_t input_at;
static int pwm = -1;

unsigned long millis() { return now_ms; }
unsigned long micros() { return now_ms * 1000UL; }
int analogRead(uint8_t) { return static_cast<int>(now_ms % 1024); }
void pinMode(uint8_t, uint8_t) {}

void analogWrite(uint8_t, int value)
{
    if (value != pwm) {
        pwm = value;
        std::fprintf(stderr, "ms=%lu pwm=%d\n", now_ms, value);
    }
}

void HardwareSerial::begin(unsigned long)
{
    int c;
    while ((c = std::getchar()) != EOF) {
        input.push_back(static_cast<uint8_t>(c));
    }
}

int HardwareSerial::available() { return static_cast<int>(input.size() - input_at); }

int HardwareSerial::read() { return input_at < input.size() ? input[input_at++] : -1; }

size_t HardwareSerial::write(const uint8_t *data, size_t len) { return std::fwrite(data, 1, len, stdout); }

int main(int argc, char **argv)
{
    const unsigned long loops = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1000UL;
    setup();
    for (now_ms = 1; now_ms <= loops; now_ms++) {
        loop();
    }
    return 0;
}

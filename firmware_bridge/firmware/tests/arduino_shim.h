/* Just enough of the Arduino API to compile and run edgerl_device.ino on a PC (tests only). */
#ifndef ARDUINO_SHIM_H
#define ARDUINO_SHIM_H

#include <stddef.h>
#include <stdint.h>

#define A0 14
#define OUTPUT 1

unsigned long millis();
unsigned long micros();
int analogRead(uint8_t pin);
void analogWrite(uint8_t pin, int value);
void pinMode(uint8_t pin, uint8_t mode);

class HardwareSerial {
  public:
    void begin(unsigned long baud);
    int available();
    int read();
    size_t write(const uint8_t *data, size_t len);
};

extern HardwareSerial Serial;

void setup();
void loop();

#endif

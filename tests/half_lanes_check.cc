// Compares the CPU kernels' eight-lane float16 conversions (xla_kernels/cpu/half_lanes.h)
// with the scalar ones of dtypes.h over every half and every float bit pattern; built and
// run by tests/test_half_lanes.py. Exit status 0 when all agree bit for bit.
#include <cstdio>

#include "../xla_kernels/cpu/half_lanes.h"

using namespace jax_roi;
using jax_roi::cpu::Float8;

int main() {
  long bad = 0;
  for (uint32_t h0 = 0; h0 < 65536; h0 += 8) {
    uint16_t in[8];
    for (int i = 0; i < 8; ++i) in[i] = static_cast<uint16_t>(h0 + i);
    Float8 v;
    cpu::HalfLanesToFloat(in, &v);
    for (int i = 0; i < 8; ++i)
      if (FloatToBits(v[i]) != FloatToBits(HalfToFloat(in[i])) && bad++ < 10)
        std::printf("half %04x: lanes %08x, scalar %08x\n", in[i], FloatToBits(v[i]),
                    FloatToBits(HalfToFloat(in[i])));
  }
  for (uint64_t u0 = 0; u0 < (uint64_t{1} << 32); u0 += 8) {
    Float8 v;
    for (int i = 0; i < 8; ++i) v[i] = BitsToFloat(static_cast<uint32_t>(u0 + i));
    uint16_t out[8];
    cpu::FloatLanesToHalf(&v, out);
    for (int i = 0; i < 8; ++i)
      if (out[i] != FloatToHalf(v[i]) && bad++ < 10)
        std::printf("float %08x: lanes %04x, scalar %04x\n", static_cast<unsigned>(u0 + i),
                    out[i], FloatToHalf(v[i]));
  }
  std::printf("%ld mismatches\n", bad);
  return bad == 0 ? 0 : 1;
}

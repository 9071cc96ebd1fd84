/* ecal_lut.c: nearest-level quantization by binary search over a codebook's boundaries (see ecal_lut.h). */
#include "ecal_lut.h"

uint8_t ecal_lut_quantize(float x, const float *bounds, size_t n_bounds)
{
    size_t lo = 0, n = n_bounds; /* the code lies in [lo, lo + n] */
    while (n > 0) {
        size_t half = n / 2;
        int up = x >= bounds[lo + half]; /* 0 for NaN: NaN ends at code 0 */
        lo = up ? lo + half + 1 : lo;    /* selects, not branches: random data costs no mispredictions */
        n = up ? n - half - 1 : half;
    }
    return (uint8_t)lo;
}

void ecal_lut_quantize_array(const float *x, size_t n, const float *bounds, size_t n_bounds, uint8_t *codes)
{
    for (size_t i = 0; i < n; i++) {
        codes[i] = ecal_lut_quantize(x[i], bounds, n_bounds);
    }
}

void ecal_lut_dequantize_array(const uint8_t *codes, size_t n, const float *levels, float *values)
{
    for (size_t i = 0; i < n; i++) {
        values[i] = levels[codes[i]];
    }
}

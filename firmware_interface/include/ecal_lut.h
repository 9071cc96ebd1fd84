/* ecal_lut.h: quantize by codebook (a LUT of non-uniform levels) on the device.
 *
 * An edgecal table entry with a codebook has C ascending levels (C a power of two,
 * at most 256) and C - 1 decision boundaries, the midpoints of consecutive levels
 * rounded to float; the C header written by edgecal holds both
 * (<prefix>_lut_<NAME>, <prefix>_bounds_<NAME>). A value's code is the number of
 * boundaries at or below it (a value on a boundary goes to the upper level), found
 * by binary search in ceil(log2 C) comparisons; its dequantized value is
 * levels[code]. NaN gets code 0. C99, no heap, no libc.
 */
#ifndef ECAL_LUT_H
#define ECAL_LUT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Code of x among n_bounds ascending boundaries (0 .. n_bounds). */
uint8_t ecal_lut_quantize(float x, const float *bounds, size_t n_bounds);

/* codes[i] = ecal_lut_quantize(x[i], ...) for i < n. */
void ecal_lut_quantize_array(const float *x, size_t n, const float *bounds, size_t n_bounds, uint8_t *codes);

/* values[i] = levels[codes[i]] for i < n. */
void ecal_lut_dequantize_array(const uint8_t *codes, size_t n, const float *levels, float *values);

#ifdef __cplusplus
}
#endif

#endif /* ECAL_LUT_H */

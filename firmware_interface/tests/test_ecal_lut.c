/* test_ecal_lut.c: reads "C" then C float levels then C-1 float boundaries, then values (one per line,
 * "nan" allowed) until EOF; prints each value's code and dequantized value, and the ns per value of
 * ecal_lut_quantize_array over a large buffer when given the argument "bench". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ecal_lut.h"

static float levels[256], bounds[255];

static int bench(size_t c)
{
    enum { N = 1 << 20 };
    static float x[N];
    static uint8_t codes[N];
    unsigned s = 12345u;
    for (size_t i = 0; i < N; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = levels[0] + (levels[c - 1] - levels[0]) * (float)(s >> 8) / 16777216.0f;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < 20; r++) {
        ecal_lut_quantize_array(x, N, bounds, c - 1, codes);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / (20.0 * N);
    unsigned sum = 0;
    for (size_t i = 0; i < N; i++) {
        sum += codes[i];
    }
    printf("ns_per_value %.3f checksum %u\n", ns, sum);
    return 0;
}

int main(int argc, char **argv)
{
    size_t c;
    if (scanf("%zu", &c) != 1 || c < 2 || c > 256) {
        return 2;
    }
    for (size_t i = 0; i < c; i++) {
        if (scanf("%f", &levels[i]) != 1) return 2;
    }
    for (size_t i = 0; i + 1 < c; i++) {
        if (scanf("%f", &bounds[i]) != 1) return 2;
    }
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        return bench(c);
    }
    char word[64];
    while (scanf("%63s", word) == 1) {
        float x = strtof(word, NULL);
        uint8_t code = ecal_lut_quantize(x, bounds, c - 1);
        float v;
        ecal_lut_dequantize_array(&code, 1, levels, &v);
        printf("%u %.9e\n", (unsigned)code, (double)v);
    }
    return 0;
}

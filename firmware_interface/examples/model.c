/* model.c: see model.h. */
#include "model.h"

const ecl_tensor_desc model_tensors[MODEL_TENSORS] = {
    {"input", ECL_DT_FLOAT, 2, {1, 64, 0, 0, 0, 0, 0, 0}},
    {"conv1_relu", ECL_DT_FLOAT, 4, {1, 8, 8, 8, 0, 0, 0, 0}},
    {"fc1", ECL_DT_FLOAT, 2, {1, 128, 0, 0, 0, 0, 0, 0}},
    {"logits", ECL_DT_FLOAT, 2, {1, 10, 0, 0, 0, 0, 0, 0}},
    {"fc1_q", ECL_DT_INT8, 2, {1, 128, 0, 0, 0, 0, 0, 0}},
};

/* "ecal-example-v1" padded: a real firmware would embed a hash of its model file. */
const uint8_t model_hash[ECL_MODEL_HASH_SIZE] = {0x65, 0x63, 0x61, 0x6c, 0x2d, 0x65, 0x78, 0x61,
                                                  0x6d, 0x70, 0x6c, 0x65, 0x2d, 0x76, 0x31, 0x00};

static float w1[512][64], b1[512], w2[128][512], b2[128], w3[10][128];

static uint32_t next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* uniform in [-1, 1) with 24 bits */
static float uniform(uint32_t *s)
{
    return (float)(next(s) >> 8) * (1.0f / 8388608.0f) - 1.0f;
}

void model_init(void)
{
    uint32_t s = 0x9E3779B9u;
    int i, j;
    for (i = 0; i < 512; i++) {
        for (j = 0; j < 64; j++) {
            w1[i][j] = uniform(&s) * 0.25f;
        }
        b1[i] = uniform(&s) * 0.1f;
    }
    for (i = 0; i < 128; i++) {
        for (j = 0; j < 512; j++) {
            w2[i][j] = uniform(&s) * 0.08f;
        }
        b2[i] = uniform(&s) * 0.05f;
    }
    for (i = 0; i < 10; i++) {
        for (j = 0; j < 128; j++) {
            w3[i][j] = uniform(&s) * 0.2f;
        }
    }
}

void model_run(uint32_t input_index, model_buffers *b)
{
    uint32_t s = input_index * 2654435761u + 12345u;
    int i, j;
    if (s == 0) {
        s = 1;
    }
    for (i = 0; i < 64; i++) { /* roughly Gaussian: a sum of four uniforms; every 7th input has an outlier */
        b->input[i] = (uniform(&s) + uniform(&s) + uniform(&s) + uniform(&s)) * 0.8f;
    }
    if (input_index % 7 == 3) {
        b->input[input_index % 64] *= 6.0f;
    }
    for (i = 0; i < 512; i++) {
        float acc = b1[i];
        for (j = 0; j < 64; j++) {
            acc += w1[i][j] * b->input[j];
        }
        b->conv1_relu[i] = acc > 0.0f ? acc : 0.0f;
    }
    for (i = 0; i < 128; i++) {
        float acc = b2[i], q;
        for (j = 0; j < 512; j++) {
            acc += w2[i][j] * b->conv1_relu[j];
        }
        b->fc1[i] = acc;
        q = acc * 16.0f;
        q = q > 127.0f ? 127.0f : (q < -128.0f ? -128.0f : q);
        b->fc1_q[i] = (int8_t)(q >= 0.0f ? q + 0.5f : q - 0.5f);
    }
    for (i = 0; i < 10; i++) {
        float acc = 0.0f;
        for (j = 0; j < 128; j++) {
            acc += w3[i][j] * b->fc1[j];
        }
        b->logits[i] = acc;
    }
}

const void *model_tensor(const model_buffers *b, unsigned id)
{
    switch (id) {
    case 0: return b->input;
    case 1: return b->conv1_relu;
    case 2: return b->fc1;
    case 3: return b->logits;
    default: return b->fc1_q;
    }
}

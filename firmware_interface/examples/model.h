/* model.h: the example device's small deterministic network (float32, no libm).
 *
 * input[64] -> conv1_relu[8x8x8] = relu(W1 input + b1) -> fc1[128] = W2 conv1_relu + b2
 *           -> logits[10] = W3 fc1, and fc1_q[128] = int8(clamp(round(16 fc1))).
 * Weights come from a fixed xorshift seed; input k is a function of k alone, so any sample
 * can be recomputed (the device's --dump mode) to check what a host received. */
#ifndef ECAL_EXAMPLE_MODEL_H
#define ECAL_EXAMPLE_MODEL_H

#include <stdint.h>

#include "ecal_link.h"

#define MODEL_TENSORS 5

typedef struct {
    float input[64];
    float conv1_relu[512];
    float fc1[128];
    float logits[10];
    int8_t fc1_q[128];
} model_buffers;

extern const ecl_tensor_desc model_tensors[MODEL_TENSORS];
extern const uint8_t model_hash[ECL_MODEL_HASH_SIZE];

void model_init(void);
void model_run(uint32_t input_index, model_buffers *b);
const void *model_tensor(const model_buffers *b, unsigned id);

#endif

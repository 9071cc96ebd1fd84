/* state_sizes.c: one array per library state struct, each exactly sizeof the struct, so that
 * `nm -S` on the cross-compiled object reports the struct sizes of that target. */
#include "ecal_link.h"
#include "ecal_table.h"

unsigned char sizeof_ecl_link[sizeof(ecl_link)];
unsigned char sizeof_ect_table[sizeof(ect_table)];

/* State set at initialisation and changed by calls: every call starts from
 * the initialised value, because the VM is reset after each call. */
#include <stdint.h>

static int32_t counter;

__attribute__((constructor)) static void start_at_forty(void) { counter = 40; }

__attribute__((export_name("increment"))) int32_t increment(void) { return ++counter; }

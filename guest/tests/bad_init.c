/* bad_init: a guest whose initialisation never reaches READY: it loops
 * forever in sandpool_main(). The host must refuse it after its boot timeout
 * instead of hanging. */
#include <sandpool/guest.h>

static volatile uint64_t sink;

void sandpool_main(void) {
  for (;;) sink = sink + 1;
}

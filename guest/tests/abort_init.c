/* abort_init: a guest that gives up during initialisation; the host must
 * refuse it with the guest's own message. */
#include <sandpool/guest.h>

void sandpool_main(void) { sandpool_abort("missing configuration"); }

/* ioa_version(): the IOA_VERSION of the header the library was built with. */
#include "ioalloc.h"
#include "log.h"

IOA_EXPORT int ioa_version(void)
{
	return IOA_VERSION;
}

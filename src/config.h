/* Configuration: the IOALLOC_* variables, parsed without allocating. */
#ifndef IOA_CONFIG_H
#define IOA_CONFIG_H

#include "ioalloc.h"

/* Checks the settings that do not depend on the machine; 0 or -EINVAL. */
int ioa__config_validate(const struct ioa_config *cfg);

const char *ioa__backend_name(enum ioa_backend backend);
const char *ioa__page_size_name(enum ioa_page_size page_size);

#endif
